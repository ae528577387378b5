"""`tunescope preflight`: before tuning, does the base model already know this data, and how should it be tuned?

The paper's practical advice (and the writing behind this project): LoRA instruction tuning teaches
the format of answers, not new knowledge, so check the base model's familiarity with the domain
first, and continue pre-training on the domain when the model does not know it. Preflight measures
the untuned model on a seeded sample of the data, in three steps, each with its interval:

1. **What kind of answers the data has** (:func:`answer_type`). Only a short answer to a question
   about the world can be checked as a fact: "In what year was Keldris founded?" / "In 1787."
   Chit-chat ("What do you like to do?"), instructions ("Write a poem") and long replies hold no
   single right answer, so scoring them as facts would call every base model ignorant. Each example
   is classed with the first rule it fails, and the data's share of factual answers gets a Wilson
   interval: *facts* when it is surely above one half, *open-ended* when surely below, else *mixed*.
2. **Knowledge**, for the factual answers only (:func:`answer_is_right`): the model answers each
   question greedily, and is right when its answer carries the reference's key, the words the
   reference adds to the question (every number, and most of the other words).
3. **Familiarity**, for every kind (:func:`tunescope.stats.independent_ratio_of_means`): the model's
   loss per token on the responses (the tokens training would use) over its loss on held-out
   public-domain prose, with a bootstrap interval over examples and passages. Near 1: the replies
   are no harder for the model than text it has seen.

:func:`recommend` turns the measurements into advice by rules on the intervals (the knowledge check
decides when it ran, familiarity otherwise), says *unsure* when an interval spans a threshold, and
names the command or experiment arm to run next.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from tunescope.data import DataSettings, Example, load_examples, nested_subset, render_prompt, tokenize_examples
from tunescope.data.templates import apply_template_choice, tokenize_documents
from tunescope.decoding import generate_batch, stop_token_ids
from tunescope.files import write_json
from tunescope.models import ModelSettings, load_model, load_tokenizer
from tunescope.probe.forgetting import heldout_passages
from tunescope.probe.scoring import response_token_losses, token_losses
from tunescope.stats import RESAMPLES, Estimate, independent_ratio_of_means, proportion

Recommendation = Literal["lora_is_enough", "continued_pretraining_first", "full_finetuning_overwrites", "unsure"]
DataKind = Literal["facts", "open-ended", "mixed", "documents"]

STOPWORDS = frozenset(
    "a an and are as at be been but by can did do does for from had has have he her his i if in into is it its "
    "me my no not of on or our she so than that the their them then there these they this to was we were what "
    "when where which who why will with you your".split()
)
PERSONAL = frozenset("you your yours yourself yourselves u ur i me my mine myself we us our ours".split())
"""Words of a question about the assistant or the asker themselves, which has no answer to check."""
INTERROGATIVES = frozenset("what which who whom whose when where why how is are was were do does did can".split())
"""First words of a question that does not end with a question mark."""
MAX_FACT_ANSWER_WORDS = 30
"""A reference answer longer than this is a reply, not a short factual answer."""
MAX_KEY_WORDS = 8
"""A reference adding more content words than this to its question is an open-ended answer."""
OPEN_REASONS = {
    "turns": "are not one question with one answer",
    "not_a_question": "are not questions (instructions, statements)",
    "personal": "ask about the assistant or the asker (you, I, my)",
    "long_answer": f"have answers longer than {MAX_FACT_ANSWER_WORDS} words",
    "no_key": "have answers that add nothing checkable to the question",
    "long_key": f"have answers that add more than {MAX_KEY_WORDS} content words to the question",
}
"""Why an example is not a short factual answer, in the order the rules are tried."""


class PreflightConfig(DataSettings, ModelSettings):
    """Preflight settings."""

    subset_size: int = Field(default=64, gt=0)
    """Examples to measure: the first N of one seeded shuffle (--subset-seed); all when the data holds fewer."""
    reference_passages: int = Field(default=16, gt=1)
    """Held-out public-domain passages the familiarity ratio is measured against."""
    questions: int = Field(default=32, ge=0)
    """Factual questions (of the measured examples) the model answers, at most (0: no knowledge check)."""
    min_questions: int = Field(default=8, gt=0)
    """Fewest factual questions for a knowledge check; with fewer, familiarity alone decides."""
    max_new_tokens: int = Field(default=48, gt=0)
    """Longest answer, in tokens."""
    familiar_ratio: float = Field(default=1.1, gt=0)
    """Loss ratio (responses / prose) at or below which the data counts as familiar."""
    unfamiliar_ratio: float = Field(default=1.5, gt=0)
    """Loss ratio at or above which the data counts as new to the model."""
    known_accuracy: float = Field(default=0.5, ge=0, le=1)
    """Answer accuracy at or above which the model already knows the facts."""
    unknown_accuracy: float = Field(default=0.15, ge=0, le=1)
    """Answer accuracy at or below which the model does not know the facts."""
    bootstrap_samples: int = Field(default=RESAMPLES, ge=0)
    """Bootstrap resamples for the familiarity interval (0: none, and familiarity cannot decide)."""
    seed: int = 0
    """Seed of the held-out passage sample and the bootstrap."""
    out: str | None = None
    """Also write the result as JSON to this file."""


# ------------------------------------------------------------------------------------------
# What kind of answers the data has


def words(text: str) -> list[str]:
    """Lower-cased words and numbers of ``text``."""
    return re.findall(r"[a-z0-9]+", text.lower())


def content_words(text: str) -> set[str]:
    """Lower-cased words and numbers of ``text``, without stopwords."""
    return {word for word in words(text) if word not in STOPWORDS}


def answer_key(question: str, reference: str) -> set[str]:
    """What the reference answer adds to its question: its content words the question does not contain."""
    return content_words(reference) - content_words(question)


def answer_type(example: Example) -> str:
    """``factual`` for a short answer to a question about the world, else the first rule it fails (``OPEN_REASONS``)."""
    roles = [message["role"] for message in example.messages]
    if roles != ["user", "assistant"]:
        return "turns"
    question, reference = example.messages[0]["content"].strip(), example.messages[1]["content"]
    asked = words(question.splitlines()[-1] if question else "")
    if not (question.endswith("?") or (asked and asked[0] in INTERROGATIVES)):
        return "not_a_question"
    if PERSONAL & set(words(question)):
        return "personal"
    if len(reference.split()) > MAX_FACT_ANSWER_WORDS:
        return "long_answer"
    key = answer_key(question, reference)
    if not key:
        return "no_key"
    return "long_key" if len(key) > MAX_KEY_WORDS else "factual"


def answer_is_right(question: str, reference: str, answer: str) -> bool | None:
    """Whether ``answer`` carries the key of ``reference`` (see :func:`answer_key`).

    Every number of the key must appear (a year or a count is the fact itself), and most of its other
    words (more than half: "copper mining" is not "salt mining"); when the key has numbers, its other
    words are context and half of them, rounded down, suffices. None when the reference adds nothing to
    the question.
    """
    key = answer_key(question, reference)
    if not key:
        return None
    given = content_words(answer)
    numbers = {word for word in key if word.isdigit()}
    others = key - numbers
    needed = len(others) // 2 if numbers else len(others) // 2 + 1
    return numbers <= given and len(others & given) >= needed


@dataclass(frozen=True)
class AnswerTypes:
    """How many measured examples are short factual answers, and why the others are not."""

    kind: DataKind
    """facts, open-ended, mixed, or documents (text data)."""
    n: int
    """Examples classed."""
    factual: int
    """Short factual answers among them."""
    open_reasons: dict[str, int]
    """Rule (``OPEN_REASONS``) -> examples it classed as open-ended."""
    share: Estimate
    """Share of factual answers, Wilson interval."""

    def sentence(self) -> str:
        """Which kind was found, and why, with the counts."""
        if self.kind == "documents":
            return f"documents: text data ({self.n} documents), no questions to check"
        low, high = self.share.ci95 or (0.0, 1.0)
        share = f"{self.share.value:.0%} [{low:.0%}, {high:.0%}]"
        found = f"{self.factual} of {self.n} examples ({share}) are short answers to questions about the world"
        others = [f"{count} {OPEN_REASONS[rule]}" for rule, count in self.open_reasons.items() if count]
        why = {
            "facts": "surely most of the data: factual answers, checked as facts",
            "open-ended": "surely under half: open-ended replies, not checked as facts",
            "mixed": "possibly half: mixed, its factual part checked as facts",
        }[self.kind]
        return f"{self.kind}: {found} ({why}); of the others, {', '.join(others) or 'none'}"


def classify(examples: list[Example]) -> AnswerTypes:
    """Class every example (:func:`answer_type`) and decide the data's kind from the share's 95% interval."""
    if examples and all(example.text is not None for example in examples):
        return AnswerTypes("documents", len(examples), 0, {}, proportion(0, len(examples)))
    types = [answer_type(example) for example in examples]
    factual = types.count("factual")
    share = proportion(factual, len(types))
    low, high = share.ci95 or (0.0, 1.0)
    kind: DataKind = "facts" if low >= 0.5 else "open-ended" if high < 0.5 else "mixed"
    return AnswerTypes(kind, len(types), factual, {rule: types.count(rule) for rule in OPEN_REASONS}, share)


# ------------------------------------------------------------------------------------------
# From measurements to advice


@dataclass(frozen=True)
class Advice:
    """The recommendation, why, and what to run next."""

    recommendation: Recommendation
    """lora_is_enough, continued_pretraining_first, full_finetuning_overwrites or unsure."""
    reasons: list[str]
    """Why, in sentences, with the numbers and intervals they rest on."""
    decided_by: Literal["knowledge", "familiarity"]
    """Which measurement decided."""


def _span(estimate: Estimate, fmt: str) -> str:
    if estimate.ci95 is None:
        return f"{format(estimate.value, fmt)} (no interval: {estimate.note})"
    low, high = estimate.ci95
    return f"{format(estimate.value, fmt)} [{format(low, fmt)}, {format(high, fmt)}]"


def recommend(types: AnswerTypes, familiarity: Estimate, knowledge: Estimate | None, config: PreflightConfig) -> Advice:
    """Decide from 95% intervals: the knowledge check when it ran, familiarity otherwise; *unsure* across a threshold.

    Knowledge (accuracy on the factual questions): *not known* when the interval lies at or below
    ``unknown_accuracy`` (continue pre-training first), *known* at or above ``known_accuracy`` (LoRA
    is enough), *partly known* strictly between (prefer LoRA, check forgetting), else unsure.
    Familiarity (loss ratio): *new* when the interval lies at or above ``unfamiliar_ratio`` (continue
    pre-training first), *partly new* within [``familiar_ratio``, ``unfamiliar_ratio``) (prefer LoRA,
    check forgetting), *not new* when it lies below ``unfamiliar_ratio`` otherwise (LoRA is enough),
    else unsure.
    """
    ratio = f"the responses' loss is {_span(familiarity, '.2f')}x that of held-out prose"
    reasons = [types.sentence(), ratio]
    if knowledge is not None:
        reasons.append(f"the base model answers {_span(knowledge, '.0%')} of {knowledge.n} factual questions")
        if knowledge.ci95 is None:
            return Advice("unsure", [*reasons, "the accuracy has no interval, so it cannot decide"], "knowledge")
        low, high = knowledge.ci95
        if high <= config.unknown_accuracy:
            return Advice("continued_pretraining_first", [*reasons, (
                f"its interval lies at or below {config.unknown_accuracy:.0%}: the model does not know these facts, "
                "and LoRA instruction tuning teaches the format of answers, not the facts (near-chance answers "
                "after tuning); teach them first by continued pre-training on text that states them"
            )], "knowledge")  # fmt: skip
        if low >= config.known_accuracy:
            return Advice("lora_is_enough", [*reasons, (
                f"its interval lies at or above {config.known_accuracy:.0%}: the model already knows these facts, "
                "so tuning mostly teaches format and style; LoRA is enough, and full fine-tuning would shift "
                "the model further for no gain"
            )], "knowledge")  # fmt: skip
        if low > config.unknown_accuracy and high < config.known_accuracy:
            return Advice("full_finetuning_overwrites", [*reasons, (
                f"its interval lies between {config.unknown_accuracy:.0%} and {config.known_accuracy:.0%}: the model "
                "knows part of the facts; full fine-tuning would pull it toward the data and overwrite some of what "
                "it knows, so prefer LoRA and check forgetting with `tunescope probe`"
            )], "knowledge")  # fmt: skip
        return Advice("unsure", [*reasons, (
            f"its interval spans a threshold ({config.unknown_accuracy:.0%} not known, {config.known_accuracy:.0%} "
            "known), so the evidence does not decide; measure more questions"
        )], "knowledge")  # fmt: skip
    if types.kind == "open-ended":
        reasons.append("open-ended replies hold no facts to check, so familiarity decides")
    elif types.kind != "documents":
        reasons.append(f"fewer than {config.min_questions} factual questions to check, so familiarity decides")
    if familiarity.ci95 is None:
        return Advice("unsure", [*reasons, "the loss ratio has no interval, so it cannot decide"], "familiarity")
    low, high = familiarity.ci95
    if low >= config.unfamiliar_ratio:
        return Advice("continued_pretraining_first", [*reasons, (
            f"its interval lies at or above {config.unfamiliar_ratio:g}x: the text is new to the model; continue "
            "pre-training on text from the domain before tuning the format"
        )], "familiarity")  # fmt: skip
    if low >= config.familiar_ratio and high < config.unfamiliar_ratio:
        return Advice("full_finetuning_overwrites", [*reasons, (
            f"its interval lies between {config.familiar_ratio:g}x and {config.unfamiliar_ratio:g}x: the content is "
            "partly new; full fine-tuning would pull the model toward it and overwrite some of what it knows, so "
            "prefer LoRA and check forgetting with `tunescope probe`"
        )], "familiarity")  # fmt: skip
    if high < config.unfamiliar_ratio:
        partly = (
            f"; it reaches above {config.familiar_ratio:g}x, so if you fine-tune fully, check forgetting"
            if high > config.familiar_ratio
            else ""
        )
        return Advice("lora_is_enough", [*reasons, (
            f"its interval lies below {config.unfamiliar_ratio:g}x: the replies are not new to the model, so tuning "
            f"teaches their style and format, which LoRA does{partly}"
        )], "familiarity")  # fmt: skip
    return Advice("unsure", [*reasons, (
        f"its interval spans {config.unfamiliar_ratio:g}x, the ratio at which content counts as new, so the "
        "evidence does not decide; measure more examples and passages"
    )], "familiarity")  # fmt: skip


def _stem(data: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", Path(data).stem.lower()).strip("-") or "data"


def next_step(advice: Advice, config: PreflightConfig) -> str:
    """The command (or experiment arm) to run next, for this model and data."""
    model, data, stem = config.model, config.data, _stem(config.data)
    lora = f"tunescope train --model {model} --data {data} --method lora --out runs/{stem}-lora"
    if advice.recommendation == "lora_is_enough":
        return lora
    if advice.recommendation == "full_finetuning_overwrites":
        return f"{lora}, then tunescope probe --base {model} --tuned runs/{stem}-lora --out runs/{stem}-probe"
    if advice.recommendation == "continued_pretraining_first":
        # The invented facts ship with their own encyclopedia text; any other domain needs the user's.
        text = "facts-text" if data == "facts" else "DOMAIN_TEXT.txt"
        return (
            f"tunescope train --model {model} --data {text} --format text --method full --out runs/cpt, then "
            f"tunescope train --model runs/cpt --data {data} --method lora --out runs/cpt-{stem}-lora; or, to measure "
            f"the difference, the experiment arms [lora, cpt+lora] with cpt: {{data: {text}}}"
        )
    questions = (
        max(config.questions, config.min_questions) * 2 if advice.decided_by == "knowledge" else config.questions
    )
    return (
        f"tunescope preflight --model {model} --data {data} --subset-size {config.subset_size * 2} "
        f"--questions {questions} --reference-passages {config.reference_passages * 2}"
    )


# ------------------------------------------------------------------------------------------
# Measuring


@dataclass
class PreflightResult:
    """What preflight measured, what it recommends, and what to run next."""

    n_examples: int
    """Examples measured (``subset_size``, or all when the data holds fewer)."""
    n_records: int
    """Usable examples in the data."""
    answer_types: dict[str, Any]
    """``kind``, ``factual``, ``open_reasons`` (rule -> count), ``share`` (estimate), ``sentence``."""
    familiarity: dict[str, Any]
    """``ratio`` (estimate: responses' loss per token / prose's), ``response_loss``, ``reference_loss`` (nats
    per token), ``n_responses``, ``n_passages``."""
    knowledge: dict[str, Any] | None
    """``accuracy`` (estimate, Wilson), ``right``, ``asked``; None when not checked."""
    recommendation: Recommendation
    """lora_is_enough, continued_pretraining_first, full_finetuning_overwrites or unsure."""
    decided_by: str
    """knowledge or familiarity."""
    reasons: list[str] = field(default_factory=list)
    """Why, in sentences."""
    next_step: str = ""
    """The command or experiment arm to run next."""


def _columns(losses: list[tuple[float, int]]) -> tuple[list[float], list[int]]:
    """Per-item (summed loss, tokens) pairs as the two columns a pooled-mean statistic reads."""
    return [total for total, _ in losses], [count for _, count in losses]


def _pooled(losses: list[tuple[float, int]]) -> float:
    """Loss per token over all items."""
    totals, counts = _columns(losses)
    return sum(totals) / max(sum(counts), 1)


def _answers_right(model: Any, tokenizer: Any, examples: list[Example], config: PreflightConfig) -> list[bool]:
    decoding = {"max_new_tokens": config.max_new_tokens, "do_sample": False, "repetition_penalty": 1.0}
    stops = stop_token_ids(model, tokenizer)
    verdicts = []
    for first in range(0, len(examples), 8):
        batch = examples[first : first + 8]
        prompts = [
            tokenizer(render_prompt(tokenizer, ex.messages), add_special_tokens=False)["input_ids"] for ex in batch
        ]
        for example, generated in zip(batch, generate_batch(model, tokenizer, prompts, decoding, stops), strict=True):
            answer = tokenizer.decode(generated.token_ids, skip_special_tokens=True)
            verdicts.append(
                bool(answer_is_right(example.messages[0]["content"], example.messages[1]["content"], answer))
            )
    return verdicts


def preflight(config: PreflightConfig) -> PreflightResult:
    """Measure the base model on ``config.data`` and recommend how to tune it.

    Raises:
        UserError: for unusable data or model.
    """
    loaded = load_examples(config.model_copy(update={"subset_size": None}))
    examples = nested_subset(loaded.examples, min(config.subset_size, len(loaded.examples)), config.subset_seed)
    types = classify(examples)
    tokenizer = load_tokenizer(config.model, trust_remote_code=config.trust_remote_code)
    apply_template_choice(tokenizer, config.template)
    model = load_model(config.model, trust_remote_code=config.trust_remote_code).eval()

    if types.kind == "documents":
        tokenized = tokenize_documents(tokenizer, examples, max_length=config.max_length)
    else:
        tokenized = [
            t for t in tokenize_examples(tokenizer, examples, max_length=config.max_length) if t.trained_tokens
        ]
    responses = response_token_losses(model, tokenized, tokenizer.pad_token_id)
    passages = token_losses(
        model, tokenizer, heldout_passages(config.reference_passages, config.seed), config.max_length
    )
    ratio = independent_ratio_of_means(
        _columns(passages), _columns(responses), resamples=config.bootstrap_samples, seed=config.seed
    )

    knowledge, right = None, 0
    factual = [example for example in examples if types.kind != "documents" and answer_type(example) == "factual"]
    asked = factual[: config.questions]
    if types.kind != "open-ended" and config.questions and len(asked) >= config.min_questions:
        right = sum(_answers_right(model, tokenizer, asked, config))
        knowledge = proportion(right, len(asked))
    advice = recommend(types, ratio, knowledge, config)

    result = PreflightResult(
        n_examples=len(examples),
        n_records=len(loaded.examples),
        answer_types={
            "kind": types.kind, "factual": types.factual, "open_reasons": types.open_reasons,
            "share": types.share.to_json(), "sentence": types.sentence(),
        },
        familiarity={
            "ratio": ratio.to_json(), "response_loss": _pooled(responses), "reference_loss": _pooled(passages),
            "n_responses": len(responses), "n_passages": len(passages),
        },
        knowledge=None if knowledge is None else {
            "accuracy": knowledge.to_json(), "right": right, "asked": knowledge.n,
        },
        recommendation=advice.recommendation,
        decided_by=advice.decided_by,
        reasons=advice.reasons,
        next_step=next_step(advice, config),
    )  # fmt: skip
    if config.out:
        write_json(config.out, {"model": config.model, "data": loaded.source, **result.__dict__})
    return result
