"""What each model reads: responses from a file, turned into identical response token ids for both.

A record that carries ``prompt_token_ids`` and ``output_token_ids`` (as `tunescope generate`
writes) is used verbatim. Otherwise the ids are built from text with the tuned model's chat
template (the record's prompt conversation and ``output``), and what was built is recorded. The
base model reads the same response ids after a prompt of its own (see ``BasePrompt``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from tunescope.data.templates import apply_template_choice, render_prompt
from tunescope.errors import UserError
from tunescope.generate.store import ResponseRecord
from tunescope.generate.store import read_responses as read_response_records
from tunescope.shift.aligntds import QUERY_TEMPLATE
from tunescope.shift.config import BasePrompt


@dataclass(frozen=True)
class ShiftInput:
    """The token ids both models read for one response."""

    example_id: str
    """The record's id."""
    index: int
    """0-based position in the responses file."""
    tuned_prompt_ids: list[int]
    """What the tuned model reads before the response."""
    base_prompt_ids: list[int]
    """What the base model reads before the response."""
    response_ids: list[int]
    """The response, identical for both models; one scored position per id."""
    ids_source: Literal["record", "built"]
    """Whether the ids came verbatim from the record or were built from its text."""


def check_record(record: ResponseRecord) -> None:
    """Fail unless both models can be given ``record``: token ids of prompt and response, or texts to build them from.

    Raises:
        UserError: naming the record's file and line and what it lacks.
    """
    where = record.locator
    if record.prompt_token_ids is None and record.output_token_ids is not None:
        raise UserError(f"{where}: has 'output_token_ids' but not 'prompt_token_ids'; give both or neither")
    if record.prompt_token_ids is not None and record.output_token_ids is None:
        raise UserError(f"{where}: has 'prompt_token_ids' but not 'output_token_ids'; give both or neither")
    if record.output_token_ids is None:
        if record.output is None:
            raise UserError(f"{where}: no response: needs 'output_token_ids' or an 'output' text")
        if not record.messages:
            raise UserError(f"{where}: no prompt: needs 'prompt_token_ids', 'messages' or 'instruction'")


def read_responses(path: str | Path) -> list[ResponseRecord]:
    """Read a responses file (see :mod:`tunescope.generate.store`) and check that every record can be scored.

    Raises:
        UserError: naming the file and line of a malformed record or a repeated id.
    """
    records = read_response_records(path)
    for record in records:
        check_record(record)
    return records


def base_prompt_text(instruction: str, style: BasePrompt) -> str:
    """The base model's prompt text for the 'aligntds' and 'raw' styles."""
    if style == "aligntds":
        return QUERY_TEMPLATE.format(instruction=instruction)
    return instruction + "\n"


def build_inputs(
    records: list[ResponseRecord],
    tuned_tokenizer: Any,
    base_tokenizer: Any,
    *,
    vocab_size: int,
    base_prompt: BasePrompt,
    template: str | None,
    include_stop_token: bool,
) -> list[ShiftInput]:
    """Token ids for both models, one ``ShiftInput`` per non-empty response.

    Args:
        records: Parsed responses.
        tuned_tokenizer: Builds prompts and responses given as text.
        base_tokenizer: Encodes the base prompt in the 'aligntds' and 'raw' styles (with the
            tokenizer's own special tokens, e.g. one BOS).
        vocab_size: Ids must be below this.
        base_prompt: What the base model reads before the response.
        template: Chat-template choice for records given as text.
        include_stop_token: Keep a response's final special token as a scored position.

    Raises:
        UserError: for ids outside the vocabulary, an empty prompt, or a record the base-prompt
            style cannot serve.
    """
    template_ready = False
    special_ids = set(tuned_tokenizer.all_special_ids)
    inputs = []
    for record in records:
        if record.output_token_ids is not None:
            prompt_ids, response_ids, source = (
                list(record.prompt_token_ids or []),
                list(record.output_token_ids),
                "record",
            )
        else:
            if not template_ready:
                apply_template_choice(tuned_tokenizer, template)
                template_ready = True
            prompt_text = render_prompt(tuned_tokenizer, record.messages or [])
            prompt_ids = tuned_tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
            response_ids = tuned_tokenizer(record.output or "", add_special_tokens=False)["input_ids"]
            source = "built"
        if response_ids and response_ids[-1] in special_ids and not include_stop_token:
            response_ids = response_ids[:-1]
        if not response_ids:
            continue
        if base_prompt == "same":
            base_ids = prompt_ids
        else:
            if record.instruction is None:
                raise UserError(
                    f"{record.locator}: --base-prompt {base_prompt} needs an 'instruction' or a user message"
                )
            base_ids = base_tokenizer(base_prompt_text(record.instruction, base_prompt))["input_ids"]
        for name, ids in (("prompt", prompt_ids), ("base prompt", base_ids)):
            if not ids:
                raise UserError(f"{record.locator}: the {name} is empty; nothing predicts the first response token")
        for ids in (prompt_ids, response_ids, base_ids):
            if (bad := next((i for i in ids if not 0 <= i < vocab_size), None)) is not None:
                raise UserError(f"{record.locator}: token id {bad} is outside the vocabulary ({vocab_size} tokens)")
        inputs.append(ShiftInput(record.id, record.index, prompt_ids, base_ids, response_ids, source))
    return inputs
