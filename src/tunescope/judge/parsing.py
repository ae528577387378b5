"""Turn a judge's raw reply into validated scores, repairing only obvious slips.

Pure functions, no I/O. The judge is asked for one JSON object (see
:func:`tunescope.judge.prompts.reply_schema`); what comes back is untrusted text. The parser:

1. finds the JSON object, repairing formatting slips that do not change what the judge said:
   code fences, prose around the object, trailing commas, typographic quotes, Python-style
   single quotes or ``True``/``None``, missing closing brackets at the end of a cut-off reply;
2. reads each aspect, accepting a score as ``4``, ``4.0``, ``"4"``, ``"4/5"`` or
   ``"4 out of 5"``, a flat ``{"clarity": 4}`` without a reason, keys in any case, and a
   choice as ``A``, ``"Output A"`` or ``"same"``;
3. records, per aspect, every value that still fails the schema as a failure of one kind, with
   nothing imputed: ``empty`` (no text at all), ``unparseable`` (no JSON object), ``missing``,
   ``na`` ("N/A", null, ...), ``out_of_range`` (a number outside 1-5), ``invalid`` (anything
   else).

just-eval turns "N/A" into 5.0 and an unparseable reply into nothing at all; here both are
counted and kept out of every mean. Each repair is named in the result so that a reader can see
how much cleaning a judge's output needed.

A dedicated JSON-repair library was considered and not used: such libraries turn almost any text
into *some* object (prose becomes an empty object, a truncated number becomes a value), which
would hide exactly the failures this module must count.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tunescope.judge.prompts import CHOICES, SCORE_RANGE

FAILURE_KINDS = ("empty", "unparseable", "missing", "na", "out_of_range", "invalid")
"""Why an aspect has no value; :data:`REQUEST_FAILURE` is added by the runner for transport errors."""
REQUEST_FAILURE = "request"
"""Failure kind of a request that never got a reply (after all retries)."""

_NA_STRINGS = {"n/a", "na", "n.a.", "none", "null", "nan", "", "-", "not applicable", "unknown"}
_SCORE_TEXT = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*(?:(?:/|out\s+of)\s*5(?:\.0)?)?\s*\.?\s*$", re.IGNORECASE)
_CHOICE_TEXT = re.compile(r"^\W*(?:(?:output|answer|response|assistant|model)\s*)?([ab])\W*$", re.IGNORECASE)
_TIE_WORDS = {"tie", "same", "equal", "both", "neither", "draw", "tied", "equally good"}
_FENCE = re.compile(r"```[a-zA-Z]*\s*\n?(.*?)```", re.DOTALL)
_TRAILING_COMMA = re.compile(r",(\s*[}\]])")
_REASON_KEYS = ("reason", "rationale", "explanation", "justification", "comment")
_SCORE_KEYS = ("score", "rating", "value", "grade")
_WRAPPER_KEYS = ("scores", "evaluation", "evaluations", "ratings", "result", "results", "aspects", "judgement")
_MAX_STARTS = 50  # braces tried as the start of the object; bounds the work on long replies
_MAX_CUTS = 50  # earlier commas tried when closing a cut-off reply
_DECODER = json.JSONDecoder()


@dataclass
class ParsedReply:
    """What could be read from one reply, aspect by aspect."""

    scores: dict[str, int] = field(default_factory=dict)
    """Valid 1-5 scores (score and safety modes)."""
    choices: dict[str, str] = field(default_factory=dict)
    """Valid ``A``/``B``/``tie`` choices (pairwise mode)."""
    reasons: dict[str, str] = field(default_factory=dict)
    """The judge's reason per aspect (``"overall"`` for the pairwise rationale)."""
    failures: dict[str, str] = field(default_factory=dict)
    """Aspect -> failure kind, for every aspect without a valid value."""
    repairs: list[str] = field(default_factory=list)
    """The formatting slips that were repaired, in the order they were found."""

    @property
    def status(self) -> str:
        """``ok`` (every aspect valid), ``partial`` or ``failed`` (none valid)."""
        if not self.failures:
            return "ok"
        return "failed" if not (self.scores or self.choices) else "partial"


# ------------------------------------------------------------------------------------------
# Finding the JSON object


def _close_brackets(text: str) -> str | None:
    """Append the closers a cut-off JSON text is missing, or None when it is not simply cut off.

    Only a text that ends right after a complete value (or inside a string) is closed: closing
    after a dangling key, a comma or a possibly cut number would invent what the judge never wrote.
    """
    stack: list[str] = []
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "{[":
            stack.append("}" if char == "{" else "]")
        elif char in "}]":
            if not stack or stack.pop() != char:
                return None
    if not stack:
        return None
    # Outside a string, the text must end on a closed value: after a comma or colon a value is
    # missing, and a number or word at the very end may itself be cut short ("1" of "10").
    if not in_string and text.rstrip()[-1:] not in ('"', "}", "]"):
        return None
    return text + ('"' if in_string else "") + "".join(reversed(stack))


