"""The ``tunescope`` command: one verb per pipeline stage, each a thin layer over the library.

Failures the user can fix (:class:`~tunescope.errors.TunescopeError`) print one line and exit
with the error's code (2 for bad input, 3 for a run left incomplete; see :mod:`tunescope.errors`);
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import pkgutil
import sys
import warnings
from typing import NoReturn

from tunescope import __version__, commands
from tunescope.distributed import exit_process
from tunescope.errors import IncompleteRun, TunescopeError

# Verbs are listed in pipeline order; each lives in tunescope/commands/<verb>.py with a
# register(subparsers) function, so adding a stage never touches this file.
PIPELINE_ORDER = (
    "train", "generate", "shift", "borrow", "simplify", "judge", "probe", "preflight",
    "experiment", "report", "demo", "assets", "env",
)  # fmt: skip


def command_modules() -> list:
    """The command modules, in pipeline order (unlisted ones last, alphabetically)."""
    names = [info.name for info in pkgutil.iter_modules(commands.__path__) if not info.name.startswith("_")]
    names.sort(key=lambda name: (PIPELINE_ORDER.index(name) if name in PIPELINE_ORDER else len(PIPELINE_ORDER), name))
    return [importlib.import_module(f"tunescope.commands.{name}") for name in names]


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and still exit code 2)."""

    def error(self, message: str) -> None:  # noqa: D102
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """The full command-line interface."""
    parser = OneLineErrorParser(
        prog="tunescope",
        description="Instruction-tune causal LMs with LoRA and full fine-tuning, then see what tuning changed.",
    )
    parser.add_argument("--version", action="version", version=f"tunescope {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, parser_class=OneLineErrorParser)
    for command in command_modules():
        command.register(subparsers)
    return parser


def _one_line_warnings() -> None:
    warnings.formatwarning = lambda message, category, *rest, **kw: f"warning: {message}\n"


def _quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import datasets
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    logging.getLogger("datasets").setLevel(logging.ERROR)
    # Deprecation notices that TRL triggers inside transformers, not actionable by our users.
    warnings.filterwarnings("ignore", message=r".*(gradient_checkpointing|is_gradient_checkpointing)` is deprecated")


def run() -> NoReturn:
    """The ``tunescope`` executable (and ``python -m tunescope``): :func:`main`, then exit with its code."""
    exit_process(main())


def main(argv: list[str] | None = None) -> int:
    """Run one ``tunescope`` command; returns the process exit code."""
    _one_line_warnings()  # before parsing, which warns about deprecated flags
    args = build_parser().parse_args(argv)
    _quiet_libraries()
    try:
        return args.handler(args)
    except TunescopeError as err:
        if not err.quiet:
            label = "incomplete" if isinstance(err, IncompleteRun) else "error"
            print(f"tunescope {args.command}: {label}: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print(f"tunescope {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `tunescope assets | head`: the reader left, which is not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
