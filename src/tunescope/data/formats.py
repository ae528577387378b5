"""Recognise the four instruction-data shapes people already have and turn each into messages.

Shapes (as in LLaMA-Factory, axolotl and TRL):

* ``alpaca``: ``instruction``, optional ``input``, ``output`` (optional ``system``);
* ``sharegpt``: ``conversations`` of ``{"from", "value"}`` turns;
* ``messages``: OpenAI-style ``{"role", "content"}`` turns;
* ``prompt_completion``: ``prompt`` and ``completion``, each a string or a list of messages;
* ``text``: a ``text`` field holding a document, for continued pre-training (no conversation).

Everything downstream sees only ``messages``, or for ``text`` only the document (:func:`to_document`).
Where only prompts are needed (generation), the answer is optional: ``{"instruction": ...}``
(AlpacaEval's and just-eval's prompt files), ``{"prompt": ...}``, or a conversation that ends with a
user turn; an answer that is there becomes the final assistant turn, which generation keeps as the
reference.
"""

from __future__ import annotations

from typing import Any, Literal

from tunescope.errors import UserError

DataFormat = Literal["auto", "alpaca", "sharegpt", "messages", "prompt_completion", "text"]
Message = dict[str, str]

# Which fields identify a shape, in the order detection tries them: the prompt's field is enough,
# so that a file of prompts is recognised too (and a training record without its answer is told so).
SIGNATURES: dict[str, tuple[str, ...]] = {
    "messages": ("messages",),
    "sharegpt": ("conversations",),
    "alpaca": ("instruction",),
    "prompt_completion": ("prompt",),
    "text": ("text",),
}
ANSWER_FIELDS = {"alpaca": "output", "prompt_completion": "completion"}
"""The answer's field in the shapes that keep it apart from the prompt."""

SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "chatgpt": "assistant",
    "bard": "assistant",
    "bing": "assistant",
    "model": "assistant",
    "system": "system",
}
ROLES = ("system", "user", "assistant")


def detect_format(fields: dict[str, Any], locator: str) -> str:
    """Return the shape whose identifying fields ``fields`` has.

    Raises:
        UserError: when no shape matches.
    """
    for name, required in SIGNATURES.items():
        if all(key in fields for key in required):
            return name
    raise UserError(
        f"{locator}: cannot detect the data format from fields [{', '.join(map(str, fields))}] (expected messages, "
        "conversations, instruction with optional input and output, or prompt with optional completion); pass --format"
    )


def to_messages(
    fields: dict[str, Any], data_format: str, locator: str, *, require_response: bool = True
) -> list[Message]:
    """Normalise one record of shape ``data_format`` to a list of role/content messages.

    Args:
        fields: The record.
        data_format: Its shape (see the module docstring).
        locator: Where the record is, for messages.
        require_response: Whether an alpaca ``output`` or a ``completion`` must be there (training);
            without one the messages end with the prompt.

    Raises:
        UserError: naming the record and the missing or malformed field.
    """
    if data_format == "alpaca":
        return _from_alpaca(fields, locator, require_response)
    if data_format == "sharegpt":
        return _from_turns(_require(fields, "conversations", locator), locator, "conversations", "from", "value")
    if data_format == "messages":
        return _from_turns(_require(fields, "messages", locator), locator, "messages", "role", "content")
    if data_format == "prompt_completion":
        prompt = _as_turns(_require(fields, "prompt", locator), "user", locator, "prompt")
        if fields.get("completion") is None and not require_response:
            return prompt
        completion = _as_turns(_require_answer(fields, "completion", locator), "assistant", locator, "completion")
        return prompt + completion
    if data_format == "text":
        raise UserError(f"{locator}: text records are documents for continued pre-training, not conversations")
    raise UserError(f"unknown data format '{data_format}' (expected one of {', '.join(SIGNATURES)})")


def to_document(fields: dict[str, Any], locator: str) -> str:
    """The document of one ``text`` record, stripped of surrounding whitespace (empty when it holds none).

    Raises:
        UserError: naming the record when it has no ``text`` field or the field is not a string.
    """
    return _text(_require(fields, "text", locator), locator, "text").strip()


def _require(fields: dict[str, Any], name: str, locator: str) -> Any:
    if name not in fields or fields[name] is None:
        raise UserError(f"{locator}: record is missing field '{name}'")
    return fields[name]


def _require_answer(fields: dict[str, Any], name: str, locator: str) -> Any:
    if fields.get(name) is None:
        raise UserError(
            f"{locator}: record is missing field '{name}', its answer; this command needs an answer in every "
            "record (prompts alone are for `tunescope generate`)"
        )
    return fields[name]


def _text(value: Any, locator: str, name: str) -> str:
    if not isinstance(value, str):
        raise UserError(f"{locator}: field '{name}' must be a string, got {type(value).__name__}")
    return value


def _from_alpaca(fields: dict[str, Any], locator: str, require_response: bool) -> list[Message]:
    instruction = _text(_require(fields, "instruction", locator), locator, "instruction")
    extra = fields.get("input") or ""
    user = f"{instruction}\n\n{_text(extra, locator, 'input')}" if extra else instruction
    messages = (
        [{"role": "system", "content": _text(fields["system"], locator, "system")}] if fields.get("system") else []
    )
    messages.append({"role": "user", "content": user})
    if fields.get("output") is None and not require_response:
        return messages
    output = _text(_require_answer(fields, "output", locator), locator, "output")
    return [*messages, {"role": "assistant", "content": output}]


def _from_turns(turns: Any, locator: str, name: str, role_key: str, text_key: str) -> list[Message]:
    if not isinstance(turns, list) or not turns:
        raise UserError(f"{locator}: field '{name}' must be a non-empty list of turns")
    messages = []
    for index, turn in enumerate(turns):
        where = f"{name}[{index}]"
        if not isinstance(turn, dict):
            raise UserError(f"{locator}: {where} must be an object with '{role_key}' and '{text_key}'")
        for key in (role_key, text_key):
            if key not in turn:
                raise UserError(f"{locator}: {where} is missing field '{key}'")
        role = SHAREGPT_ROLES.get(str(turn[role_key]).lower()) if role_key == "from" else turn[role_key]
        if role not in ROLES:
            raise UserError(f"{locator}: {where} has unknown role {turn[role_key]!r}")
        messages.append({"role": role, "content": _text(turn[text_key], locator, f"{where}.{text_key}")})
    return messages


def _as_turns(value: Any, role: str, locator: str, name: str) -> list[Message]:
    if isinstance(value, str):
        return [{"role": role, "content": value}]
    return _from_turns(value, locator, name, "role", "content")
