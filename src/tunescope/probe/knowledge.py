"""Knowledge uptake: does a model answer questions about facts it was tuned on?

Two measures, each beside a rate reached without the fact:

* multiple choice: each option is scored by its log-likelihood inside the answer sentence, after
  the question; the most likely option is the model's choice (chance: 1 / options);
* exact match: the model answers freely (greedy) and is right when the value appears in its answer
  (no chance rate: the control questions about untaught entities give the rate instead).

Scoring is separated from choosing (:func:`option_scores`, :func:`chosen_options`) so any scorer,
including a simulated one in the tests, goes through the same choice and accuracy code.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from tunescope.data import render_prompt
from tunescope.probe.scoring import option_logprobs
from tunescope.stats import Estimate, proportion


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


def option_scores(
    model: Any, tokenizer: Any, questions: Sequence[MultipleChoice], batch_size: int = 16
) -> list[list[float]]:
    """Per question, the log-likelihood of each option's answer sentence after the question.

    Up to a term shared by the question's options (the answer sentence's words before the options
    differ): the question and those words are read once for all four options
    (:func:`tunescope.probe.scoring.option_logprobs`), which leaves the choice unchanged.
    """
    prompts = [question_prompt(tokenizer, question.question) for question in questions]
    options = [[question.frame.format(option) for option in question.options] for question in questions]
    return option_logprobs(model, tokenizer, prompts, options, batch_size=batch_size)


def chosen_options(scores: Sequence[Sequence[float]]) -> list[int]:
    """Index of the highest-scoring option of each question."""
    return [max(range(len(option_scores)), key=option_scores.__getitem__) for option_scores in scores]


def multiple_choice_predictions(
    model: Any, tokenizer: Any, questions: Sequence[MultipleChoice], batch_size: int = 16
) -> list[int]:
    """Index of the option each question's answer sentence makes most likely."""
    return chosen_options(option_scores(model, tokenizer, questions, batch_size))


def correct_choices(questions: Sequence[MultipleChoice], predictions: Sequence[int]) -> list[bool]:
    """Whether each prediction is the question's answer."""
    return [prediction == question.answer_index for question, prediction in zip(questions, predictions, strict=True)]


def exact_matches(answers: Sequence[str], expected: Sequence[str]) -> list[bool]:
    """Whether each free-form answer contains its expected value (case-insensitive)."""
    return [value.lower() in answer.lower() for answer, value in zip(answers, expected, strict=True)]


def chance_rate(questions: Sequence[MultipleChoice]) -> float | None:
    """Expected multiple-choice accuracy of guessing uniformly (None for no questions)."""
    return sum(1 / len(q.options) for q in questions) / len(questions) if questions else None


def accuracy(correct: Sequence[bool], chance: float | None = None) -> Estimate:
    """Share of ``correct`` with its Wilson interval and, given ``chance``, the binomial test against it."""
    return proportion(sum(map(bool, correct)), len(correct), chance)
