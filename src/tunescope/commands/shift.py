"""`tunescope shift`: token by token, how the tuned model's distribution differs from the base model's."""

from __future__ import annotations

import argparse

from tunescope.commands import add_settings_verb
from tunescope.config import config_from_args
from tunescope.distributed import end_processes, is_main_process
from tunescope.shift import ShiftConfig, ShiftResult, compute_shift


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``shift`` verb."""
    add_settings_verb(
        subparsers, "shift", ShiftConfig, run,
        help="measure the token distribution shift between a base and a tuned model",
        description="Feed the tuned model's responses to both models and compare their next-token distributions "
        "at every position (KL, base rank and probability, unshifted/marginal/shifted); writes tokens.parquet, "
        "summary.json and a token viewer.",
        overwrite="replace a shift run already in --out",
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    """Build the settings, score the responses and print the headline numbers."""
    config = config_from_args(ShiftConfig, args)
    main = is_main_process()  # under `accelerate launch`, one process reports for all
    result = compute_shift(config, overwrite=args.overwrite)
    if main:
        _report(result)
    end_processes()
    return 0


def _report(result: ShiftResult) -> None:
    """Print the headline numbers and where the outputs are."""
    summary = result.summary
    speed = summary["throughput"]
    processes = f" on {speed['processes']} processes" if speed.get("processes", 1) > 1 else ""
    rate = f"{speed['tokens_per_s']} tokens/s{processes}" if speed["tokens_per_s"] else "all scored before"
    print(
        f"mode {summary['mode']}: {summary['n_examples']} responses, {summary['n_tokens']} tokens "
        f"({summary['models']['pairing']}, {rate})"
    )
    print(
        f"unshifted {summary['unshifted']:.1%}  marginal {summary['marginal']:.1%}  shifted {summary['shifted']:.1%}  "
        f"KL mean {summary['kl_mean']:.4g}  base prob mean {summary['base_prob_mean']:.4g}  "
        f"base rank mean {summary['base_rank_mean']:.4g}"
    )
    print(f"summary: {result.out / 'summary.json'}")
    print(f"tokens: {result.tokens}")
    print(f"viewer: {result.viewer}")
