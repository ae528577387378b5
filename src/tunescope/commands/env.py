"""`tunescope env`: versions, devices and threads, for bug reports."""

from __future__ import annotations

import argparse
import json

from tunescope.env import describe_environment, format_environment


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``env`` verb."""
    parser = subparsers.add_parser("env", help="print versions, device and threads for bug reports")
    parser.add_argument("--json", action="store_true", help="print JSON instead of key: value lines")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Print the environment report."""
    report = describe_environment()
    print(json.dumps(report, indent=2) if args.json else "\n".join(format_environment(report)))
    return 0
