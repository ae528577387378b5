"""What gets rewritten, how the rewriter is asked, and how a rewrite goes back into its record.

**Copied verbatim** (the paper's "leave the response unchanged if the task is coding or
summarisation", made checkable, so that no request is spent on them):

* ``code``: the response contains a fenced code block (a line starting with three backticks or
  tildes), or its instruction names code (``code``, ``script``, ``program``, ``function in``, a
  programming language, ``SQL``, ``regex``, ...): rewriting code risks breaking it;
* ``summary``: its instruction asks for a summary (``summarise``, ``summary``, ``TL;DR``,
  ``condense``, ``recap``): a summary is already the short form the user asked for;
* ``short``: it has fewer than ``min_chars`` characters (off by default);
* ``empty``: it is empty or white space.

Every other response is sent to the rewriter with the query it answers (the last user turn
before it). The reply is the rewritten response; a label the model echoes ("Simplified
response:") is removed. A reply cut by the token limit, an empty reply, or (unless allowed) one
longer than the original is not used: the original is kept and the reason recorded.
"""

from __future__ import annotations

import copy
import hashlib
import re
from dataclasses import dataclass
from string import Template
from typing import Any

from tunescope.data.formats import SHAREGPT_ROLES, Message

PROMPT_VERSION = "simplify-1"
SYSTEM_MESSAGE = "You rewrite assistant responses to be brief and factual. You reply with the rewritten response only."
PROMPT_TEMPLATE = """\
You are a response rewriter. Below are a user's query and a response to it. Rewrite the response so that it \
keeps only the information that is helpful and factual for the query. Leave out redundant detail that only \
adds length or depth, and write briefly. Keep the response's formatting (paragraphs, lists, Markdown). If the \
response is already concise, or the task is writing code or a summary, return it unchanged.

## Query:
${query}

## Response:
${response}

Reply with the simplified response only, with no preamble and no label.

## Simplified response:
"""
PROMPT_HASH = hashlib.sha256(f"{PROMPT_VERSION}\n{SYSTEM_MESSAGE}\n{PROMPT_TEMPLATE}".encode()).hexdigest()
"""Changes whenever the wording does: part of the settings a resumed run must share."""

FENCED_CODE = re.compile(r"^[ \t]*(```|~~~)", re.MULTILINE)
CODE_REQUEST = re.compile(
    r"\b(code|coding|script|program|programming|regex|regular expression|sql|python|javascript|typescript|java|"
    r"c\+\+|c#|golang|rust|bash|shell command|html|css|function in|class in|implement(?:ation)? of)\b",
    re.IGNORECASE,
)
SUMMARY_REQUEST = re.compile(r"\b(summari[sz]\w*|summary|summaries|tl;?dr|condense|recap)\b", re.IGNORECASE)
ECHOED_LABEL = re.compile(r"^\s*(#+\s*)?(\*\*)?simplified response(\*\*)?\s*:?\s*(\*\*)?\s*\n?", re.IGNORECASE)


@dataclass(frozen=True)
class Slot:
    """Where one response turn lives inside a raw record, and the query it answers."""

    container: dict[str, Any]
    """The dict holding the text (the record itself, or one turn of it)."""
    key: str
    """The text's key in that dict."""
    query: str
    """The last user turn before the response ("" when none)."""

    @property
    def text(self) -> str:
        """The response as it is now."""
        return str(self.container[self.key])


def keep_reason(query: str, response: str, *, keep_code: bool = True, keep_summaries: bool = True,
                min_chars: int = 0) -> str | None:  # fmt: skip
    """Why a response is copied verbatim (``empty``, ``code``, ``summary``, ``short``), or None to rewrite it."""
    if not response.strip():
        return "empty"
    if keep_code and (FENCED_CODE.search(response) or CODE_REQUEST.search(query)):
        return "code"
    if keep_summaries and SUMMARY_REQUEST.search(query):
        return "summary"
    if len(response) < min_chars:
        return "short"
    return None


def rewrite_messages(query: str, response: str) -> list[Message]:
    """The chat request that asks for a simplified ``response`` to ``query``.

    :class:`string.Template` fills the slots in one pass, so text inside the query or response is
    never substituted again.
    """
    prompt = Template(PROMPT_TEMPLATE).substitute(query=query, response=response)
    return [{"role": "system", "content": SYSTEM_MESSAGE}, {"role": "user", "content": prompt}]


def clean_reply(text: str) -> str:
    """The rewritten response in a reply: surrounding white space and an echoed label removed."""
    return ECHOED_LABEL.sub("", text.strip(), count=1).strip()


def response_slots(fields: dict[str, Any], data_format: str) -> list[Slot]:
    """The response turns of one raw record (already checked by ``to_messages``), in order.

    For prompt_completion records only the completion's turns are responses; assistant turns in
    the prompt are context.
    """
    slots: list[Slot] = []
    if data_format == "alpaca":
        instruction = str(fields["instruction"])
        query = f"{instruction}\n\n{fields['input']}" if fields.get("input") else instruction
        return [Slot(fields, "output", query)]
    if data_format == "prompt_completion":
        prompt = fields["prompt"]
        query = prompt if isinstance(prompt, str) else _last_user(prompt, "role", "content", len(prompt))
        completion = fields["completion"]
        if isinstance(completion, str):
            return [Slot(fields, "completion", query)]
        turns, role_key, text_key = completion, "role", "content"
    elif data_format == "sharegpt":
        turns, role_key, text_key = fields["conversations"], "from", "value"
    else:
        turns, role_key, text_key = fields["messages"], "role", "content"
    for index, turn in enumerate(turns):
        if _role(turn, role_key) == "assistant":
            query = _last_user(turns, role_key, text_key, index)
            if not query and data_format == "prompt_completion":
                prompt = fields["prompt"]
                query = prompt if isinstance(prompt, str) else _last_user(prompt, "role", "content", len(prompt))
            slots.append(Slot(turn, text_key, query))
    return slots


def _role(turn: dict[str, Any], role_key: str) -> str | None:
    role = turn[role_key]
    return SHAREGPT_ROLES.get(str(role).lower()) if role_key == "from" else role


def _last_user(turns: list[dict[str, Any]], role_key: str, text_key: str, before: int) -> str:
    for turn in reversed(turns[:before]):
        if _role(turn, role_key) == "user":
            return str(turn[text_key])
    return ""


def with_responses(fields: dict[str, Any], data_format: str, texts: list[str]) -> dict[str, Any]:
    """A copy of the record with its response turns replaced by ``texts``, everything else untouched."""
    record = copy.deepcopy(fields)
    slots = response_slots(record, data_format)
    if len(slots) != len(texts):
        raise ValueError(f"{len(texts)} texts for {len(slots)} responses")
    for slot, text in zip(slots, texts, strict=True):
        slot.container[slot.key] = text
    return record
