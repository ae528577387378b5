"""Load what tunescope wrote into pandas DataFrames and plain numbers, for a notebook.

``load(path)`` takes an experiment directory (``tunescope experiment`` / ``demo`` output) or one
stage's output directory (a training run, a shift, judge, probe or borrow output, a responses
file), and returns an :class:`Experiment` or a :class:`StageOutput`::

    from tunescope.notebook import load

    experiment = load("runs/demo")
    experiment.findings          # one row per headline finding: verdict, effect, 95% interval
    experiment.shift             # per cell and method: mean KL, class shares, with intervals
    experiment.tokens("lora")    # every scored token of the LoRA answers (tokens.parquet)

The numbers are those of ``report.json`` (the same code draws them), read from the directory
wherever it is now.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from tunescope.borrow.pipeline import BORROW_FILE
from tunescope.errors import UserError
from tunescope.experiment.pipeline import MANIFEST
from tunescope.judge.pipeline import JUDGEMENTS_FILE
from tunescope.judge.pipeline import SUMMARY_FILE as JUDGE_SUMMARY_FILE
from tunescope.probe.pipeline import PROBE_FILE
from tunescope.report.collect import Cell
from tunescope.report.findings import Settings
from tunescope.report.pipeline import report_data
from tunescope.rundir import DONE_FILE, saved_config
from tunescope.shift.output import SUMMARY_FILE as SHIFT_SUMMARY_FILE
from tunescope.shift.output import TOKENS_FILE
from tunescope.stats import RESAMPLES

__all__ = ["Experiment", "StageOutput", "load"]


def _value(entry: dict[str, Any] | None) -> tuple[float | None, float | None, float | None]:
    """A ``{value, ci95}`` entry as (value, low, high)."""
    if not entry:
        return None, None, None
    low, high = entry.get("ci95") or (None, None)
    return entry.get("value"), low, high


def _with_intervals(row: dict[str, Any], entries: dict[str, dict[str, Any] | None]) -> dict[str, Any]:
    """``row`` plus, for each named ``{value, ci95}`` entry, the columns ``name``, ``name_ci_low``, ``name_ci_high``."""
    for name, entry in entries.items():
        row[name], row[f"{name}_ci_low"], row[f"{name}_ci_high"] = _value(entry)
    return row


def _jsonl(path: Path) -> pd.DataFrame:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return pd.DataFrame(rows)


def _json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


@dataclass
class Experiment:
    """An experiment's numbers, as DataFrames (one row per cell and model) and the report's data."""

    directory: Path
    """The experiment directory."""
    report: dict[str, Any]
    """report.json's contents, computed now."""
    cells: list[Cell] = field(repr=False)
    """What the report read, per cell (run directories, summaries)."""

    @property
    def complete(self) -> bool:
        """Whether every stage finished."""
        return bool(self.report["complete"])

    @property
    def stages(self) -> pd.DataFrame:
        """One row per stage of every cell (``step``: lora/train, ...): its directory, seconds, disk bytes, summary."""
        manifest = json.loads((self.directory / MANIFEST).read_text(encoding="utf-8"))
        rows = []
        for index, cell in enumerate(manifest["cells"]):
            for name, summary in cell["stages"].items():
                rows.append({"cell": index, "step": name, **(summary or {"label": None})})
        return pd.DataFrame(rows)

    @property
    def findings(self) -> pd.DataFrame:
        """One row per headline finding: key, claim, verdict, effect with its 95% interval, reason."""
        rows = []
        for finding in self.report["findings"]:
            value, low, high = _value(finding.get("effect"))
            rows.append(
                {
                    "key": finding["key"], "claim": finding["claim"], "verdict": finding["verdict"],
                    "effect": value, "ci_low": low, "ci_high": high,
                    "unit": (finding.get("effect") or {}).get("unit"), "reason": finding.get("reason"),
                }
            )  # fmt: skip
        return pd.DataFrame(rows)

    def _per_cell(self, section: str, rows_of: Any) -> pd.DataFrame:
        rows = []
        for index, cell in enumerate(self.report["cells"]):
            if cell.get(section):
                rows += [{"cell": index, "cell_name": cell["name"], **row} for row in rows_of(cell[section])]
        return pd.DataFrame(rows)

    @property
    def training(self) -> pd.DataFrame:
        """Per cell and method: learning rate, steps, first and final loss, runtime."""
        return self._per_cell("training", lambda rows: rows)

    @property
    def shift(self) -> pd.DataFrame:
        """Per cell and method: responses, tokens, mean KL, base probability and rank, class shares (95% CIs)."""

        def rows(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
            return [
                _with_intervals(
                    {key: entry[key] for key in ("method", "mode", "n_responses", "n_tokens")},
                    {name: entry[name] for name in ("kl", "base_prob", "base_rank")} | entry["classes"],
                )
                for entry in entries
            ]

        return self._per_cell("shift", rows)

    @property
    def judge(self) -> pd.DataFrame:
        """Per cell, model and aspect (and ``overall``): mean judge score (1-5), its 95% interval and n."""

        def rows(section: dict[str, Any]) -> list[dict[str, Any]]:
            out = []
            for model, entry in section["models"].items():
                for aspect, score in {**entry["aspects"], "overall": entry["overall"]}.items():
                    low, high = score.get("ci95") or (None, None)
                    out.append(
                        {"model": model, "aspect": aspect, "mean": score["mean"], "ci_low": low, "ci_high": high,
                         "n": score["n"]}
                    )  # fmt: skip
            return out

        return self._per_cell("judge", rows)

    @property
    def probe(self) -> pd.DataFrame:
        """Per cell and model: accuracy on each question set, held-out loss and its change from the base."""

        def rows(section: dict[str, Any]) -> list[dict[str, Any]]:
            measured = ("facts", "control", "training_wording", "general", "heldout_loss_change", "retained")
            return [
                _with_intervals(
                    {"model": model, "heldout_loss": entry["heldout_loss"]},
                    {name: entry.get(name) for name in measured},
                )
                for model, entry in section["models"].items()
            ]

        return self._per_cell("probe", rows)

    @property
    def answers(self) -> pd.DataFrame:
        """Per cell, prompt and model: the answer, its length, truncation and repetition flags, KL, shifted share."""

        def rows(section: dict[str, Any]) -> list[dict[str, Any]]:
            return [
                {"prompt_id": prompt["id"], "prompt": prompt["prompt"], "model": model, **answer}
                for prompt in section["prompts"]
                for model, answer in prompt["answers"].items()
            ]

        return self._per_cell("answers", rows)

    def judgements(self, cell: int = 0) -> pd.DataFrame:
        """Every judgement record of a cell's judge run (judgements.jsonl), one row per request."""
        directory = self.cells[cell].judge_dir
        if directory is None or not (directory / JUDGEMENTS_FILE).is_file():
            raise UserError(f"{self.directory}: cell {cell} has no judge run")
        return _jsonl(directory / JUDGEMENTS_FILE)

    def tokens(self, method: str, cell: int = 0) -> pd.DataFrame:
        """Every scored token of ``method``'s answers in a cell (tokens.parquet: KL, ranks, class, ...)."""
        run = self.cells[cell].runs.get(method)
        if run is None or run.shift_dir is None or not (run.shift_dir / TOKENS_FILE).is_file():
            raise UserError(f"{self.directory}: cell {cell} has no shift run for {method!r}")
        return pd.read_parquet(run.shift_dir / TOKENS_FILE)


@dataclass
class StageOutput:
    """One stage's output directory (or responses file), read."""

    kind: str
    """train, generate, shift, judge, probe or borrow."""
    path: Path
    """Where it was read."""
    summary: dict[str, Any]
    """The stage's own summary file (run.json, summary.json, judge_summary.json, probe.json, borrow.json);
    for a responses file, counts."""
    frames: dict[str, pd.DataFrame]
    """Its tables: train ``metrics``; generate ``responses``; shift ``tokens``; judge ``judgements``;
    probe ``models`` (per model and question set: accuracy and interval)."""
    settings: dict[str, Any] | None = None
    """The settings it ran with (config.yaml), paths usable from here."""


def _probe_models(probe: dict[str, Any]) -> pd.DataFrame:
    rows = []
    for spec, entry in probe["models"].items():
        for name, result in entry.get("sets", {}).items():
            accuracy = result["accuracy"]
            low, high = accuracy.get("ci95") or (None, None)
            rows.append(
                {"model": spec, "method": entry.get("method"), "set": name, "accuracy": accuracy.get("value"),
                 "ci_low": low, "ci_high": high, "n": len(result["correct"])}
            )  # fmt: skip
    return pd.DataFrame(rows)


def _stage(path: Path) -> StageOutput | None:
    """The stage output in ``path`` itself, or None."""
    if path.is_file() and path.suffix == ".jsonl":
        responses = _jsonl(path)
        counts = {"responses": len(responses)}
        if "finish_reason" in responses:
            counts["truncated"] = int((responses["finish_reason"] == "length").sum())
        return StageOutput("generate", path, counts, {"responses": responses})
    if not path.is_dir():
        return None
    settings = saved_config(path)
    if (path / "metrics.jsonl").is_file() and (path / DONE_FILE).is_file():
        summary = _json(path / DONE_FILE) or {}
        return StageOutput("train", path, summary, {"metrics": _jsonl(path / "metrics.jsonl")}, settings)
    if (path / TOKENS_FILE).is_file() and (path / SHIFT_SUMMARY_FILE).is_file():
        tokens = pd.read_parquet(path / TOKENS_FILE)
        return StageOutput("shift", path, _json(path / SHIFT_SUMMARY_FILE) or {}, {"tokens": tokens}, settings)
    if (path / JUDGE_SUMMARY_FILE).is_file():
        judgements = _jsonl(path / JUDGEMENTS_FILE) if (path / JUDGEMENTS_FILE).is_file() else pd.DataFrame()
        summary = _json(path / JUDGE_SUMMARY_FILE) or {}
        return StageOutput("judge", path, summary, {"judgements": judgements}, settings)
    if (path / PROBE_FILE).is_file():
        probe = _json(path / PROBE_FILE) or {}
        return StageOutput("probe", path, probe, {"models": _probe_models(probe)}, settings)
    if (path / BORROW_FILE).is_file():
        return StageOutput("borrow", path, _json(path / BORROW_FILE) or {}, {}, settings)
    if (path / "responses.jsonl").is_file():
        return _stage(path / "responses.jsonl")
    return None


def load(path: str | Path, *, bootstrap_samples: int = RESAMPLES, seed: int = 0) -> Experiment | StageOutput:
    """Load an experiment directory, or one stage's output, from wherever it is now.

    Args:
        path: An experiment directory, a stage directory inside one (``stages/shift-…``), or the
            output of a single command (a training run, a shift, judge, probe or borrow directory,
            a responses file).
        bootstrap_samples: Resamples behind the findings' intervals (as ``tunescope report``).
        seed: Seed of that bootstrap.

    Raises:
        UserError: when ``path`` holds nothing tunescope wrote.
    """
    path = Path(path).expanduser()
    if (path / MANIFEST).is_file():
        data, cells = report_data(path, path, Settings(bootstrap_samples, seed))
        return Experiment(path, data, cells)
    found = _stage(path)
    if found is None and path.is_dir():  # an experiment's stage directory holds its output one level down
        inner = [stage for child in sorted(path.iterdir()) if (stage := _stage(child)) is not None]
        found = inner[0] if len(inner) == 1 else None
    if found is None:
        raise UserError(f"{path}: holds no tunescope experiment or stage output")
    return found
