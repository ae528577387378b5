"""Knowledge and forgetting probes: what tuning taught a model, and what it made it forget.

`tunescope probe` (:func:`run_probes`) asks the base and each tuned model paraphrased
multiple-choice questions about the fictional facts a run was trained on, and measures forgetting
as held-out loss and general-knowledge accuracy. `tunescope preflight` (:func:`preflight`) checks
before tuning whether the base model already knows the data.

From Python::

    from tunescope.probe import ProbeConfig, run_probes

    report = run_probes(ProbeConfig(base="smollm2", tuned=["runs/facts-lora"], out="runs/probe"))
    print(report["comparisons"])
"""

from tunescope.probe.forgetting import ForgettingScore, compare_forgetting, score_forgetting
from tunescope.probe.knowledge import accuracy, correct_choices, multiple_choice_predictions
from tunescope.probe.pipeline import PROBE_FILE, ProbeConfig, run_probes
from tunescope.probe.preflight import PreflightConfig, PreflightResult, preflight

__all__ = [
    "PROBE_FILE",
    "ForgettingScore",
    "PreflightConfig",
    "PreflightResult",
    "accuracy",
    "correct_choices",
    "multiple_choice_predictions",
    "ProbeConfig",
    "compare_forgetting",
    "preflight",
    "run_probes",
    "score_forgetting",
]
