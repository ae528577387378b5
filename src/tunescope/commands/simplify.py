"""`tunescope simplify`: rewrite a training set's responses concisely (the paper's LIMA-Simple)."""

from __future__ import annotations

import argparse
import sys

from tunescope.commands import add_settings_verb, warn_if_out_names_a_file
from tunescope.config import config_from_args
from tunescope.simplify import SimplifyConfig, simplify


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``simplify`` verb."""
    add_settings_verb(
        subparsers, "simplify", SimplifyConfig, run,
        help="rewrite every training response concisely (LIMA-Simple), resumably",
        description="Send each training response with its query to a rewriter (an OpenAI-compatible endpoint or a "
        "local model) and keep only what is helpful and factual; code and summaries are copied verbatim. Writes "
        "the same records with new responses to <out>/simplified.jsonl, plus simplified.provenance.json and "
        "simplified.rewrites.jsonl beside it. Rerunning after a crash asks only for what is missing.",
        overwrite="discard an earlier output or unfinished progress",
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    """Build the settings, rewrite the dataset and print what was done."""
    from tqdm import tqdm

    config = config_from_args(SimplifyConfig, args)
    warn_if_out_names_a_file(config.out, ".jsonl")
    with tqdm(unit="rec", desc="simplify", disable=not sys.stderr.isatty(), leave=False) as bar:
        result = simplify(config, overwrite=args.overwrite, log=lambda line: print(line, file=sys.stderr),
                          progress=bar.update)  # fmt: skip
    responses = result.provenance["responses"]
    actions = ", ".join(f"{name} {count}" for name, count in responses["actions"].items())
    print(f"{result.provenance['output']['n_records']} records, {responses['n']} responses: {actions}")
    print(f"mean response length: {responses['mean_chars_before']} -> {responses['mean_chars_after']} characters")
    if result.provenance["rewriter"].get("stand_in"):
        print("note: a small stand-in rewriter; use a strong model (--backend openai) for a real dataset")
    print(f"data: {result.out}")
    print(f"provenance: {result.provenance_path}")
    return 0
