"""`tunescope probe`: knowledge uptake and forgetting, base vs tuned."""

from __future__ import annotations

import argparse

from tunescope.config import add_config_arguments, build_config
from tunescope.probe.pipeline import ProbeConfig, run_probes


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``probe`` verb."""
    parser = subparsers.add_parser(
        "probe",
        help="knowledge uptake and forgetting of tuned models against their base",
        description="Ask paraphrased questions about the fictional facts the tuned runs were trained on, and "
        "measure held-out loss and retained general knowledge, for the base and each tuned model.",
    )
    parser.add_argument("--config", help="YAML file of settings; flags override it")
    add_config_arguments(parser, ProbeConfig)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Build the settings and probe."""
    overrides = {name: getattr(args, name) for name in ProbeConfig.model_fields if hasattr(args, name)}
    config = build_config(ProbeConfig, yaml_path=args.config, overrides=overrides)
    report = run_probes(config)
    chance = report["chance"]
    for spec, entry in report["models"].items():
        line = f"{spec}: facts {entry['knowledge']['multiple_choice']:.1%} (chance {chance:.0%})"
        line += f", held-out loss {entry['heldout_loss']:.3f}"
        if "forgetting" in entry:
            line += f", retention {entry['forgetting']['retention']:.1%}"
        print(line)
    print(f"report: {config.out}/probe.json")
    return 0
