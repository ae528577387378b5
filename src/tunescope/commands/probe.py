"""`tunescope probe`: knowledge uptake and forgetting, base vs tuned."""

from __future__ import annotations

import argparse

from tunescope.commands import add_settings_verb
from tunescope.config import config_from_args
from tunescope.probe.pipeline import ProbeConfig, run_probes


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``probe`` verb."""
    add_settings_verb(
        subparsers, "probe", ProbeConfig, run,
        help="knowledge uptake and forgetting of tuned models against their base",
        description="Ask paraphrased questions about the fictional facts the tuned runs were trained on (beside "
        "the same questions about untaught entities, and in the training wording), and measure held-out loss and "
        "retained general knowledge, for the base and each tuned model, with intervals.",
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    """Build the settings and probe."""
    config = config_from_args(ProbeConfig, args)
    report = run_probes(config)
    print(f"{len(report['sets']['facts']['ids'])} questions per set; {report['note']}")
    for spec, entry in report["models"].items():
        sets = entry["sets"]
        line = (
            f"{spec}: facts {_share(sets['facts']['accuracy'])}, control {_share(sets['control']['accuracy'])}, "
            f"training wording {_share(sets['training_wording']['accuracy'])} (chance {report['chance']:.0%})"
        )
        line += f", held-out loss {entry['heldout']['loss']:.3f}"
        if "forgetting" in entry:
            line += f", retention {_share(entry['forgetting']['retained_share'])}"
        print(line)
    print(f"report: {config.out}/probe.json")
    return 0


def _share(estimate: dict) -> str:
    """'31.2% [22.0, 42.1]' from an estimate's JSON."""
    if estimate["value"] is None:
        return "–"
    interval = estimate["ci95"]
    return f"{estimate['value']:.1%}" + (f" [{100 * interval[0]:.1f}, {100 * interval[1]:.1f}]" if interval else "")
