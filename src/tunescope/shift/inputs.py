"""What each model reads: responses from a file, turned into identical response token ids for both.

A record that carries ``prompt_token_ids`` and ``output_token_ids`` (as `tunescope generate`
writes) is used verbatim. Otherwise the ids are built from text with the tuned model's chat
template (``messages`` or ``instruction``, and ``output``), and what was built is recorded. The
base model reads the same response ids after a prompt of its own (see ``BasePrompt``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from tunescope.data.formats import Message, to_messages
from tunescope.data.readers import read_dataset
from tunescope.data.templates import apply_template_choice, render_prompt
from tunescope.errors import UserError
from tunescope.shift.aligntds import QUERY_TEMPLATE
from tunescope.shift.config import BasePrompt


@dataclass(frozen=True)
class ResponseRecord:
    """One response as read from the file, before tokenization."""

    example_id: str
    """The record's ``id``, or its 0-based row number."""
    index: int
    """0-based position in the file."""
    locator: str
    """Where the record is, for error messages."""
    messages: list[Message] | None
    """The conversation before the response."""
    instruction: str | None
    """The last user turn, which AlignTDS's and the raw base prompts wrap."""
    output: str | None
    """The response text."""
    prompt_token_ids: list[int] | None
    """The tuned model's prompt ids, as generated."""
    output_token_ids: list[int] | None
    """The response ids, as generated."""
    generation: dict[str, Any] | None = None
    """How the response was generated, when the record says."""


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


def _token_ids(fields: dict[str, Any], name: str, locator: str) -> list[int] | None:
    value = fields.get(name)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise UserError(f"{locator}: field '{name}' must be a list of integer token ids")
    return value


def _parse(fields: dict[str, Any], row: int, locator: str) -> ResponseRecord:
    example_id = str(fields["id"]) if fields.get("id") is not None else str(row)
    prompt_ids = _token_ids(fields, "prompt_token_ids", locator)
    output_ids = _token_ids(fields, "output_token_ids", locator)
    if prompt_ids is None and output_ids is not None:
        raise UserError(f"{locator}: has 'output_token_ids' but not 'prompt_token_ids'; give both or neither")
    if prompt_ids is not None and output_ids is None:
        raise UserError(f"{locator}: has 'prompt_token_ids' but not 'output_token_ids'; give both or neither")

    messages = to_messages(fields, "messages", locator) if fields.get("messages") is not None else None
    output = fields.get("output")
    if isinstance(output, list) and output and all(isinstance(o, str) for o in output):
        output = output[0]  # URIAL/AlignTDS files hold a list of sampled outputs
    if output is not None and not isinstance(output, str):
        raise UserError(f"{locator}: field 'output' must be a string")
    if messages and messages[-1]["role"] == "assistant":
        output = output if output is not None else messages[-1]["content"]
        messages = messages[:-1]
    instruction = fields.get("instruction")
    if instruction is not None and not isinstance(instruction, str):
        raise UserError(f"{locator}: field 'instruction' must be a string")
    if instruction is None and messages:
        instruction = next((m["content"] for m in reversed(messages) if m["role"] == "user"), None)
    if messages is None and instruction is not None:
        messages = [{"role": "user", "content": instruction}]

    if output_ids is None:
        if output is None:
            raise UserError(f"{locator}: no response: needs 'output_token_ids' or an 'output' text")
        if not messages:
            raise UserError(f"{locator}: no prompt: needs 'prompt_token_ids', 'messages' or 'instruction'")
    generation = fields.get("generation") if isinstance(fields.get("generation"), dict) else None
    return ResponseRecord(example_id, row, locator, messages, instruction, output, prompt_ids, output_ids, generation)


def read_responses(path: str | Path) -> list[ResponseRecord]:
    """Read and check a responses file (.jsonl, .json or .parquet).

    Raises:
        UserError: naming the file and line of a malformed record or a repeated id.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"--responses {path}: file not found")
    raw = read_dataset(str(path))
    records: list[ResponseRecord] = []
    seen: dict[str, str] = {}
    for record in raw.records:
        parsed = _parse(record.fields, record.row, record.locator)
        if parsed.example_id in seen:
            raise UserError(f"{record.locator}: repeats id '{parsed.example_id}' (first at {seen[parsed.example_id]})")
        seen[parsed.example_id] = record.locator
        records.append(parsed)
    if not records:
        raise UserError(f"{path}: no responses")
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
        inputs.append(ShiftInput(record.example_id, record.index, prompt_ids, base_ids, response_ids, source))
    return inputs
