"""`tunescope report`: one self-contained HTML page and report.json for an experiment directory."""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import jinja2

from tunescope.borrow.report import render_section
from tunescope.env import git_commit, package_versions
from tunescope.files import write_json, write_text
from tunescope.locks import output_lock
from tunescope.report import figures
from tunescope.report.collect import Cell, collect, probe_results
from tunescope.report.findings import all_findings
from tunescope.shift.output import VIEWER_FILE

BASE_IS_INSTRUCT_NOTE = (
    "The embedded default model, SmolLM2-135M-Instruct, is already instruction-tuned; the paper tunes pre-trained "
    "bases. Expect smaller shifts than the paper's, and read the verdicts as this model's behaviour."
)


@dataclass(frozen=True)
class Report:
    """Where the report went."""

    html: Path
    """The page."""
    json: Path
    """The numbers behind it."""
    findings: list[dict[str, Any]]
    """The checked claims."""


def _data_uri(png: bytes | None) -> str | None:
    return "data:image/png;base64," + base64.b64encode(png).decode() if png else None


def _fmt(value: float | None, spec: str = ".4f") -> str:
    return "–" if value is None else format(value, spec)


def _with_ci(metric: dict[str, Any], spec: str = ".4f") -> str:
    low, high = metric["ci95"]
    return f"{metric['value']:{spec}} [{low:{spec}}, {high:{spec}}]"


def _training_rows(cell: Cell) -> list[dict[str, Any]]:
    rows = []
    for method, run in cell.runs.items():
        if not run.run:
            continue
        lr = run.config and (run.config.get(f"{method}_learning_rate") or run.config.get("learning_rate"))
        rows.append(
            {
                "method": method,
                "lr": f"{lr:g}" if lr else "–",
                "steps": run.run["steps"],
                "first_loss": _fmt(run.run.get("first_loss")),
                "final_loss": _fmt(run.run.get("final_loss")),
                "minutes": _fmt(run.run.get("runtime_s", 0) / 60, ".1f"),
            }
        )
    return rows


def _shift_rows(cell: Cell, root: Path, out_dir: Path) -> list[dict[str, Any]]:
    rows = []
    for method, run in cell.runs.items():
        if not run.shift:
            continue
        micro = run.shift["micro"]
        viewer = run.shift_dir / VIEWER_FILE if run.shift_dir else None
        rows.append(
            {
                "method": method,
                "n_examples": run.shift["n_examples"],
                "n_tokens": run.shift["n_tokens"],
                "kl": _with_ci(micro["kl_mean"]),
                "base_prob": _with_ci(micro["base_prob_mean"], ".3f"),
                "base_rank": _with_ci(micro["base_rank_mean"], ".2f"),
                "unshifted": f"{run.shift['unshifted']:.1%}",
                "marginal": f"{run.shift['marginal']:.1%}",
                "shifted": f"{run.shift['shifted']:.1%}",
                "viewer": os.path.relpath(viewer, out_dir) if viewer and viewer.is_file() else None,
            }
        )
    return rows


def _mean_ci(entry: dict[str, Any]) -> str:
    """'mean [low, high]' of a judge summary entry (n, mean, ci95), or a dash."""
    if not entry or entry.get("mean") is None:
        return "–"
    low, high = entry.get("ci95") or (None, None)
    return f"{entry['mean']:.2f}" + (f" [{low:.2f}, {high:.2f}]" if low is not None else "")


def _judge_block(cell: Cell) -> dict[str, Any] | None:
    summary = cell.judge
    if not summary or summary.get("mode") != "score":
        return None
    aspects = list(summary.get("aspects", []))
    rows = [
        {
            "model": model,
            "scores": [_mean_ci(entry["aspects"].get(a, {})) for a in aspects] + [_mean_ci(entry.get("overall", {}))],
            "failures": entry.get("failures", {}).get("aspect_failures", 0),
        }
        for model, entry in summary.get("models", {}).items()
    ]
    images = [
        _data_uri((cell.judge_dir / name).read_bytes())
        for name in ("radar.png", "bars.png")
        if cell.judge_dir and (cell.judge_dir / name).is_file()
    ]
    return {"aspects": [*aspects, "overall"], "rows": rows, "images": images, "note": summary.get("note", "")}


