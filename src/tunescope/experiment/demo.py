"""`tunescope demo`: the whole pipeline on the embedded default model and data, on a laptop CPU.

LoRA and full fine-tuning of SmolLM2-135M-Instruct on chit-chat answers mixed with invented
facts (so the knowledge probe has something to find), then generation, token shift, borrowing,
a stand-in judge (the same small model, labelled as such, unless a judge endpoint is given) and
the probes, and finally the report. About 10 minutes on 2 cores; ``quick`` about 3.

The grid is written once, in the package file ``grids/demo.yaml`` beside this module: the full
grid, and the settings ``quick`` changes.
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


def demo_settings(quick: bool = False) -> dict[str, Any]:
    """The demo's grid as plain settings (what an experiment YAML file holds)."""
    text = resources.files("tunescope.experiment").joinpath(DEMO_GRID).read_text(encoding="utf-8")
    grids = yaml.safe_load(text)
    return merged(grids["grid"], grids["quick"]) if quick else grids["grid"]


def demo_config(quick: bool = False, judge: dict[str, Any] | None = None) -> ExperimentConfig:
    """The demo's grid; ``judge`` overrides the stand-in judge (e.g. backend, judge_base_url, judge_model)."""
    settings = demo_settings(quick)
    return ExperimentConfig.model_validate({**settings, "judge": {**settings["judge"], **(judge or {})}})
