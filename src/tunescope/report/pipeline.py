"""`tunescope report`: report.json (the numbers, as data) and one self-contained HTML page drawn from it."""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import jinja2
from pydantic import Field

from tunescope.borrow.report import render_section
from tunescope.config import Config
from tunescope.env import git_commit, package_versions
from tunescope.files import write_json, write_text
from tunescope.locks import output_lock
from tunescope.report import figures
from tunescope.report.collect import Cell, collect, probe_results
from tunescope.report.findings import KNOWLEDGE_MARGIN, SIZE_MARGIN, UNITS, Finding, Settings, all_findings
from tunescope.shift.output import VIEWER_FILE
from tunescope.stats import ALPHA, POWER, RESAMPLES

SCHEMA_VERSION = 2
"""Version of report.json's layout (1: formatted strings; 2: numbers, intervals as lists, rules and verdicts)."""
BASE_IS_INSTRUCT_NOTE = (
    "The embedded default model, SmolLM2-135M-Instruct, is already instruction-tuned; the paper tunes pre-trained "
    "bases. Expect smaller shifts than the paper's, and read the verdicts as this model's behaviour."
)


class ReportConfig(Config):
    """Report settings."""

    out: str | None = None
    """Directory for report.html and report.json (default: the experiment directory)."""
    bootstrap_samples: int = Field(default=RESAMPLES, ge=0)
    """Bootstrap resamples of items behind the findings' intervals (0: off, and every verdict resting on one is
    inconclusive)."""
    seed: int = 0
    """Seed of the bootstrap."""


@dataclass(frozen=True)
class Report:
    """Where the report went."""

    html: Path
    """The page."""
    json: Path
    """The numbers behind it."""
    findings: list[dict[str, Any]]
    """The headline findings, as in report.json."""


def _data_uri(png: bytes | None) -> str | None:
    return "data:image/png;base64," + base64.b64encode(png).decode() if png else None


def _metric(entry: dict[str, Any] | None, unit: str) -> dict[str, Any] | None:
    """A summary's ``{value, ci95}`` with its unit; an interval with a missing bound becomes null."""
    if not entry:
        return None
    interval = entry.get("ci95")
    return {
        "value": entry.get("value"),
        "ci95": list(interval) if interval and None not in interval else None,
        "unit": unit,
    }


def _training(cell: Cell) -> list[dict[str, Any]]:
    rows = []
    for method, run in cell.runs.items():
        if not run.run:
            continue
        lr = run.config and (run.config.get(f"{method}_learning_rate") or run.config.get("learning_rate"))
        rows.append(
            {
                "method": method,
                "learning_rate": lr or None,
                "steps": run.run.get("steps"),
                "first_loss": run.run.get("first_loss"),
                "final_loss": run.run.get("final_loss"),
                "runtime_s": run.run.get("runtime_s"),
            }
        )
    return rows


def _shift(cell: Cell, out_dir: Path) -> list[dict[str, Any]]:
    rows = []
    for method, run in cell.runs.items():
        if not run.shift:
            continue
        summary, micro = run.shift, run.shift["micro"]
        viewer = run.shift_dir / VIEWER_FILE if run.shift_dir else None
        rows.append(
            {
                "method": method,
                "mode": summary.get("mode"),
                "n_responses": summary["n_examples"],
                "n_tokens": summary["n_tokens"],
                "kl": _metric(micro.get("kl_mean"), "nats per token"),
                "base_prob": _metric(micro.get("base_prob_mean"), "probability"),
                "base_rank": _metric(micro.get("base_rank_mean"), "rank (1-indexed, uncapped)"),
                "base_rank_median": summary.get("base_rank_median"),
                "tr": _metric(micro.get("tr_mean"), f"rank (0-indexed, capped at {summary.get('tr_cap', 50)})"),
                "tr_median": summary.get("tr_median"),
                "classes": {k: _metric(micro.get(k), "proportion") for k in ("unshifted", "marginal", "shifted")},
                "bootstrap": summary.get("bootstrap"),
                "viewer": os.path.relpath(viewer, out_dir) if viewer and viewer.is_file() else None,
            }
        )
    return rows


def _judge(cell: Cell) -> dict[str, Any] | None:
    summary = cell.judge
    if not summary or summary.get("mode") != "score":
        return None
    aspects = list(summary.get("aspects", []))

    def score(entry: dict[str, Any] | None) -> dict[str, Any]:
        entry = entry or {}
        return {key: entry.get(key) for key in ("mean", "ci95", "n", "dropped")}

    return {
        "aspects": aspects,
        "unit": "judge score (1-5)",
        "stand_in": bool(summary.get("stand_in_judge")),
        "complete": summary.get("complete", True) is not False,
        "note": summary.get("note"),
        "models": {
            model: {
                "aspects": {aspect: score(entry["aspects"].get(aspect)) for aspect in aspects},
                "overall": score(entry.get("overall")),
                "aspect_failures": entry.get("failures", {}).get("aspect_failures", 0),
            }
            for model, entry in summary.get("models", {}).items()
        },
    }


def _probe(cell: Cell) -> dict[str, Any] | None:
    results = probe_results(cell)
    if not results or int(cell.probe.get("schema_version", 1)) < 2:
        return None
    models = {}
    for method, entry in results.items():
        forgetting = entry.get("forgetting", {})
        models[method] = {
            **{name: entry["sets"][name]["accuracy"] for name in ("facts", "control", "training_wording", "general")},
            "heldout_loss": entry["heldout"]["loss"],
            "heldout_loss_change": forgetting.get("loss_change"),
            "retained": forgetting.get("retained_share"),
        }
    return {
        "chance": cell.probe.get("chance"),
        "facts_taught": cell.probe.get("facts_taught"),
        "n_questions": len(cell.probe["sets"]["facts"]["ids"]),
        "n_passages": cell.probe.get("n_heldout_passages"),
        "note": cell.probe.get("note"),
        "models": models,
    }