def _probe_block(cell: Cell) -> dict[str, Any] | None:
    results = probe_results(cell)
    if not results:
        return None
    rows = []
    for model, entry in results.items():
        forgetting = entry.get("forgetting", {})
        retention = forgetting.get("retention")
        rows.append(
            {
                "model": model,
                "facts": f"{entry['knowledge']['multiple_choice']:.1%}",
                "loss": _fmt(entry["heldout_loss"]),
                "general": f"{entry['general_accuracy']:.1%}",
                "retention": "–" if retention is None else f"{retention:.1%}",
            }
        )
    return {"rows": rows, "note": cell.probe.get("note", "")}


def _borrow_sections(cell: Cell) -> list[dict[str, str]]:
    return [
        {"method": m, "html": render_section(run.borrow, title=f"Borrowing and style imitation: {m}", level=3)}
        for m, run in cell.runs.items()
        if run.borrow
    ]


def build_report(root: str | Path, out: str | Path | None = None) -> Report:
    """Write ``report.html`` and ``report.json`` for the experiment in ``root`` (into ``out``, else ``root``).

    Raises:
        UserError: when ``root`` holds no experiment.
        OutputBusy: when another process is writing the same report.
    """
    root = Path(root).expanduser()
    out_dir = Path(out).expanduser() if out else root
    with output_lock(out_dir / "report.html", flag="--out"):
        return _build_report(root, out_dir)


def _build_report(root: Path, out_dir: Path) -> Report:
    manifest, cells = collect(root)
    findings = all_findings(cells)
    rendered_cells = []
    for cell in cells:
        cell_figures = {
            "loss": figures.loss_curves(cell),
            "monitor": figures.monitor_curves(cell),
            "classes": figures.class_shares(cell),
            "initiation": figures.initiation(cell),
            "tokens": figures.top_tokens(cell),
            "probe": figures.probe_bars(cell),
        }
        rendered_cells.append(
            {
                "name": cell.name,
                "training": _training_rows(cell),
                "shift": _shift_rows(cell, root, out_dir),
                "borrow_sections": _borrow_sections(cell),
                "judge": _judge_block(cell),
                "probe": _probe_block(cell),
                "figures": {name: _data_uri(png) for name, png in cell_figures.items()},
            }
        )
    versions = package_versions()
    notes = []
    if any(cell.model == "smollm2" for cell in cells):
        notes.append(BASE_IS_INSTRUCT_NOTE)
    if any((cell.judge or {}).get("stand_in_judge") for cell in cells):
        notes.append("The judge is a small stand-in model: its scores show the pipeline working, not answer quality.")
    if any((cell.judge or {}).get("complete") is False for cell in cells):
        notes.append(
            "A judge run is incomplete: some requests got no reply, so its scores cover only the answers judged so "
            "far. Rerun the experiment to complete it."
        )
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("tunescope.report", "templates"), autoescape=True, undefined=jinja2.StrictUndefined
    )
    html = environment.get_template("report.html.j2").render(
        title=str(root),
        generated=generated,
        complete=manifest.get("complete", False),
        notes=notes,
        findings=findings,
        size_figure=_data_uri(figures.tds_by_size(cells)),
        cells=rendered_cells,
        provenance={
            "experiment": str(root),
            "tunescope git commit": git_commit() or "–",
            **{name: version for name, version in versions.items() if version},
        },
    )
    html_path, json_path = out_dir / "report.html", out_dir / "report.json"
    write_text(html_path, html)
    write_json(
        json_path,
        {
            "experiment": str(root),
            "generated": generated,
            "complete": manifest.get("complete", False),
            "notes": notes,
            "findings": findings,
            "cells": [
                {key: value for key, value in cell.items() if key not in ("figures", "borrow_sections")}
                for cell in rendered_cells
            ],
        },
    )
    return Report(html_path, json_path, findings)
