"""The responses file: one record per answered prompt, written by `tunescope generate`, read by every later stage.

:class:`ResponseRecord` is the record; :meth:`ResponseRecord.from_fields` is the one parser of a
record and :meth:`ResponseRecord.to_fields` the one writer, so a field added to the record reaches
generate, shift, borrow and the judge at once. Besides what `tunescope generate` writes, the parser
accepts the shapes people already have answers in: just-eval's input (``instruction``, optional
``input`` and ``system``, ``output``, ``generator``) and judged records (``input``,
``output_cand``, ``generator_cand``), ShareGPT ``conversations``, ``prompt``/``completion``, and
text-only records without token ids. Stages check what they need themselves (shift needs a prompt
and a response it can tokenize, the judge a prompt and an answer text).

:class:`ResponseFile` is the file `tunescope generate` grows: each batch of records is appended
with one write and flushed to disk. After a crash the file may end with part of a line; reading it
drops that fragment (the response is generated again), so every line is always a complete record.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from tunescope.data.formats import Message, to_messages
from tunescope.data.readers import read_dataset
from tunescope.errors import UserError

OUTPUT_FIELDS = ("output", "output_cand", "response", "completion")
"""Fields read as the response text, in order of preference (generate, just-eval's judged records, others)."""
MODEL_FIELDS = ("generator", "generator_cand", "model")
"""Fields read as the name of the model that wrote the response, in order of preference."""
TAG_FIELDS = ("tags", "task_tags", "category")
"""Fields read as task tags, in order of preference."""

_NEVER_WRITTEN = {"written": "never"}
"""Metadata of a field that says where a record was read, not what it holds."""
_WRITTEN_WHEN_SET = {"written": "when_set"}
"""Metadata of a field that `tunescope generate` has no value for: written only when it has one."""


@dataclass(frozen=True)
class ResponseRecord:
    """One response to one prompt, with the token ids it was generated from when they are known.

    The fields up to ``generation`` are written by `tunescope generate` in this order.
    """

    id: str
    """The prompt's id: the record's ``id``, or its 0-based row number."""
    instruction: str | None
    """The last user turn (a record's own ``instruction`` field wins), which AlignTDS's and raw base prompts wrap."""
    messages: list[Message] | None
    """The conversation before the response (system, user and earlier assistant turns)."""
    reference: str | None
    """The dataset's own answer to the prompt, kept apart from ``messages``."""
    prompt: str | None
    """The prompt as rendered with the chat template."""
    prompt_token_ids: list[int] | None
    """The prompt's token ids, as the model read them."""
    output_token_ids: list[int] | None
    """The response's token ids, as generated (up to and including a stop token)."""
    output: str | None
    """The response text (untrusted model output)."""
    finish_reason: str | None
    """``stop`` (a stop token ended it) or ``length`` (cut by the token limit), when recorded."""
    model: str | None
    """The model that wrote the response."""
    generation: dict[str, Any] | None = None
    """How the response was generated (decoding settings), when recorded."""
    tags: tuple[str, ...] = field(default=(), metadata=_WRITTEN_WHEN_SET)
    """Task tags, for per-tag breakdowns."""
    index: int = field(default=0, compare=False, metadata=_NEVER_WRITTEN)
    """0-based position of the record in its file."""
    locator: str = field(default="", compare=False, metadata=_NEVER_WRITTEN)
    """Where the record was read, for error messages (e.g. ``responses.jsonl line 3``)."""

    @classmethod
    def from_fields(cls, raw: dict[str, Any], row: int, locator: str) -> ResponseRecord:
        """Parse one record of any accepted shape (see the module docstring).

        A trailing assistant turn is the response when the record has no response field of its own,
        and the dataset's answer otherwise; either way it is not part of ``messages``.

        Raises:
            UserError: naming ``locator`` and the field that has the wrong type.
        """
        messages = _prompt_turns(raw, locator)
        output = _output(raw, locator)
        while messages and messages[-1]["role"] == "assistant":
            output = output if output is not None else messages[-1]["content"]
            messages = messages[:-1]
        instruction = raw.get("instruction")
        if instruction is not None and not isinstance(instruction, str):
            raise UserError(f"{locator}: field 'instruction' must be a string")
        if instruction is None and messages:
            instruction = next((m["content"] for m in reversed(messages) if m["role"] == "user"), None)
        return cls(
            id=str(raw["id"]) if raw.get("id") is not None else str(row),
            instruction=instruction,
            messages=messages,
            reference=_text_or_none(raw, "reference"),
            prompt=_text_or_none(raw, "prompt"),
            prompt_token_ids=_token_ids(raw, "prompt_token_ids", locator),
            output_token_ids=_token_ids(raw, "output_token_ids", locator),
            output=output,
            finish_reason=_text_or_none(raw, "finish_reason"),
            model=next((raw[key] for key in MODEL_FIELDS if isinstance(raw.get(key), str)), None),
            generation=raw["generation"] if isinstance(raw.get("generation"), dict) else None,
            tags=_tags(raw, locator),
            index=row,
            locator=locator,
        )

    def to_fields(self) -> dict[str, Any]:
        """The record as one JSON object of the responses file, in field order."""
        out: dict[str, Any] = {}
        for spec in fields(self):
            value = getattr(self, spec.name)
            written = spec.metadata.get("written", "always")
            if written == "never" or (written == "when_set" and not value):
                continue
            out[spec.name] = list(value) if isinstance(value, tuple) else value
        return out


def _prompt_turns(raw: dict[str, Any], locator: str) -> list[Message] | None:
    """The prompt conversation from the first field that holds one, or None when none does."""
    if raw.get("messages") is not None:
        return to_messages(raw, "messages", locator)
    if raw.get("conversations") is not None:
        return to_messages(raw, "sharegpt", locator)
    if raw.get("instruction") is not None:
        return to_messages({**raw, "output": None}, "alpaca", locator, require_response=False)
    if isinstance(raw.get("input"), str):  # just-eval's judged records
        return [{"role": "user", "content": raw["input"]}]
    if raw.get("prompt") is not None:
        return to_messages({**raw, "completion": None}, "prompt_completion", locator, require_response=False)
    return None


def _output(raw: dict[str, Any], locator: str) -> str | None:
    name = next((name for name in OUTPUT_FIELDS if raw.get(name) is not None), None)
    if name is None:
        return None
    value = raw[name]
    if isinstance(value, list) and value and all(isinstance(item, str) for item in value):
        value = value[0]  # URIAL/AlignTDS files hold a list of sampled outputs
    if not isinstance(value, str):
        raise UserError(f"{locator}: field '{name}' must be a string, got {type(value).__name__}")
    return value


def _text_or_none(raw: dict[str, Any], name: str) -> str | None:
    """A text field's value; None when absent or not text (``prompt`` may also be a list of messages)."""
    value = raw.get(name)
    return value if isinstance(value, str) else None


def _token_ids(raw: dict[str, Any], name: str, locator: str) -> list[int] | None:
    value = raw.get(name)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise UserError(f"{locator}: field '{name}' must be a list of integer token ids")
    return value


def _tags(raw: dict[str, Any], locator: str) -> tuple[str, ...]:
    for name in TAG_FIELDS:
        value = raw.get(name)
        if value is None:
            continue
        if isinstance(value, str):
            return tuple(tag.strip() for tag in value.split(",") if tag.strip())
        if isinstance(value, list) and all(isinstance(tag, str) for tag in value):
            return tuple(value)
        raise UserError(f"{locator}: field '{name}' must be a string or a list of strings")
    return ()


def read_responses(path: str | Path) -> list[ResponseRecord]:
    """Read a responses file (.jsonl, a .json list as just-eval writes, or .parquet), in file order.

    Raises:
        UserError: for a missing or empty file, a malformed record, or a repeated id, naming the
            file and line.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"{path}: responses file not found")
    if path.suffix == ".txt":  # the data readers take .txt as documents for continued pre-training
        raise UserError(f"{path}: unknown responses file type (expected .jsonl, .json or .parquet)")
    records: list[ResponseRecord] = []
    seen: dict[str, str] = {}
    for raw in read_dataset(str(path)).records:
        record = ResponseRecord.from_fields(raw.fields, raw.row, raw.locator)
        if record.id in seen:
            raise UserError(f"{raw.locator}: repeats id '{record.id}' (first at {seen[record.id]})")
        seen[record.id] = raw.locator
        records.append(record)
    if not records:
        raise UserError(f"{path}: no responses in the file")
    return records


class ResponseFile:
    """The JSON-lines responses file `tunescope generate` appends to, keyed by ``id``."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def load(self) -> list[ResponseRecord]:
        """The complete records already in the file, after cutting off an interrupted last line.

        Raises:
            UserError: for a line that is not a JSON object with an ``id``.
        """
        if not self.path.exists():
            return []
        if not self.path.is_file():
            raise UserError(f"--out {self.path}: exists and is not a file")
        data = self.path.read_bytes()
        complete = data[: data.rfind(b"\n") + 1]
        if len(complete) < len(data):
            warnings.warn(f"{self.path}: dropped an incomplete last line (an interrupted run)", stacklevel=2)
            os.truncate(self.path, len(complete))
        records = []
        for number, line in enumerate(complete.decode("utf-8", errors="replace").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
            except json.JSONDecodeError as err:
                raise UserError(f"{self.path} line {number}: invalid JSON ({err.msg}); not a responses file?") from None
            if not isinstance(raw, dict) or "id" not in raw:
                raise UserError(f"{self.path} line {number}: not a response record (no 'id')")
            records.append(ResponseRecord.from_fields(raw, len(records), f"{self.path} line {number}"))
        return records

    def append(self, records: list[ResponseRecord]) -> None:
        """Add ``records`` at the end of the file and flush them to disk."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(response_lines(records))
            handle.flush()
            os.fsync(handle.fileno())


def response_lines(records: list[ResponseRecord]) -> str:
    """``records`` as lines of a responses file."""
    return "".join(json.dumps(record.to_fields(), ensure_ascii=False) + "\n" for record in records)
