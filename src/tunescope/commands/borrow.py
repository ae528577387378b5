"""`tunescope borrow`: which tokens shift, which words and phrases came from the training set."""

from __future__ import annotations

import argparse
import sys

from tunescope.borrow import BorrowConfig, borrow
from tunescope.commands import add_settings_verb
from tunescope.config import config_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``borrow`` verb."""
    add_settings_verb(
        subparsers, "borrow", BorrowConfig, run,
        help="trace shifted tokens and hallucinated spans back to the training set",
        description="From a shift run and the training data: the most frequent shifted tokens tagged style or "
        "content, the share of shifted words found in the training set beside unshifted and base-model "
        "baselines, response lengths (Table 11) and, with --spans, where each marked span could come from. "
        "Writes borrow.json, spans.jsonl and borrow.html.",
        overwrite="replace a borrow run with other settings in --out",
    )  # fmt: skip


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def run(args: argparse.Namespace) -> int:
    """Build the settings, run the analysis and print the headline numbers."""
    config = config_from_args(BorrowConfig, args)
    result = borrow(config, overwrite=args.overwrite, log=lambda line: print(line, file=sys.stderr))
    summary = result.borrow
    style = summary["style_tokens"]
    shares = style["share"]
    print(
        f"style share of shifted+marginal tokens: {_percent(style['headline']['style_share'])} "
        f"({style['headline']['n_tokens']} tokens; shifted {_percent(shares['shifted']['value'])}, "
        f"unshifted {_percent(shares['unshifted']['value'])})"
    )
    headline = summary["borrowed_words"]["headline"]
    print(
        f"words found in the training set: at shifted/marginal positions {_percent(headline['shifted_or_marginal'])}, "
        f"unshifted {_percent(headline['unshifted_baseline'])}, base model {_percent(headline['base_model_baseline'])}"
    )
    lengths = summary["imitation"]
    base = lengths["base_outputs"]
    print(
        f"mean response length (characters): training {lengths['training_responses']['chars']['mean']}, "
        f"tuned {lengths['tuned_outputs']['chars']['mean']}, base {base['chars']['mean'] if base else '-'}"
    )
    if summary["attribution"]:
        attribution = summary["attribution"]
        print(
            f"spans: {attribution['n_spans']}, found exactly {_percent(attribution['found_exact']['value'])}, "
            f"tokens shifted/marginal {_percent(attribution['span_tokens_shifted_or_marginal']['value'])} "
            "(automated approximation)"
        )
        print(f"spans: {result.spans_path}")
    print(f"borrow: {result.borrow_path}")
    print(f"html: {result.html_path}")
    return 0
