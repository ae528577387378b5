"""`tunescope preflight`: how familiar is the base model with the data, and how to tune it."""

from __future__ import annotations

import argparse

from tunescope.commands import add_settings_verb, warn_if_out_names_a_file
from tunescope.config import config_from_args
from tunescope.probe.preflight import PreflightConfig, preflight


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``preflight`` verb."""
    add_settings_verb(
        subparsers, "preflight", PreflightConfig, run,
        help="before tuning: does the base model already know this data?",
        description="Class the data's answers as short facts or open-ended replies, measure the base model's "
        "loss on the responses against held-out prose and, for factual answers, how many questions it already "
        "answers, each with a 95% interval; then recommend LoRA, continued pre-training, caution with full "
        "fine-tuning, or say it is unsure, and name the command to run next.",
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    """Build the settings, measure, and print the evidence, the recommendation and what to run next."""
    config = config_from_args(PreflightConfig, args)
    warn_if_out_names_a_file(config.out, ".json")
    result = preflight(config)
    print(f"examples measured: {result.n_examples} of {result.n_records} (--subset-size {config.subset_size})")
    print(f"answer type: {result.answer_types['sentence']}")
    familiarity, ratio = result.familiarity, result.familiarity["ratio"]
    print(
        f"familiarity: responses' loss / held-out prose's = {ratio['value']:.2f} {_interval(ratio, '.2f')} "
        f"({familiarity['response_loss']:.3f} vs {familiarity['reference_loss']:.3f} nats per token; "
        f"{familiarity['n_responses']} responses, {familiarity['n_passages']} passages)"
    )
    if result.knowledge is None:
        print("knowledge: not checked (no short factual answers to check)")
    else:
        accuracy = result.knowledge["accuracy"]
        print(
            f"knowledge: {result.knowledge['right']} of {result.knowledge['asked']} factual questions answered right, "
            f"{accuracy['value']:.0%} {_interval(accuracy, '.0%')}"
        )
    print(f"recommendation: {result.recommendation.replace('_', ' ')} (decided by {result.decided_by})")
    for reason in result.reasons[2:]:
        print(f"  - {reason}")
    print(f"next: {result.next_step}")
    if config.result_file:
        print(f"result: {config.result_file}")
    return 0


def _interval(estimate: dict, fmt: str) -> str:
    if not estimate.get("ci95"):
        return f"(no interval: {estimate.get('note')})"
    low, high = estimate["ci95"]
    return f"[{format(low, fmt)}, {format(high, fmt)}] 95% CI"
