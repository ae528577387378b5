"""Read the answers to be judged: `tunescope generate` output, or just-eval's formats.

Accepted record shapes (extra fields are ignored):

* `tunescope generate`: ``id``, ``messages`` (the prompt conversation), ``output``; optional
  ``output_token_ids``, ``generator``/``model``;
* just-eval's input: ``id``, ``instruction`` (optional ``input``, ``system``), ``output``,
  ``generator``;
* just-eval's judged records: ``id``, ``input`` (the instruction), ``output_cand``,
  ``generator_cand``, so published outputs can be judged again;
* ``prompt``/``output`` (the prompt a string or a list of messages).

Task tags for the per-tag breakdown come from the first of ``tags``, ``task_tags``, ``category``
that a record has (a list, or a comma-separated string).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunescope.data.formats import Message, to_messages
from tunescope.data.readers import RawRecord, read_dataset
from tunescope.errors import UserError

TAG_FIELDS = ("tags", "task_tags", "category")
"""Record fields read as task tags, in order of preference."""
_OUTPUT_FIELDS = ("output", "output_cand", "response", "completion")
_GENERATOR_FIELDS = ("generator", "generator_cand", "model")


@dataclass(frozen=True)
class Response:
    """One answer to judge, with the conversation it answers."""

    id: str
    """The record's ``id``, or its 0-based row number."""
    conversation: list[Message]
    """The prompt turns (system/user/assistant) up to the answer."""
    output: str
    """The answer text (untrusted model output)."""
    generator: str | None
    """The model that wrote it, when the record says."""
    tags: tuple[str, ...]
    """Task tags, for the per-tag breakdown."""
    output_tokens: int | None
    """Length of the answer in tokens, when the record carries its token ids."""
    locator: str
    """Where the record came from, for messages to the user."""

    @property
    def words(self) -> int:
        """Length of the answer in whitespace-separated words (just-eval's length measure)."""
        return len(self.output.split())


@dataclass(frozen=True)
class ResponseSet:
    """All answers of one file: one model's answers to an evaluation set."""

    label: str
    """Name of the model in reports."""
    path: str
    """The file the answers came from."""
    fingerprint: str
    """SHA-256 of the file."""
    responses: list[Response]
    """The answers, in file order."""

    def by_id(self) -> dict[str, Response]:
        """The answers keyed by id."""
        return {response.id: response for response in self.responses}


def _conversation(fields: dict[str, Any], locator: str) -> list[Message]:
    if "messages" in fields:
        turns = to_messages(fields, "messages", locator)
    elif "conversations" in fields:
        turns = to_messages(fields, "sharegpt", locator)
    elif "instruction" in fields:
        turns = to_messages({**fields, "output": ""}, "alpaca", locator)
    elif isinstance(fields.get("input"), str):  # just-eval's judged records
        turns = [{"role": "user", "content": fields["input"]}]
    elif "prompt" in fields:
        turns = to_messages({**fields, "completion": ""}, "prompt_completion", locator)
    else:
        raise UserError(
            f"{locator}: no prompt: expected one of the fields messages, conversations, instruction, input, prompt"
        )
    # The answer being judged is `output`; a trailing assistant turn is the dataset's own answer.
    while turns and turns[-1]["role"] == "assistant":
        turns = turns[:-1]
    if not turns:
        raise UserError(f"{locator}: the prompt has no user turn")
    return turns


def _tags(fields: dict[str, Any], locator: str) -> tuple[str, ...]:
    for name in TAG_FIELDS:
        value = fields.get(name)
        if value is None:
            continue
        if isinstance(value, str):
            return tuple(tag.strip() for tag in value.split(",") if tag.strip())
        if isinstance(value, list) and all(isinstance(tag, str) for tag in value):
            return tuple(value)
        raise UserError(f"{locator}: field '{name}' must be a string or a list of strings")
    return ()


def _response(record: RawRecord) -> Response:
    fields, locator = record.fields, record.locator
    name = next((name for name in _OUTPUT_FIELDS if name in fields), None)
    if name is None:
        raise UserError(f"{locator}: record is missing field 'output' (the answer to judge)")
    output = fields[name]
    if not isinstance(output, str):
        raise UserError(f"{locator}: field '{name}' must be a string, got {type(output).__name__}")
    generator = next((fields[key] for key in _GENERATOR_FIELDS if isinstance(fields.get(key), str)), None)
    token_ids = fields.get("output_token_ids")
    return Response(
        id=str(fields["id"]) if fields.get("id") is not None else str(record.row),
        conversation=_conversation(fields, locator),
        output=output,
        generator=generator,
        tags=_tags(fields, locator),
        output_tokens=len(token_ids) if isinstance(token_ids, list) else None,
        locator=locator,
    )


def read_responses(path: str | Path, label: str | None = None) -> ResponseSet:
    """Read one file of answers (.jsonl, or a .json list as just-eval writes).

    Args:
        path: The file.
        label: The model's name in reports; by default the records' common ``generator``, else
            the file name without its suffix.

    Raises:
        UserError: for a missing or malformed file, a record without prompt or answer, or two
            records with the same id.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"{path}: responses file not found")
    raw = read_dataset(str(path))
    if not raw.records:
        raise UserError(f"{path}: no responses in the file")
    responses: list[Response] = []
    seen: dict[str, str] = {}
    for record in raw.records:
        response = _response(record)
        if response.id in seen:
            raise UserError(f"{response.locator}: duplicate id {response.id!r} (also at {seen[response.id]})")
        seen[response.id] = response.locator
        responses.append(response)
    if label is None:
        generators = {response.generator for response in responses}
        label = generators.pop() if len(generators) == 1 and None not in generators else path.stem
    return ResponseSet(str(label), str(path), raw.fingerprint, responses)


def read_response_sets(paths: list[str], labels: list[str] | None = None) -> list[ResponseSet]:
    """Read several files, one per model, with distinct labels.

    Raises:
        UserError: when the number of labels does not match, or two files end up with one label.
    """
    if labels is not None and len(labels) != len(paths):
        raise UserError(f"--labels: {len(labels)} labels for {len(paths)} responses files")
    sets = [read_responses(path, labels[index] if labels else None) for index, path in enumerate(paths)]
    names = [response_set.label for response_set in sets]
    if len(set(names)) != len(names):
        if labels is None:
            # runs/lora/responses.jsonl and runs/full/responses.jsonl: the directory tells them apart.
            sets = [
                ResponseSet(f"{Path(s.path).parent.name}/{Path(s.path).stem}", s.path, s.fingerprint, s.responses)
                for s in sets
            ]
            names = [response_set.label for response_set in sets]
        if len(set(names)) != len(names):
            raise UserError(f"--responses: two files would both be called {names!r}; name them with --labels")
    return sets
