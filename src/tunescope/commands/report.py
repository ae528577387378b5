"""`tunescope report`: the experiment's figures and findings in one self-contained HTML page."""

from __future__ import annotations

import argparse

from tunescope.commands import add_settings_verb
from tunescope.config import config_from_args
from tunescope.report import build_report
from tunescope.report.pipeline import ReportConfig


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``report`` verb."""
    parser = add_settings_verb(
        subparsers, "report", ReportConfig, run,
        help="write report.html and report.json for an experiment directory",
        description="Draw the paper's figures for an experiment (finished or not) and check each of its claims.",
    )  # fmt: skip
    parser.add_argument("dir", help="experiment directory (written by `tunescope experiment` or `tunescope demo`)")


def run(args: argparse.Namespace) -> int:
    """Build the report and print where it is."""
    config = config_from_args(ReportConfig, args)
    report = build_report(args.dir, config.out, bootstrap_samples=config.bootstrap_samples, seed=config.seed)
    print_findings(report.findings)
    print(f"report: {report.html}")
    return 0


def print_findings(findings: list[dict]) -> None:
    """One line per finding: verdict, claim, and the effect with its interval and n."""
    for finding in findings:
        effect = finding.get("effect")
        numbers = ""
        if effect and effect.get("value") is not None:
            interval = effect.get("ci95")
            span = f" [{interval[0]:+.4g}, {interval[1]:+.4g}]" if interval else " (no interval)"
            numbers = f"  ({effect['value']:+.4g}{span}, n={effect['n']})"
        print(f"{finding['verdict']:>15}  {finding['claim']}{numbers}")
