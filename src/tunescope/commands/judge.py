"""`tunescope judge`: score answers on five aspects, rate safety, or compare two models pairwise."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from tunescope.commands import add_settings_verb
from tunescope.config import config_from_args
from tunescope.distributed import end_processes, is_main_process
from tunescope.errors import IncompleteRun
from tunescope.judge import JudgeConfig, JudgeResult, incomplete_message, judge


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``judge`` verb."""
    add_settings_verb(
        subparsers, "judge", JudgeConfig, run,
        help="score answers with an LLM judge (five aspects, safety, or pairwise)",
        description="Judge answers with a local model or any OpenAI-compatible endpoint: helpfulness, clarity, "
        "factuality, depth and engagement 1-5 (--mode score), safety 1-5 (--mode safety), or A/B/tie between two "
        "models in both orders (--mode pairwise). Rerunning into the same --out resumes.",
        overwrite="replace a judge run with other settings in --out",
    )  # fmt: skip


def _interval(stats: dict[str, Any]) -> str:
    if stats.get("mean") is None:
        return "-"
    low, high = stats["ci95"]
    return f"{stats['mean']:.2f} [{low:.2f}, {high:.2f}]"


def format_summary(summary: dict[str, Any]) -> str:
    """A few lines for the terminal: means with intervals (or win rates) and failure counts."""
    judge_info = summary["judge"]
    lines = [f"judge: {judge_info['backend']} {judge_info['model']}, prompt {summary['prompt']['version']}"]
    if summary.get("note"):
        lines.append(f"note: {summary['note']}")
    if summary["mode"] == "pairwise":
        for name, pair in summary["pairs"].items():
            lines.append(f"{name}: win rate of {pair['first']} (wins+ties/2) [95% CI], wins/ties/losses")
            for aspect, stats in pair["aspects"].items():
                rate = "-" if stats["win_rate"] is None else f"{stats['win_rate']:.2f} {stats['ci95']}"
                lines.append(f"  {aspect:12} {rate}  {stats['wins']}/{stats['ties']}/{stats['losses']}")
            lines.append(f"  aspect failures: {pair['failures']['aspect_failures']}")
    else:
        for label, model in summary["models"].items():
            failures = model["failures"]
            lines.append(
                f"{label}: {model['items']} answers, {model['complete']} fully scored, "
                f"{failures['aspect_failures']} aspect failures {failures['by_kind'] or ''}".rstrip()
            )
            for aspect, stats in model["aspects"].items():
                lines.append(f"  {aspect:12} {_interval(stats)}  (n={stats['n']})")
    calls = summary["calls"]
    lines.append(
        f"calls: {calls['requests']} requests ({calls['retries']} retries), {calls['from_cache']} from cache, "
        f"{calls['request_errors']} without reply"
    )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Build the settings, judge, print the summary; exit code 3 when some requests got no reply."""
    config = config_from_args(JudgeConfig, args)
    result = judge(config, overwrite=args.overwrite)
    main = is_main_process()  # under `accelerate launch`, one process reports for all
    incomplete = incomplete_message(result.summary, result.out)
    if main:
        if incomplete:  # first, so that neither a person nor a log tail can miss it
            print(f"tunescope judge: incomplete: {incomplete}", file=sys.stderr, flush=True)
        _report(result)
    end_processes()
    return IncompleteRun.exit_code if incomplete else 0


def _report(result: JudgeResult) -> None:
    """Print the summary and where the outputs are."""
    print(format_summary(result.summary))
    print(f"judgements: {result.judgements}")
    print(f"summary: {result.summary_path}")
    for plot in result.plots:
        print(f"plot: {plot}")
