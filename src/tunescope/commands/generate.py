"""`tunescope generate`: answer prompts with a model and record the exact token ids."""

from __future__ import annotations

import argparse

from tunescope.commands import add_settings_verb, warn_if_out_names_a_file
from tunescope.config import config_from_args
from tunescope.distributed import end_processes, is_main_process
from tunescope.generate import GenerateConfig, generate


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``generate`` verb."""
    add_settings_verb(
        subparsers, "generate", GenerateConfig, run,
        help="answer prompts with a model (greedy by default)",
        description="Answer prompts with a model, a PEFT adapter, a GGUF file or a tunescope run, writing one JSON "
        "line per response with the exact prompt and output token ids to <out>/responses.jsonl. A rerun continues "
        "where it stopped.",
        overwrite="discard the responses already in --out",
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    """Build the settings and generate."""
    config = config_from_args(GenerateConfig, args)
    warn_if_out_names_a_file(config.out, ".jsonl")
    main = is_main_process()  # under `accelerate launch`, one process reports for all
    result = generate(config, overwrite=args.overwrite)
    if main:
        processes = f", {result.processes} processes" if result.processes > 1 else ""
        print(f"responses: {result.path} ({result.n_new} generated, {result.n_existing} already there{processes})")
    end_processes()
    return 0
