"""Read what an experiment wrote into plain structures the report draws from."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunescope.borrow.pipeline import BORROW_FILE
from tunescope.display import display_name
from tunescope.errors import UserError
from tunescope.experiment.pipeline import MANIFEST
from tunescope.judge import pipeline as judge_pipeline
from tunescope.paths import resolved_path
from tunescope.probe.pipeline import PROBE_FILE
from tunescope.rundir import DONE_FILE, saved_config
from tunescope.shift import output as shift_output


def _json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _stage_output(
    root: Path, stages: dict[str, Any], key: str, summary_file: str
) -> tuple[Path | None, dict[str, Any] | None]:
    """The output directory of the manifest's stage ``key`` and the summary in it; Nones when it has not run.

    An analysis stage writes into the subdirectory named for its kind (``lora/shift``: ``<stage dir>/shift``).
    """
    if not (stage := stages.get(key)):
        return None, None
    directory = root / stage["dir"] / key.rsplit("/", 1)[-1]
    return directory, _json(directory / summary_file)


@dataclass
class MethodRun:
    """One tuned model of a cell (one arm of the grid) and everything measured on it."""

    method: str
    """The arm's name: lora, full, nft, cpt+lora, lora-r2, ... (the key of its stages in the manifest)."""
    arm: dict[str, Any] = field(default_factory=dict)
    """The arm as the manifest describes it: name, label, kind, method (lora or full), settings, parent."""
    train_dir: Path | None = None
    """The training run directory."""
    metrics: list[dict[str, Any]] = field(default_factory=list)
    """Rows of metrics.jsonl."""
    run: dict[str, Any] | None = None
    """run.json of the training run."""
    config: dict[str, Any] | None = None
    """Resolved training settings (config.yaml)."""
    shift_dir: Path | None = None
    """The shift output directory."""
    shift: dict[str, Any] | None = None
    """Its summary.json."""
    borrow: dict[str, Any] | None = None
    """borrow.json of the borrowing analysis."""
    borrow_dir: Path | None = None
    """The borrowing output directory."""
    responses_path: Path | None = None
    """Its answers to the evaluation prompts (responses.jsonl of its generate stage)."""


@dataclass
class Cell:
    """One (model, dataset, subset size) of the grid."""

    model: str
    """Base model."""
    dataset: str
    """Dataset name."""
    subset_size: int | None
    """Training examples (None: all)."""
    runs: dict[str, MethodRun] = field(default_factory=dict)
    """By method."""
    judge_dir: Path | None = None
    """The judge output directory."""
    judge: dict[str, Any] | None = None
    """judge_summary.json."""
    probe: dict[str, Any] | None = None
    """probe.json."""
    probe_dir: Path | None = None
    """The probe output directory (probe.json's paths are relative to it)."""
    base_responses: Path | None = None
    """The base model's answers to the evaluation prompts."""

    @property
    def name(self) -> str:
        """How the report names the cell."""
        return f"{display_name(self.model)} · {self.dataset} · n={self.subset_size or 'all'}"


def collect(root: Path) -> tuple[dict[str, Any], list[Cell]]:
    """The manifest and its cells, with every finished stage's outputs loaded.

    Raises:
        UserError: when ``root`` is not an experiment directory.
    """
    manifest = _json(root / MANIFEST)
    if manifest is None:
        raise UserError(f"{root}: no {MANIFEST}; run `tunescope experiment` or `tunescope demo` into it first")
    cells = []
    for entry in manifest["cells"]:
        cell = Cell(entry["model"], entry["dataset"], entry["subset_size"])
        stages = entry["stages"]
        for arm in manifest_arms(manifest):
            method = arm["name"]
            run = MethodRun(method, arm)
            if trained := stages.get(f"{method}/train"):
                run.train_dir = root / trained["dir"]
                run.metrics = _jsonl(run.train_dir / "metrics.jsonl")
                run.run = _json(run.train_dir / DONE_FILE)
                run.config = saved_config(run.train_dir)
            if generated := stages.get(f"{method}/generate"):
                run.responses_path = root / generated["dir"] / "responses.jsonl"
            run.shift_dir, run.shift = _stage_output(root, stages, f"{method}/shift", shift_output.SUMMARY_FILE)
            run.borrow_dir, run.borrow = _stage_output(root, stages, f"{method}/borrow", BORROW_FILE)
            cell.runs[method] = run
        if generated := stages.get("base_generate"):
            cell.base_responses = root / generated["dir"] / "responses.jsonl"
        cell.judge_dir, cell.judge = _stage_output(root, stages, "judge", judge_pipeline.SUMMARY_FILE)
        cell.probe_dir, cell.probe = _stage_output(root, stages, "probe", PROBE_FILE)
        cells.append(cell)
    return manifest, cells


def manifest_arms(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """The experiment's arms as the manifest describes them (a manifest from before arms: its methods)."""
    if "arms" in manifest:
        return [{**arm, "label": arm.get("label") or arm["name"]} for arm in manifest["arms"]]
    return [
        {"name": method, "label": method, "kind": method, "method": method, "settings": {}, "parent": None}
        for method in manifest["config"]["methods"]
    ]


def arm_label(run: MethodRun) -> str:
    """How tables and figures name an arm: ``lora``, ``nft``, ``lora r=2``, ``lora lr=5e-5``."""
    return str(run.arm.get("label") or run.method)


def learning_rate(run: MethodRun) -> float | None:
    """The learning rate the arm trained with (its method's own rate, else the shared one); None before training."""
    if not run.config:
        return None
    method = run.config.get("method", run.arm.get("method"))
    rate = run.config.get(f"{method}_learning_rate") or run.config.get("learning_rate")
    return float(rate) if rate else None


def probe_results(cell: Cell) -> dict[str, dict[str, Any]]:
    """The probe's entries by arm name ('base' for the base model); probe.json is keyed by model path.

    Its paths are relative to the probe directory; one that is not there (written from another working
    directory before paths were recorded relative) is looked up from the working directory.
    """
    if not cell.probe:
        return {}
    models = cell.probe["models"]
    results = {"base": models[cell.probe["base"]]} if cell.probe["base"] in models else {}
    holder = cell.probe_dir or Path()
    for method, run in cell.runs.items():
        if run.train_dir is None:
            continue
        target = run.train_dir.resolve()
        for spec, entry in models.items():
            if spec != cell.probe["base"] and Path(resolved_path(spec, holder)).resolve() == target:
                results[method] = entry
    return results
