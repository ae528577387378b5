"""`tunescope demo`: the main job — every stage on an embedded model (Gemma-3-270M base by default), then the report."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import yaml

from tunescope.commands.report import print_findings
from tunescope.errors import IncompleteRun, UserError
from tunescope.experiment.demo import DEMO_MODELS, demo_config
from tunescope.experiment.pipeline import MANIFEST, run_experiment
from tunescope.experiment.stages import disk_bytes, human_bytes
from tunescope.experiment.timings import TIMINGS, add_to_timings, format_breakdown
from tunescope.report import build_report


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``demo`` verb."""
    parser = subparsers.add_parser(
        "demo",
        help="the whole pipeline on an embedded model and data, then the report",
        description="Train LoRA and full fine-tuning of an embedded model, generate, measure the token shift, "
        "borrowing, judge and probes, and write the report with a time breakdown. gemma3-270m (default): the "
        "pretrained-only Gemma-3-270M base at two data sizes 8x apart, about 14 minutes on 2 CPU cores (--quick "
        "about 4). smollm2: the already instruction-tuned SmolLM2-135M-Instruct at one data size, about 10 minutes. "
        "Rerunning resumes.",
    )
    parser.add_argument(
        "--model",
        choices=DEMO_MODELS,
        default=DEMO_MODELS[0],
        help="which embedded model's grid to run",
    )
    parser.add_argument(
        "--out",
        help="experiment directory (default: runs/demo, runs/demo-quick with --quick; -smollm2 appended "
        "with --model smollm2)",
    )
    parser.add_argument("--quick", action="store_true", help="a smaller grid that finishes in a few minutes")
    parser.add_argument("--judge-base-url", help="an OpenAI-compatible endpoint to judge with instead of the stand-in")
    parser.add_argument("--judge-model", help="the judge's model name at that endpoint")
    parser.add_argument(
        "--print-config",
        action="store_true",
        help="print the grid as an experiment file (for `tunescope experiment --config FILE`) instead of running it",
    )
    parser.set_defaults(handler=run)


def _trained_runs(manifest: Path) -> dict[str, Path]:
    """The run directory of each method's training stage in the experiment's last cell (its largest size)."""
    stages = json.loads(manifest.read_text(encoding="utf-8"))["cells"][-1]["stages"]
    return {
        name.removesuffix("/train"): manifest.parent / summary["dir"]
        for name, summary in stages.items()
        if name.endswith("/train") and summary
    }


def run(args: argparse.Namespace) -> int:
    """Run the demo grid and write the report."""
    judge = None
    if args.judge_base_url:
        if not args.judge_model:
            raise UserError("--judge-base-url needs --judge-model")
        judge = {
            "backend": "openai", "judge_base_url": args.judge_base_url, "judge_model": args.judge_model, "limit": None,
        }  # fmt: skip
    started = time.perf_counter()
    config = demo_config(quick=args.quick, judge=judge, model=args.model)
    if args.print_config:
        print(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False), end="")
        return 0
    suffix = "" if args.model == DEMO_MODELS[0] else f"-{args.model}"
    out = args.out or ("runs/demo-quick" if args.quick else "runs/demo") + suffix
    incomplete = None
    try:
        manifest = run_experiment(config, out)
    except IncompleteRun as err:  # a judge endpoint that did not answer: report the rest, then say so
        incomplete, manifest = err, Path(out) / MANIFEST
    stages_done = time.perf_counter()
    report = build_report(out)
    report_seconds = time.perf_counter() - stages_done
    print_findings(report.findings)
    for method, run_dir in _trained_runs(manifest).items():
        artifact = run_dir / ("adapter" if method == "lora" else "model")
        print(f"{method}: {artifact}  (metrics: {run_dir / 'metrics.jsonl'}, loss plot: {run_dir / 'loss.png'})")
    print(f"experiment: {manifest}  ({human_bytes(disk_bytes(Path(out)))} on disk; per stage: see log.txt)")
    # Imports, planning and the stages' own bookkeeping: this invocation's time outside the stages and report.
    timings = json.loads((Path(out) / TIMINGS).read_text(encoding="utf-8"))
    outside = stages_done - started - sum(stage["seconds"] or 0 for stage in timings["stages"] if stage["ran_now"])
    timings = add_to_timings(Path(out), {"report": report_seconds, "other": max(outside, 0.0)})
    print(format_breakdown(timings))
    print(f"timings: {Path(out) / TIMINGS}")
    print(f"report: {report.html}")
    if incomplete is not None:
        raise incomplete
    return 0
