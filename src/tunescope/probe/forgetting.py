"""Forgetting: what tuning cost the model outside its training data.

Two measures, before vs after tuning:

* held-out loss: next-token loss on public-domain text no tuning set contains (PEFT's
  ``forgetting`` metric is the same idea); a rise means the model's general language model moved;
* retention: of the general-knowledge questions the base model answers correctly (multiple
  choice, as in :mod:`tunescope.probe.knowledge`), the share the tuned model still answers.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from tunescope.assets import dataset_path
from tunescope.probe.knowledge import KnowledgeScore, score_knowledge
from tunescope.probe.scoring import mean_token_loss


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
    """One model's held-out loss and general knowledge."""

    heldout_loss: float
    """Mean next-token loss (nats) on the held-out passages."""
    general: KnowledgeScore
    """Multiple-choice result on the general-knowledge questions."""


def score_forgetting(
    model: Any, tokenizer: Any, passages: list[str], questions: list[GeneralQuestion]
) -> ForgettingScore:
    """Measure one model; compare two of these with :func:`compare_forgetting`."""
    return ForgettingScore(mean_token_loss(model, tokenizer, passages), score_knowledge(model, tokenizer, questions))


def compare_forgetting(base: ForgettingScore, tuned: ForgettingScore) -> dict[str, float | int | None]:
    """Loss change and retention of the base model's correct answers."""
    known = set(base.general.correct_ids)
    kept = known & set(tuned.general.correct_ids)
    return {
        "heldout_loss_base": base.heldout_loss,
        "heldout_loss_tuned": tuned.heldout_loss,
        "heldout_loss_delta": tuned.heldout_loss - base.heldout_loss,
        "base_known": len(known),
        "retained": len(kept),
        "retention": len(kept) / len(known) if known else None,
        "general_accuracy_base": base.general.multiple_choice,
        "general_accuracy_tuned": tuned.general.multiple_choice,
    }
