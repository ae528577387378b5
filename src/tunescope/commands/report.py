"""`tunescope report`: the experiment's figures and findings in one self-contained HTML page."""

from __future__ import annotations

import argparse

from tunescope.report import build_report


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``report`` verb."""
    parser = subparsers.add_parser(
        "report",
        help="write report.html and report.json for an experiment directory",
        description="Draw the paper's figures for an experiment (finished or not) and check each of its claims.",
    )
    parser.add_argument("dir", help="experiment directory (written by `tunescope experiment` or `tunescope demo`)")
    parser.add_argument("--out", help="directory for report.html and report.json (default: the experiment directory)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Build the report and print where it is."""
    report = build_report(args.dir, args.out)
    for finding in report.findings:
        print(f"{finding['verdict']:>15}  {finding['claim']}")
    print(f"report: {report.html}")
    return 0