def _cell(cell: Cell, findings: list[Finding], out_dir: Path) -> dict[str, Any]:
    return {
        "name": cell.name,
        "model": cell.model,
        "dataset": cell.dataset,
        "subset_size": cell.subset_size,
        "findings": [finding.to_json() for finding in findings],
        "training": _training(cell),
        "shift": _shift(cell, out_dir),
        "judge": _judge(cell),
        "probe": _probe(cell),
    }


def _notes(cells: list[Cell], settings: Settings) -> list[str]:
    notes = []
    if settings.resamples <= 0:
        notes.append(
            "The bootstrap is off (--bootstrap-samples 0): findings whose interval comes from a bootstrap have none, "
            "so their verdicts are inconclusive. The knowledge finding uses score intervals and is unaffected."
        )
    if any(cell.model == "smollm2" for cell in cells):
        notes.append(BASE_IS_INSTRUCT_NOTE)
    if any((cell.judge or {}).get("stand_in_judge") for cell in cells):
        notes.append("The judge is a small stand-in model: its scores show the pipeline working, not answer quality.")
    if any((cell.judge or {}).get("complete") is False for cell in cells):
        notes.append(
            "A judge run is incomplete: some requests got no reply, so its scores cover only the answers judged so "
            "far. Rerun the experiment to complete it."
        )
    return notes


def report_data(root: Path, out_dir: Path, settings: Settings) -> tuple[dict[str, Any], list[Cell]]:
    """report.json's contents for the experiment in ``root`` (and the cells, for the figures)."""
    manifest, cells = collect(root)
    findings = all_findings(cells, settings)
    return {
        "schema_version": SCHEMA_VERSION,
        "experiment": str(root),
        "generated": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "complete": bool(manifest.get("complete", False)),
        "settings": {
            "bootstrap_resamples": settings.resamples,
            "seed": settings.seed,
            "confidence": 1 - ALPHA,
            "power": POWER,
            "margins": {"knowledge": KNOWLEDGE_MARGIN, "size": SIZE_MARGIN},
        },
        "notes": _notes(cells, settings),
        "findings": [finding.to_json() for finding in findings.headline],
        "series_findings": [finding.to_json() for finding in findings.series],
        "cells": [_cell(cell, own, out_dir) for cell, own in zip(cells, findings.by_cell, strict=True)],
        "provenance": {
            "tunescope_commit": git_commit(),
            "versions": {name: version for name, version in package_versions().items() if version},
        },
    }, cells


# --- the page -----------------------------------------------------------------------------------------------


def _number(value: float | None, unit: str | None = None, signed: bool = False) -> str:
    """A number for the page, in its unit's display form (``–`` when missing)."""
    if value is None:
        return "–"
    if unit in UNITS:
        return UNITS[unit].format(value, signed)
    return f"{value:.4g}"


def _interval(interval: list[float] | None, unit: str | None = None, signed: bool = False) -> str:
    if not interval:
        return "no interval"
    return f"[{_number(interval[0], unit, signed)}, {_number(interval[1], unit, signed)}]"


def _environment() -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("tunescope.report", "templates"), autoescape=True, undefined=jinja2.StrictUndefined
    )
    environment.filters["num"] = _number
    environment.filters["interval"] = _interval
    return environment


def _figures(cell: Cell) -> dict[str, str | None]:
    drawn = {
        "loss": figures.loss_curves(cell),
        "monitor": figures.monitor_curves(cell),
        "classes": figures.class_shares(cell),
        "initiation": figures.initiation(cell),
        "tokens": figures.top_tokens(cell),
        "probe": figures.probe_bars(cell),
    }
    return {name: _data_uri(png) for name, png in drawn.items()}


def render_html(data: dict[str, Any], cells: list[Cell]) -> str:
    """The page, drawn from report.json's data; figures and the borrowing sections are added for the page only."""
    extras = [
        {
            "figures": _figures(cell),
            "borrow_sections": [
                {"method": m, "html": render_section(run.borrow, title=f"Borrowing and style imitation: {m}", level=3)}
                for m, run in cell.runs.items()
                if run.borrow
            ],
        }
        for cell in cells
    ]
    provenance = data["provenance"]
    return (
        _environment()
        .get_template("report.html.j2")
        .render(
            report=data,
            extras=extras,
            size_figure=_data_uri(figures.tds_by_size(cells)),
            provenance={
                "experiment": data["experiment"],
                "tunescope git commit": provenance["tunescope_commit"] or "–",
                **provenance["versions"],
            },
        )
    )


def build_report(
    root: str | Path, out: str | Path | None = None, *, bootstrap_samples: int = RESAMPLES, seed: int = 0
) -> Report:
    """Write ``report.json`` and ``report.html`` for the experiment in ``root`` (into ``out``, else ``root``).

    Raises:
        UserError: when ``root`` holds no experiment.
        OutputBusy: when another process is writing the same report.
    """
    root = Path(root).expanduser()
    out_dir = Path(out).expanduser() if out else root
    with output_lock(out_dir / "report.html", flag="--out"):
        data, cells = report_data(root, out_dir, Settings(bootstrap_samples, seed))
        html_path, json_path = out_dir / "report.html", out_dir / "report.json"
        write_json(json_path, data)
        write_text(html_path, render_html(data, cells))
    return Report(html_path, json_path, data["findings"])
