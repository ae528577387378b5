"""Thin command-line wrappers, one module per verb, over the library API."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from tunescope.config import Config, add_config_arguments, deprecated


def add_settings_verb(
    subparsers: argparse._SubParsersAction,
    name: str,
    settings: type[Config],
    handler: Callable[[argparse.Namespace], int],
    *,
    help: str,
    description: str,
    overwrite: str | None = None,
) -> argparse.ArgumentParser:
    """Add the verb ``name``: ``--config`` and one flag per field of ``settings``, run by ``handler``.

    ``overwrite`` is the help of the verb's ``--overwrite`` flag, for a stage that refuses to mix a
    new run into an output directory holding another one; None leaves the flag out.
    """
    parser = subparsers.add_parser(name, help=help, description=description)
    add_config_arguments(parser, settings)
    if overwrite is not None:
        parser.add_argument("--overwrite", action="store_true", help=overwrite)
    parser.set_defaults(handler=handler)
    return parser


def warn_if_out_names_a_file(out: str | None, suffix: str) -> None:
    """Warn where ``--out`` names an output file (``suffix``), its spelling before it named a directory."""
    if out and out.endswith(suffix):
        deprecated(f"--out {out} (a file)", f"an output directory, e.g. --out {out.removesuffix(suffix)}")
