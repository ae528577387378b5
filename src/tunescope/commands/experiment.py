"""`tunescope experiment`: a grid of models x methods x datasets x sizes, every stage resumable."""

from __future__ import annotations

import argparse

from tunescope.config import build_config, deprecated, required_group
from tunescope.errors import IncompleteRun, UserError
from tunescope.experiment.config import ExperimentConfig
from tunescope.experiment.pipeline import run_experiment
from tunescope.experiment.stages import disk_bytes, human_bytes
from tunescope.report import build_report


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``experiment`` verb."""
    parser = subparsers.add_parser(
        "experiment",
        help="run a grid: train -> generate -> shift -> borrow -> judge -> probes, resumable",
        description="Run every stage of an experiment grid described by a YAML file; a rerun skips finished "
        "stages and resumes an interrupted one. Then `tunescope report OUT` draws the report.",
    )
    required = required_group(parser)
    required.add_argument(
        "--config",
        metavar="FILE",
        help="YAML file of experiment settings (configs/experiment_paper.yaml, configs/experiment_own_model.yaml, or "
        "`tunescope demo --print-config`) (required)",
    )
    required.add_argument("--out", required=True, help="experiment directory (created; reused by a rerun) (required)")
    # The settings file used to be positional; it still is, with a deprecation warning.
    parser.add_argument("old_config", nargs="?", metavar="CONFIG", help=argparse.SUPPRESS)
    parser.add_argument(
        "--report", action=argparse.BooleanOptionalAction, default=True, help="write the report at the end"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Validate the grid, run it and (by default) write the report, also of a run left incomplete."""
    config = build_config(ExperimentConfig, yaml_path=_config_file(args))
    try:
        manifest = run_experiment(config, args.out)
    except IncompleteRun:
        if args.report:  # the finished stages are worth seeing; the report says what is missing
            print(f"report: {build_report(args.out).html}")
        raise
    print(f"experiment: {manifest}  ({human_bytes(disk_bytes(manifest.parent))} on disk; per stage: see log.txt)")
    if args.report:
        print(f"report: {build_report(args.out).html}")
    return 0


def _config_file(args: argparse.Namespace) -> str:
    """The settings file, from --config or (deprecated) the positional argument."""
    if args.old_config is not None:
        if args.config is not None:
            raise UserError(f"two settings files: --config {args.config} and {args.old_config}; give --config only")
        deprecated(f"`tunescope experiment {args.old_config}`", f"`tunescope experiment --config {args.old_config}`")
        return args.old_config
    if args.config is None:
        raise UserError("missing required setting --config (the experiment's YAML file)")
    return args.config
