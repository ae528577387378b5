"""`tunescope preflight`: how familiar is the base model with the data, and how to tune it."""

from __future__ import annotations

import argparse

from tunescope.config import add_config_arguments, build_config
from tunescope.probe.preflight import PreflightConfig, preflight


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``preflight`` verb."""
    parser = subparsers.add_parser(
        "preflight",
        help="before tuning: does the base model already know this data?",
        description="Measure the base model's loss on the data's responses against held-out prose and, for "
        "question-answer data, how many questions it already answers; then recommend LoRA, continued "
        "pre-training, or caution with full fine-tuning.",
    )
    parser.add_argument("--config", help="YAML file of settings; flags override it")
    add_config_arguments(parser, PreflightConfig)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Build the settings, measure and print the recommendation."""
    overrides = {name: getattr(args, name) for name in PreflightConfig.model_fields if hasattr(args, name)}
    config = build_config(PreflightConfig, yaml_path=args.config, overrides=overrides)
    result = preflight(config)
    print(f"examples measured: {result.n_examples}")
    print(f"response loss {result.response_loss:.3f} vs held-out prose {result.reference_loss:.3f}")
    if result.answer_accuracy is not None:
        print(f"questions answered: {result.answer_accuracy:.0%}")
    print(f"recommendation: {result.recommendation.replace('_', ' ')}")
    for reason in result.reasons:
        print(f"  - {reason}")
    return 0
