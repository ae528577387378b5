"""Experiments: a grid of models x methods x datasets x subset sizes, every stage resumable.

Each cell of the grid runs train -> generate -> shift -> borrow -> judge -> probes; each stage's
outputs live in a directory named by a hash of its settings and inputs, so a rerun skips what is
finished. The manifest ``experiment.json`` lists every stage, and `tunescope report` draws from it.

From Python::

    from tunescope.experiment import demo_config, run_experiment

    manifest = run_experiment(demo_config(quick=True), "runs/demo-quick")
"""

from tunescope.experiment.config import ExperimentConfig
from tunescope.experiment.demo import demo_config
from tunescope.experiment.pipeline import MANIFEST, run_experiment

__all__ = ["MANIFEST", "ExperimentConfig", "demo_config", "run_experiment"]
