"""Knowledge uptake: does a model answer paraphrased questions about facts it was tuned on?

Two measures, both beside their chance rate:

* multiple choice: each option is scored by its log-likelihood inside the answer sentence, after
  the paraphrased question; the most likely option is the model's choice (chance 1 / options);
* exact match: the model answers freely (greedy) and is right when the value appears in its answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from tunescope.data import render_prompt
from tunescope.probe.scoring import continuation_logprobs


class MultipleChoice(Protocol):
    """What a multiple-choice question needs to be scored."""

    id: str
    question: str
    options: list[str]
    answer_index: int
    frame: str


def question_prompt(tokenizer: Any, question: str) -> str:
    """The chat prompt that asks ``question``, ready for the answer."""
    return render_prompt(tokenizer, [{"role": "user", "content": question}])


def multiple_choice_predictions(
    model: Any, tokenizer: Any, questions: Sequence[MultipleChoice], batch_size: int = 16
) -> list[int]:
    """Index of the option each question's answer sentence makes most likely."""
    prompts, continuations = [], []
    for question in questions:
        prompt = question_prompt(tokenizer, question.question)
        for option in question.options:
            prompts.append(prompt)
            continuations.append(question.frame.format(option))
    scores = continuation_logprobs(model, tokenizer, prompts, continuations, batch_size=batch_size)
    predictions, cursor = [], 0
    for question in questions:
        option_scores = scores[cursor : cursor + len(question.options)]
        predictions.append(max(range(len(option_scores)), key=option_scores.__getitem__))
        cursor += len(question.options)
    return predictions


def exact_matches(answers: Sequence[str], expected: Sequence[str]) -> list[bool]:
    """Whether each free-form answer contains its expected value (case-insensitive)."""
    return [value.lower() in answer.lower() for answer, value in zip(answers, expected, strict=True)]


@dataclass(frozen=True)
class KnowledgeScore:
    """Accuracy of one model on a question set."""

    n_questions: int
    """Questions asked."""
    multiple_choice: float
    """Share answered correctly by likelihood ranking."""
    chance: float
    """Expected multiple-choice accuracy of guessing."""
    exact_match: float | None
    """Share of free-form answers containing the value (None when not generated)."""
    correct_ids: list[str]
    """Ids of the questions answered correctly by multiple choice."""


def score_knowledge(
    model: Any,
    tokenizer: Any,
    questions: Sequence[MultipleChoice],
    answers: Sequence[str] | None = None,
    expected: Sequence[str] | None = None,
) -> KnowledgeScore:
    """Multiple-choice accuracy, and exact match when free-form ``answers`` are given."""
    predictions = multiple_choice_predictions(model, tokenizer, questions)
    correct = [q.id for q, p in zip(questions, predictions, strict=True) if p == q.answer_index]
    exact = None
    if answers is not None and expected is not None:
        hits = exact_matches(answers, expected)
        exact = sum(hits) / len(hits)
    return KnowledgeScore(
        n_questions=len(questions),
        multiple_choice=len(correct) / len(questions),
        chance=sum(1 / len(q.options) for q in questions) / len(questions),
        exact_match=exact,
        correct_ids=correct,
    )
