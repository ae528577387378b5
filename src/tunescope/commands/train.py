"""`tunescope train`: fine-tune with LoRA or fully."""

from __future__ import annotations

import argparse
from pathlib import Path

from tunescope.commands import add_settings_verb
from tunescope.config import config_from_args, upgraded_settings
from tunescope.distributed import end_processes, is_main_process
from tunescope.rundir import saved_config
from tunescope.train import TrainConfig, dry_run, train


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``train`` verb."""
    parser = add_settings_verb(
        subparsers, "train", TrainConfig, run,
        help="fine-tune a model with LoRA or fully",
        description="Instruction-tune a causal LM with LoRA (--method lora) or full fine-tuning (--method full).",
        overwrite="replace a run already in --out",
    )  # fmt: skip
    parser.add_argument(
        "--dry-run", action="store_true", help="show 3 rendered, masked examples and length stats (needs no --out)"
    )
    parser.add_argument("--resume", action="store_true", help="continue the unfinished run in --out")


def run(args: argparse.Namespace) -> int:
    """Build the settings, then dry-run or train."""
    base = None
    if args.resume and hasattr(args, "out"):
        # A resumed run needs no flags but --out: its saved settings are the starting point.
        saved = saved_config(Path(args.out).expanduser())
        base = upgraded_settings(TrainConfig, saved) if saved else saved
    elif args.dry_run:
        base = {"out": ""}  # a dry run writes nothing, so it needs no run directory
    config = config_from_args(TrainConfig, args, base=base)
    if args.dry_run:
        if is_main_process():
            print(dry_run(config))
        end_processes()
        return 0
    result = train(config, resume=args.resume, overwrite=args.overwrite)
    if is_main_process():  # under `accelerate launch`, one process reports for all
        print(f"{result.artifact.name}: {result.artifact}")
        print(f"metrics: {result.metrics}")
        print(f"loss plot: {result.loss_plot}")
    end_processes()
    return 0
