"""`tunescope demo`: the whole pipeline on an embedded model and data, on a laptop CPU.

By default LoRA and full fine-tuning of the pretrained-only Gemma-3-270M base at two nested
training-set sizes 8x apart, on chit-chat answers mixed with invented facts (so the knowledge probe
has something to find), then generation, token shift, borrowing, a stand-in judge (SmolLM2, labelled
as such, unless a judge endpoint is given) and the probes, and finally the report: about 15 minutes
on 2 cores, ``quick`` about 4. ``model="smollm2"`` runs the earlier SmolLM2-135M-Instruct grid.

The grids are written once, in the package file ``grids/demo.yaml`` beside this module: settings
common to every model, each model's grid, and the settings its ``quick`` variant changes.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import yaml

from tunescope.experiment.config import ExperimentConfig

DEMO_GRID = "grids/demo.yaml"
"""The demo's grid, inside the ``tunescope.experiment`` package."""


def merged(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``overrides`` applied: mappings merged key by key (keeping ``base``'s order), the rest replaced."""
    out = dict(base)
    for key, value in overrides.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


DEMO_MODELS = ("gemma3-270m", "smollm2")
"""Models with a demo grid; the first, the pretrained-only Gemma-3-270M base as the paper tunes, is the
default (BENCHMARKS.md times both of its grids on 2 CPU cores)."""


def demo_settings(quick: bool = False, model: str = DEMO_MODELS[0]) -> dict[str, Any]:
    """The demo's grid for ``model`` as plain settings (what an experiment YAML file holds)."""
    text = resources.files("tunescope.experiment").joinpath(DEMO_GRID).read_text(encoding="utf-8")
    grids = yaml.safe_load(text)
    own = grids["models"][model]
    settings = merged(grids["common"], own["grid"])
    return merged(settings, own["quick"]) if quick else settings


def demo_config(
    quick: bool = False, judge: dict[str, Any] | None = None, model: str = DEMO_MODELS[0]
) -> ExperimentConfig:
    """The demo's grid for ``model``; ``judge`` overrides the stand-in judge (backend, judge_base_url, ...)."""
    settings = demo_settings(quick, model)
    return ExperimentConfig.model_validate({**settings, "judge": {**settings["judge"], **(judge or {})}})