def _decode_prefix(text: str) -> Any:
    """Decode the JSON value at the start of ``text``, ignoring whatever follows it."""
    try:
        return _DECODER.raw_decode(text)[0]
    except (json.JSONDecodeError, RecursionError):
        return None


def _mentions(obj: Any, keys: tuple[str, ...]) -> bool:
    return isinstance(obj, dict) and any(key in _normalised_keys(obj) for key in keys)


def extract_json_object(text: str, aspects: tuple[str, ...]) -> tuple[dict[str, Any] | None, list[str]]:
    """Find the judge's JSON object in a reply; return it (or None) and the repairs needed.

    The object is the first one that decodes and names an aspect (directly or inside a wrapper
    such as ``"scores"``); an inner ``{"reason": ..., "score": ...}`` alone is never taken for it.
    """
    repairs: list[str] = []
    body = text.strip()
    if fenced := _FENCE.search(body):
        body = fenced.group(1).strip()
        repairs.append("code fence removed")
    starts = [match.start() for match in re.finditer(r"\{", body)][:_MAX_STARTS]
    if not starts:
        return None, repairs
    wanted = aspects + _WRAPPER_KEYS
    for start in starts:
        try:
            obj, end = _DECODER.raw_decode(body, start)
        except (json.JSONDecodeError, RecursionError):
            continue
        if _mentions(obj, wanted):
            if body[:start].strip() or body[end:].strip():
                repairs.append("text around the JSON object removed")
            return obj, repairs
    if body[: starts[0]].strip():
        repairs.append("text around the JSON object removed")
    obj, fixes = _repair(body[starts[0] :])
    return (obj if isinstance(obj, dict) else None), repairs + fixes


def _repair(text: str) -> tuple[Any, list[str]]:
    """Try the known slips one after another, each on top of the previous ones."""
    fixes: list[str] = []
    if any(quote in text for quote in "\u201c\u201d"):
        text = text.replace("\u201c", '"').replace("\u201d", '"')
        fixes.append("typographic quotes replaced")
        if (parsed := _decode_prefix(text)) is not None:
            return parsed, fixes
    if _TRAILING_COMMA.search(text):
        text = _TRAILING_COMMA.sub(r"\1", text)
        fixes.append("trailing comma removed")
        if (parsed := _decode_prefix(text)) is not None:
            return parsed, fixes
    # Python literal syntax (single quotes, True/None): literal_eval evaluates literals only.
    end = text.rfind("}")
    try:
        parsed = ast.literal_eval(text[: end + 1]) if end > 0 else None
    except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
        parsed = None
    if isinstance(parsed, dict):
        return parsed, [*fixes, "Python-style literal read"]
    # A reply cut off by the token limit: keep what was complete. Cut back to the end of the
    # text, then to each earlier comma, until closing the open brackets gives valid JSON.
    cuts = [len(text)] + [index for index in range(len(text) - 1, 0, -1) if text[index] == ","][:_MAX_CUTS]
    for cut in cuts:
        closed = _close_brackets(text[:cut].rstrip())
        if closed is not None and (parsed := _decode_prefix(closed)) is not None:
            return parsed, [*fixes, "cut-off reply closed"]
    return None, fixes


# ------------------------------------------------------------------------------------------
# Reading values


def _normalised_keys(obj: dict[str, Any]) -> dict[str, Any]:
    return {str(key).strip().lower().replace(" ", "_"): value for key, value in obj.items()}


def _aspect_table(obj: dict[str, Any], aspects: tuple[str, ...], repairs: list[str]) -> dict[str, Any]:
    table = _normalised_keys(obj)
    if table.keys() != obj.keys():
        repairs.append("key case or spacing normalised")
    if not any(aspect in table for aspect in aspects):
        # {"scores": {...}}: the object the judge meant, one level down.
        for key in _WRAPPER_KEYS:
            inner = table.get(key)
            if isinstance(inner, dict) and any(aspect in _normalised_keys(inner) for aspect in aspects):
                repairs.append(f"aspects read from inside '{key}'")
                return {**table, **_normalised_keys(inner)}
    return table


def _is_na(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip().lower() in _NA_STRINGS)


