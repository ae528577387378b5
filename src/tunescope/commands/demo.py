"""`tunescope demo`: the main job — every stage on the embedded default model, then the report."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

from tunescope.commands.report import print_findings
from tunescope.errors import IncompleteRun, UserError
from tunescope.experiment.demo import demo_config
from tunescope.experiment.pipeline import MANIFEST, run_experiment
from tunescope.report import build_report


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``demo`` verb."""
    parser = subparsers.add_parser(
        "demo",
        help="the whole pipeline on the embedded default model and data, then the report",
        description="Train LoRA and full fine-tuning of SmolLM2-135M-Instruct, generate, measure the token shift, "
        "borrowing, judge and probes, and write the report (about 10 minutes on 2 CPU cores; --quick about 3). "
        "Rerunning resumes.",
    )
    parser.add_argument("--out", help="experiment directory (default: runs/demo, or runs/demo-quick with --quick)")
    parser.add_argument("--quick", action="store_true", help="a smaller grid that finishes in a few minutes")
    parser.add_argument("--judge-base-url", help="an OpenAI-compatible endpoint to judge with instead of the stand-in")
    parser.add_argument("--judge-model", help="the judge's model name at that endpoint")
    parser.add_argument(
        "--print-config",
        action="store_true",
        help="print the grid as an experiment file (for `tunescope experiment FILE`) instead of running it",
    )
    parser.set_defaults(handler=run)


def _trained_runs(manifest: Path) -> dict[str, Path]:
    """The run directory of each method's training stage in the experiment's first cell."""
    stages = json.loads(manifest.read_text(encoding="utf-8"))["cells"][0]["stages"]
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
        judge = {"backend": "openai", "base_url": args.judge_base_url, "judge_model": args.judge_model, "limit": None}
    config = demo_config(quick=args.quick, judge=judge)
    if args.print_config:
        print(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False), end="")
        return 0
    out = args.out or ("runs/demo-quick" if args.quick else "runs/demo")
    incomplete = None
    try:
        manifest = run_experiment(config, out)
    except IncompleteRun as err:  # a judge endpoint that did not answer: report the rest, then say so
        incomplete, manifest = err, Path(out) / MANIFEST
    report = build_report(out)
    print_findings(report.findings)
    for method, run_dir in _trained_runs(manifest).items():
        artifact = run_dir / ("adapter" if method == "lora" else "model")
        print(f"{method}: {artifact}  (metrics: {run_dir / 'metrics.jsonl'}, loss plot: {run_dir / 'loss.png'})")
    print(f"experiment: {manifest}")
    print(f"report: {report.html}")
    if incomplete is not None:
        raise incomplete
    return 0
