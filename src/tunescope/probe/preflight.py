"""`tunescope preflight`: before tuning, does the base model already know this data?

The paper's practical advice (and the blog behind this project): LoRA instruction tuning teaches
the format of answers, not new knowledge, so check the base model's familiarity with the domain
first. Two measurements, both on the untuned model:

* familiarity: next-token loss on the data's responses (the tokens training would use), divided
  by the loss on held-out public-domain prose. Near 1 or below: the responses are no harder for
  the model than text it has seen. Well above 1: the content is new to it.
* knowledge (question-answer shaped data only): the model answers a sample of the questions; an
  answer counts as right when it contains at least half of the reference answer's content words
  that the question does not already give away.
"""

from __future__ import annotations

import re
import statistics
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from pydantic import Field

from tunescope.data import DataSettings, Example, load_examples, nested_subset, render_prompt, tokenize_examples
from tunescope.data.templates import apply_template_choice
from tunescope.decoding import generate_batch, stop_token_ids
from tunescope.files import write_json
from tunescope.models import ModelSettings, load_model, load_tokenizer
from tunescope.probe.forgetting import heldout_passages
from tunescope.probe.scoring import mean_token_loss, response_loss

Recommendation = Literal["lora_is_enough", "continued_pretraining_first", "full_finetuning_overwrites"]

STOPWORDS = frozenset(
    "a an and are as at be been but by can did do does for from had has have he her his i if in into is it its "
    "me my no not of on or our she so than that the their them then there these they this to was we were what "
    "when where which who why will with you your".split()
)


class PreflightConfig(DataSettings, ModelSettings):
    """Preflight settings."""

    sample_size: int = Field(default=64, gt=0)
    """Examples to measure: the first N of the seeded shuffle (all when the data is smaller)."""
    reference_passages: int = Field(default=16, gt=0)
    """Held-out public-domain passages the familiarity ratio is measured against."""
    questions: int = Field(default=24, ge=0)
    """Questions the model answers when the data is question-answer shaped (0: skip)."""
    max_new_tokens: int = Field(default=48, gt=0)
    """Longest answer, in tokens."""
    familiar_ratio: float = Field(default=1.1, gt=0)
    """Loss ratio at or below which the data counts as familiar."""
    unfamiliar_ratio: float = Field(default=1.5, gt=0)
    """Loss ratio at or above which the data counts as new to the model."""
    known_accuracy: float = Field(default=0.5, ge=0, le=1)
    """Answer accuracy at or above which the model already knows the content."""
    unknown_accuracy: float = Field(default=0.15, ge=0, le=1)
    """Answer accuracy at or below which the model does not know the content."""
    out: str | None = None
    """Also write the result as JSON to this file."""


def content_words(text: str) -> set[str]:
    """Lower-cased words and numbers of ``text``, without stopwords."""
    return {word for word in re.findall(r"[a-z0-9]+", text.lower()) if word not in STOPWORDS}


def answer_is_right(question: str, reference: str, answer: str) -> bool | None:
    """Whether ``answer`` carries at least half of what ``reference`` adds to ``question``.

    None when the reference adds nothing beyond the question (then the example cannot be checked).
    """
    key = content_words(reference) - content_words(question)
    if not key:
        return None
    return len(key & content_words(answer)) >= len(key) / 2


def is_question_answer(example: Example, max_answer_words: int = 25) -> bool:
    """One question, one short answer: the shape a knowledge check makes sense for."""
    roles = [message["role"] for message in example.messages]
    if roles[-2:] != ["user", "assistant"] or roles.count("assistant") != 1:
        return False
    question, answer = example.messages[-2]["content"], example.messages[-1]["content"]
    return question.rstrip().endswith("?") and len(answer.split()) <= max_answer_words


@dataclass
class PreflightResult:
    """What preflight found and what it recommends."""

    response_loss: float
    """Mean next-token loss (nats) on the responses."""
    reference_loss: float
    """Mean next-token loss on held-out prose."""
    loss_ratio: float
    """response_loss / reference_loss."""
    question_answer_shaped: bool
    """Whether most examples are a question with a short answer."""
    answer_accuracy: float | None
    """Share of sampled questions the model answered right (None when not checked)."""
    n_examples: int
    """Examples measured."""
    recommendation: Recommendation
    """lora_is_enough, continued_pretraining_first or full_finetuning_overwrites."""
    reasons: list[str] = field(default_factory=list)
    """Why, in sentences."""


def recommend(ratio: float, accuracy: float | None, config: PreflightConfig) -> tuple[Recommendation, list[str]]:
    """Turn the two measurements into a recommendation with its reasons."""
    reasons = [f"the responses' loss is {ratio:.2f}x that of held-out prose"]
    if accuracy is not None:
        reasons.append(f"the base model answers {accuracy:.0%} of the sampled questions")
        known, unknown = accuracy >= config.known_accuracy, accuracy <= config.unknown_accuracy
    else:
        known, unknown = ratio <= config.familiar_ratio, ratio >= config.unfamiliar_ratio
    if known:
        reasons.append(
            "the model already knows this content, so tuning mostly teaches format and style: LoRA is enough, "
            "and full fine-tuning would shift the model further for no gain"
        )
        return "lora_is_enough", reasons
    if unknown:
        reasons.append(
            "the content is new to the model: LoRA instruction tuning learns the answer format but not the "
            "facts (near-chance answers), so continue pre-training on the domain first"
        )
        return "continued_pretraining_first", reasons
    reasons.append(
        "the content is partly new: full fine-tuning will pull the model toward it and overwrite some of what "
        "it knows; prefer LoRA and check forgetting with `tunescope probe`"
    )
    return "full_finetuning_overwrites", reasons


def _answer_accuracy(model: Any, tokenizer: Any, examples: list[Example], config: PreflightConfig) -> float | None:
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
            verdict = answer_is_right(example.messages[-2]["content"], example.messages[-1]["content"], answer)
            if verdict is not None:
                verdicts.append(verdict)
    return sum(verdicts) / len(verdicts) if verdicts else None


def preflight(config: PreflightConfig) -> PreflightResult:
    """Measure the base model's familiarity with ``config.data`` and recommend how to tune."""
    loaded = load_examples(config.model_copy(update={"subset_size": None}))
    examples = nested_subset(loaded.examples, min(config.sample_size, len(loaded.examples)), config.subset_seed)
    tokenizer = load_tokenizer(config.model, trust_remote_code=config.trust_remote_code)
    apply_template_choice(tokenizer, config.template)
    model = load_model(config.model, trust_remote_code=config.trust_remote_code).eval()

    tokenized = [t for t in tokenize_examples(tokenizer, examples, max_length=config.max_length) if t.trained_tokens]
    loss = response_loss(model, tokenized, tokenizer.pad_token_id)
    reference = mean_token_loss(model, tokenizer, heldout_passages(config.reference_passages), config.max_length)
    shaped = statistics.fmean(is_question_answer(example) for example in examples) >= 0.5
    accuracy = None
    if shaped and config.questions:
        askable = [example for example in examples if is_question_answer(example)][: config.questions]
        accuracy = _answer_accuracy(model, tokenizer, askable, config)
    ratio = loss / reference
    recommendation, reasons = recommend(ratio, accuracy, config)
    result = PreflightResult(loss, reference, ratio, shaped, accuracy, len(examples), recommendation, reasons)
    if config.out:
        write_json(config.out, {"model": config.model, "data": loaded.source, **asdict(result)})
    return result
