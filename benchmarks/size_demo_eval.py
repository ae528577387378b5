"""Size the demo's evaluation from a pilot run: each finding's detectable effect at the demo grid's n.

Reads the findings of a finished pilot experiment (``report.json``, e.g. ``tunescope demo --quick``)
and, for each finding, projects the smallest detectable effect to the item counts of the demo grid
(``tunescope demo``): a standard error shrinks as 1/sqrt(n), so the detectable effect at n items is
the pilot's times sqrt(n_pilot / n). Prints a Markdown table for BENCHMARKS.md: finding, its items,
pilot n and detectable effect, the grid's n and projected detectable effect, and what it must beat
(the margin of a claimed absence, else the pilot's observed effect), with the n that would decide
it at the pilot's effect (``needed_n``, the report's own normal approximation).

    python benchmarks/size_demo_eval.py runs/demo-quick [--model gemma3-270m]
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from tunescope.experiment.demo import DEMO_MODELS, demo_config


def grid_items(model: str) -> dict[str, int]:
    """Items behind each kind of finding in the full demo grid (upper bounds where the data decides)."""
    config = demo_config(model=model)
    prompts = config.eval.subset_size or 0
    return {
        "prompts": prompts,
        "responses": prompts,
        "questions": config.probes.max_questions,  # at most: the probe asks one question per taught value
        "passages": config.probes.passages,
    }


def projected(detectable: float | None, pilot_n: int | None, target_n: int) -> float | None:
    """The detectable effect at ``target_n`` items, from the pilot's at ``pilot_n`` (1/sqrt(n) scaling)."""
    if detectable is None or not pilot_n or not target_n:
        return None
    return detectable * math.sqrt(pilot_n / target_n)


def _number(value: float | None, scale: float) -> str:
    return "–" if value is None else f"{value * scale:.3g}"


def main() -> None:
    """Print the sizing table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pilot", type=Path, help="a finished experiment directory with report.json")
    parser.add_argument("--model", choices=DEMO_MODELS, default=DEMO_MODELS[0])
    args = parser.parse_args()
    report = json.loads((args.pilot / "report.json").read_text(encoding="utf-8"))
    items = grid_items(args.model)
    print("| finding | items | pilot n | pilot detectable | grid n | projected detectable | to beat | needed n |")
    print("|---|---|---|---|---|---|---|---|")
    for finding in report["findings"]:
        effect = finding.get("effect") or {}
        unit = effect.get("unit", "")
        scale = 100.0 if unit == "proportion" else 1.0
        kind = effect.get("items") or ""
        target = items.get(kind, 0)
        detectable = projected(finding.get("detectable"), finding.get("n"), target)
        if finding.get("margin") is not None and finding.get("rule_type") == "no effect":
            to_beat = f"margin ±{_number(finding['margin'], scale)}"
        else:
            to_beat = f"observed {_number(effect.get('value'), scale)}"
        pilot = f"{finding.get('n') or '–'} | {_number(finding.get('detectable'), scale)}"
        grid = f"{target or '–'} | {_number(detectable, scale)}"
        print(f"| {finding['key']} | {kind or '–'} | {pilot} | {grid} | {to_beat} | {finding.get('needed_n') or '–'} |")


if __name__ == "__main__":
    main()
