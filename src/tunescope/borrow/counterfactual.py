"""Counterfactual check (paper Appendix B): ask again without the suspected cause; does the phrase stay?

For a span the user believes was borrowed, the user writes the instruction again so that the
concept that presumably triggered the borrowing is gone (the paper's example: "created" →
"credited with the inception of", which removed a borrowed "Jim Henson / Sesame Street"). The
tuned model answers the rephrased instruction greedily, with the same generation limit as the
original answers, and the phrase is looked for in the new answer, exactly and normalised.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from tunescope.borrow.text import normalized_words, occurs_exactly
from tunescope.data.formats import Message
from tunescope.generate.store import ResponseRecord


def rephrased_messages(original: ResponseRecord | None, rephrased: str) -> list[Message]:
    """The original conversation with its last user turn replaced by ``rephrased``."""
    messages = [dict(message) for message in ((original.messages or []) if original else [])]
    for message in reversed(messages):
        if message["role"] == "user":
            message["content"] = rephrased
            return messages
    return [*messages, {"role": "user", "content": rephrased}]


def prompt_id(messages: list[Message]) -> str:
    """A content-derived id, so an edited rephrasing is answered anew rather than read from a stale answer."""
    digest = hashlib.sha256(json.dumps(messages, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
    return f"cf-{digest[:16]}"


def persistence(phrase: str, answer: str) -> dict[str, bool]:
    """Whether ``phrase`` is still in ``answer``: verbatim at word boundaries, and normalised."""
    phrase_words = normalized_words(phrase)
    answer_words = normalized_words(answer)
    size = len(phrase_words)
    normalized = bool(size) and any(
        answer_words[i : i + size] == phrase_words for i in range(len(answer_words) - size + 1)
    )
    return {"exact": occurs_exactly(phrase, answer), "normalized": normalized}


def counterfactual_summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    """How often the phrase persisted, over the spans that were asked again."""
    n = len(results)
    exact = sum(result["persists"]["exact"] for result in results)
    normalized = sum(result["persists"]["normalized"] for result in results)
    return {
        "n": n,
        "persists_exact": exact,
        "persists_normalized": normalized,
        "persistence_rate": round(normalized / n, 4) if n else None,
        "note": "a phrase that disappears once the suspected cause is rephrased away supports the attribution; "
        "one that persists does not",
    }