def read_score(value: Any) -> tuple[int | None, str | None, bool]:
    """Read one score: ``(score, failure kind, repaired)``; exactly one of the first two is set."""
    low, high = SCORE_RANGE
    repaired = False
    if _is_na(value):
        return None, "na", False
    if isinstance(value, bool):
        return None, "invalid", False
    if isinstance(value, str):
        match = _SCORE_TEXT.match(value)
        if not match:
            return None, "invalid", False
        value, repaired = float(match.group(1)), True
    if isinstance(value, float):
        if not value.is_integer():
            return None, "invalid", False  # 3.5 is not on the scale; rounding would be imputing
        value, repaired = int(value), True
    if not isinstance(value, int):
        return None, "invalid", False
    if not low <= value <= high:
        return None, "out_of_range", False
    return value, None, repaired


def read_choice(value: Any) -> tuple[str | None, str | None, bool]:
    """Read one pairwise choice: ``(A|B|tie, failure kind, repaired)``."""
    if isinstance(value, str) and value in CHOICES:
        return value, None, False
    if _is_na(value):
        return None, "na", False
    if not isinstance(value, str):
        return None, "invalid", False
    text = value.strip().strip("\"'[]().").strip().lower()
    if text in _TIE_WORDS:
        return "tie", None, True
    if match := _CHOICE_TEXT.match(text):
        return match.group(1).upper(), None, True
    return None, "invalid", False


def _first(table: dict[str, Any], keys: tuple[str, ...]) -> tuple[bool, Any]:
    for key in keys:
        if key in table:
            return True, table[key]
    return False, None


def _fail_all(aspects: tuple[str, ...], kind: str, repairs: list[str]) -> ParsedReply:
    return ParsedReply(failures=dict.fromkeys(aspects, kind), repairs=repairs)


def _reply_table(text: str, aspects: tuple[str, ...]) -> tuple[dict[str, Any] | None, ParsedReply]:
    """The reply's values by aspect and the result to fill, or None and the result of a reply with no object."""
    if not text or not text.strip():
        return None, _fail_all(aspects, "empty", [])
    obj, repairs = extract_json_object(text, aspects)
    if obj is None:
        return None, _fail_all(aspects, "unparseable", repairs)
    return _aspect_table(obj, aspects, repairs), ParsedReply(repairs=repairs)


def _keep(
    result: ParsedReply,
    values: dict[str, Any],
    aspect: str,
    what: str,
    raw: Any,
    read: Callable[[Any], tuple[Any, str | None, bool]],
) -> None:
    """Read ``raw`` with ``read`` into ``values[aspect]``, or record why it fails; name a repair."""
    value, failure, repaired = read(raw)
    if failure:
        result.failures[aspect] = failure
        return
    values[aspect] = value
    if repaired:
        result.repairs.append(f"{aspect}: {what} {raw!r} read as {value}")


def parse_score_reply(text: str, aspects: tuple[str, ...]) -> ParsedReply:
    """Parse a score or safety reply: per aspect, a 1-5 score and a reason."""
    table, result = _reply_table(text, aspects)
    if table is None:
        return result
    repairs = result.repairs
    for aspect in aspects:
        if aspect not in table:
            result.failures[aspect] = "missing"
            continue
        value = table[aspect]
        if isinstance(value, dict):
            inner = _normalised_keys(value)
            found, raw_score = _first(inner, _SCORE_KEYS)
            if not found:
                result.failures[aspect] = "missing"
                continue
            _, reason = _first(inner, _REASON_KEYS)
            if isinstance(reason, str):
                result.reasons[aspect] = reason
            elif "reason missing" not in repairs:
                repairs.append("reason missing")
        else:
            raw_score = value
            repairs.append(f"{aspect}: bare score without reason")
        _keep(result, result.scores, aspect, "score", raw_score, read_score)
    return result


def parse_pairwise_reply(text: str, aspects: tuple[str, ...]) -> ParsedReply:
    """Parse a pairwise reply: per aspect, ``A``, ``B`` or ``tie``, plus one overall reason."""
    table, result = _reply_table(text, aspects)
    if table is None:
        return result
    _, reason = _first(table, _REASON_KEYS)
    if isinstance(reason, str):
        result.reasons["overall"] = reason
    for aspect in aspects:
        if aspect not in table:
            result.failures[aspect] = "missing"
            continue
        raw = table[aspect]
        if isinstance(raw, dict):  # {"helpfulness": {"reason": ..., "choice": "A"}}
            inner = _normalised_keys(raw)
            _, raw = _first(inner, ("choice", "preference", "winner", "verdict", "better"))
            _, inner_reason = _first(inner, _REASON_KEYS)
            if isinstance(inner_reason, str):
                result.reasons[aspect] = inner_reason
        _keep(result, result.choices, aspect, "choice", raw, read_choice)
    return result


def parse_reply(mode: str, text: str, aspects: tuple[str, ...]) -> ParsedReply:
    """Parse a reply of any mode."""
    return parse_pairwise_reply(text, aspects) if mode == "pairwise" else parse_score_reply(text, aspects)
