"""Forgetting: what tuning cost the model outside its training data.

Two measures, before vs after tuning, each with an interval:

* held-out loss: next-token loss on public-domain text no tuning set contains (PEFT's
  ``forgetting`` metric is the same idea); a rise means the model's general language model moved.
  Kept per passage, so the change is a paired comparison over passages (bootstrap);
* retention: of the general-knowledge questions the base model answers correctly (multiple
  choice, as in :mod:`tunescope.probe.knowledge`), the share the tuned model still answers, with a
  Wilson interval; and the paired change in general-knowledge accuracy (Newcombe, McNemar).
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from tunescope.assets import dataset_path
from tunescope.probe.knowledge import correct_choices, multiple_choice_predictions
from tunescope.probe.scoring import token_losses
from tunescope.stats import RESAMPLES, Estimate, paired_proportions, paired_ratio_difference, proportion


@dataclass(frozen=True)
class GeneralQuestion:
    """A well-known fact as a multiple-choice question."""

    id: str
    """Stable id."""
    question: str
    """The question."""
    options: list[str]
    """Four candidate answers."""
    answer_index: int
    """Position of the right one."""
    frame: str
    """Answer sentence with ``{}`` where an option goes."""


def general_questions() -> list[GeneralQuestion]:
    """The 40 general-knowledge questions shipped with tunescope."""
    text = resources.files("tunescope.probe").joinpath("data/general_knowledge.jsonl").read_text(encoding="utf-8")
    return [GeneralQuestion(**json.loads(line)) for line in text.splitlines() if line.strip()]


def heldout_passages(n_passages: int = 24, seed: int = 0) -> list[str]:
    """A seeded sample of the ``shakespeare`` asset's passages (prepared on first use)."""
    path = Path(dataset_path("shakespeare"))
    passages = [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    random.Random(seed).shuffle(passages)
    return passages[:n_passages]


@dataclass(frozen=True)
class ForgettingScore:
    """One model's held-out loss per passage and its general-knowledge answers."""

    passage_losses: list[tuple[float, int]]
    """Per held-out passage: summed next-token loss (nats) and tokens predicted."""
    general_correct: list[bool]
    """Per general-knowledge question (in :func:`general_questions` order): answered correctly."""

    @property
    def heldout_loss(self) -> float:
        """Mean next-token loss (nats per token) pooled over the passages."""
        return sum(total for total, _ in self.passage_losses) / max(sum(n for _, n in self.passage_losses), 1)


def score_forgetting(
    model: Any, tokenizer: Any, passages: list[str], questions: list[GeneralQuestion], passage_tokens: int = 512
) -> ForgettingScore:
    """Measure one model (passages cut to ``passage_tokens``); compare two with :func:`compare_forgetting`."""
    predictions = multiple_choice_predictions(model, tokenizer, questions)
    losses = token_losses(model, tokenizer, passages, max_length=passage_tokens)
    return ForgettingScore(losses, correct_choices(questions, predictions))


def loss_change(base: ForgettingScore, tuned: ForgettingScore, resamples: int = RESAMPLES, seed: int = 0) -> Estimate:
    """Tuned minus base held-out loss (nats per token), with a paired bootstrap interval over passages."""

    def sums_and_counts(score: ForgettingScore) -> tuple[list[float], list[float]]:
        return [total for total, _ in score.passage_losses], [float(n) for _, n in score.passage_losses]

    return paired_ratio_difference(sums_and_counts(base), sums_and_counts(tuned), resamples=resamples, seed=seed)


def retention(base_correct: Sequence[bool], tuned_correct: Sequence[bool]) -> Estimate:
    """Of the questions the base model answers correctly, the share the tuned model still does (Wilson)."""
    kept = [bool(tuned) for base, tuned in zip(base_correct, tuned_correct, strict=True) if base]
    return proportion(sum(kept), len(kept))


def compare_forgetting(
    base: ForgettingScore, tuned: ForgettingScore, resamples: int = RESAMPLES, seed: int = 0
) -> dict[str, Any]:
    """Loss change, retention and general-knowledge change of ``tuned`` against ``base``, as JSON.

    ``loss_change``, ``retained_share`` and ``general_change`` are estimates with intervals; the
    plain numbers beside them (``heldout_loss_delta``, ``retention``, ...) are their point values.
    """
    known = sum(base.general_correct)
    kept = retention(base.general_correct, tuned.general_correct)
    n_general = max(len(base.general_correct), 1)
    return {
        "loss_change": loss_change(base, tuned, resamples, seed).to_json(),
        "retained_share": kept.to_json(),
        "general_change": paired_proportions(base.general_correct, tuned.general_correct).to_json(),
        "heldout_loss_base": base.heldout_loss,
        "heldout_loss_tuned": tuned.heldout_loss,
        "heldout_loss_delta": tuned.heldout_loss - base.heldout_loss,
        "base_known": known,
        "retained": sum(b and t for b, t in zip(base.general_correct, tuned.general_correct, strict=True)),
        "retention": kept.value,
        "general_accuracy_base": sum(base.general_correct) / n_general,
        "general_accuracy_tuned": sum(tuned.general_correct) / n_general,
    }
