"""Where an experiment's time went: seconds per stage and per kind of stage, written to ``timings.json``.

Every stage records the seconds it ran in its summary (``done/<stage>.json``); a stage finished by an
earlier invocation keeps the seconds it took then, so the breakdown describes the whole experiment,
and says which stages this invocation ran. The report (drawn after the stages) and anything outside
the stages (imports, planning) are added by the caller as extra entries.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tunescope.files import write_json

TIMINGS = "timings.json"
"""The breakdown, in the experiment directory."""
KINDS = ("data", "train", "generate", "shift", "borrow", "judge", "probe", "report")
"""Kinds of work, in the order the breakdown lists them (others follow)."""


def breakdown(stages: list[dict[str, Any]], extra: dict[str, float] | None = None) -> dict[str, Any]:
    """Seconds per kind of stage and their shares of the total.

    Args:
        stages: Stage summaries as the runner writes them (``stage``, ``label``, ``seconds``; ``ran_now``
            when this invocation ran it).
        extra: Further seconds by kind (e.g. ``report``, ``other``), counted in the total.

    Returns:
        ``{"total_seconds", "extra", "kinds": {kind: {"seconds", "share", "stages"}}, "stages": [...]}``, kinds in
        :data:`KINDS` order.
    """
    seconds: dict[str, float] = {}
    counts: dict[str, int] = {}
    for stage in stages:
        seconds[stage["stage"]] = seconds.get(stage["stage"], 0.0) + float(stage.get("seconds") or 0.0)
        counts[stage["stage"]] = counts.get(stage["stage"], 0) + 1
    for kind, value in (extra or {}).items():
        seconds[kind] = seconds.get(kind, 0.0) + value
    total = sum(seconds.values())
    order = [kind for kind in KINDS if kind in seconds] + sorted(set(seconds) - set(KINDS))
    return {
        "total_seconds": round(total, 1),
        "extra": {kind: round(value, 1) for kind, value in (extra or {}).items()},
        "kinds": {
            kind: {
                "seconds": round(seconds[kind], 1),
                "share": round(seconds[kind] / total, 4) if total else None,
                "stages": counts.get(kind, 0),
            }
            for kind in order
        },
        "stages": [
            {key: stage.get(key) for key in ("stage", "label", "dir", "seconds", "ran_now")} for stage in stages
        ],
    }


def write_timings(root: Path, stages: list[dict[str, Any]], extra: dict[str, float] | None = None) -> dict[str, Any]:
    """Write ``timings.json`` into the experiment directory ``root`` and return it."""
    timings = breakdown(stages, extra)
    write_json(root / TIMINGS, timings)
    return timings


def format_breakdown(timings: dict[str, Any]) -> str:
    """The breakdown as a few lines for a terminal: kind, seconds, share, stages."""
    lines = ["time by stage kind:"]
    for kind, entry in timings["kinds"].items():
        share = f"{entry['share']:6.1%}" if entry["share"] is not None else "     –"
        stages = f"  ({entry['stages']} stages)" if entry["stages"] else ""
        lines.append(f"  {kind:<9} {entry['seconds']:8.1f} s  {share}{stages}")
    lines.append(f"  {'total':<9} {timings['total_seconds']:8.1f} s")
    return "\n".join(lines)


def add_to_timings(root: Path, extra: dict[str, float]) -> dict[str, Any]:
    """Add seconds spent outside the stages (e.g. ``report``) to the experiment's ``timings.json``; return it.

    Raises:
        FileNotFoundError: when the experiment has no ``timings.json`` yet.
    """
    written = json.loads((root / TIMINGS).read_text(encoding="utf-8"))
    return write_timings(root, written["stages"], {**written.get("extra", {}), **extra})
