"""`tunescope experiment`: a grid of models x methods x datasets x sizes, every stage resumable."""

from __future__ import annotations

import argparse

from tunescope.config import build_config
from tunescope.errors import IncompleteRun
from tunescope.experiment.config import ExperimentConfig
from tunescope.experiment.pipeline import run_experiment
from tunescope.report import build_report


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``experiment`` verb."""
    parser = subparsers.add_parser(
        "experiment",
        help="run a grid: train -> generate -> shift -> borrow -> judge -> probes, resumable",
        description="Run every stage of an experiment grid described by a YAML file; a rerun skips finished "
        "stages and resumes an interrupted one. Then `tunescope report OUT` draws the report.",
    )
    parser.add_argument(
        "config",
        help="YAML file of experiment settings (configs/experiment_paper.yaml, or `tunescope demo --print-config`)",
    )
    parser.add_argument("--out", required=True, help="experiment directory (created; reused by a rerun)")
    parser.add_argument(
        "--report", action=argparse.BooleanOptionalAction, default=True, help="write the report at the end"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Validate the grid, run it and (by default) write the report, also of a run left incomplete."""
    config = build_config(ExperimentConfig, yaml_path=args.config)
    try:
        manifest = run_experiment(config, args.out)
    except IncompleteRun:
        if args.report:  # the finished stages are worth seeing; the report says what is missing
            print(f"report: {build_report(args.out).html}")
        raise
    print(f"experiment: {manifest}")
    if args.report:
        print(f"report: {build_report(args.out).html}")
    return 0
