"""The answers themselves: per prompt, every model's answer side by side, with what to look at.

Each answer carries its length, whether the token limit cut it (``finish_reason`` ``length``),
whether it repeats itself (:func:`repeated_ngram_share` over :data:`REPETITION_THRESHOLD`), and for a
tuned model its mean KL and shifted share from the shift run, with a link to the token viewer (which
shows the base model's own answer beside it).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from tunescope.generate.store import ResponseRecord, read_responses
from tunescope.report.collect import Cell
from tunescope.shift.output import VIEWER_FILE, per_response_shift

REPETITION_NGRAM = 3
"""Length, in words, of the n-grams counted by the repetition rule."""
REPETITION_THRESHOLD = 0.3
"""Share of an answer's word n-grams that repeat an earlier one above which the answer is flagged."""
REPETITION_MIN_NGRAMS = 8
"""Answers with fewer n-grams are never flagged: a short answer has too few to judge."""
REPETITION_RULE = (
    f"repetitive: more than {REPETITION_THRESHOLD:.0%} of the answer's word {REPETITION_NGRAM}-grams (lower-cased, "
    f"numbers as one symbol, so a numbered list of one item counts) repeat an earlier one, over at least "
    f"{REPETITION_MIN_NGRAMS} of them"
)
"""The repetition rule, as the report states it."""
LOOK_AT_LARGEST_SHIFT = 3
"""Answers with the largest mean KL listed under "what to look at"."""
LOOK_AT_MAX_REPETITIVE = 6
"""At most this many repetitive answers are listed there (all are flagged in the table)."""


def _words(text: str) -> list[str]:
    return [re.sub(r"\d+", "0", word) for word in text.lower().split()]


def repeated_ngram_share(text: str, n: int = REPETITION_NGRAM) -> tuple[float, int]:
    """The share of ``text``'s word ``n``-grams that repeat an earlier one, and how many n-grams it has.

    Words are whitespace-separated, lower-cased, with every run of digits replaced by ``0``: "1. Ann
    2. Ann 3. Ann" repeats as much as "Ann Ann Ann". 0.0 for a text with no n-gram.
    """
    words = _words(text)
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    if not grams:
        return 0.0, 0
    return 1 - len(set(grams)) / len(grams), len(grams)


def is_repetitive(text: str) -> bool:
    """Whether ``text`` degenerates into repetition, by :data:`REPETITION_RULE`."""
    share, count = repeated_ngram_share(text)
    return count >= REPETITION_MIN_NGRAMS and share > REPETITION_THRESHOLD


def _answer(record: ResponseRecord, shift: dict[str, Any] | None, viewer: str | None) -> dict[str, Any]:
    text = record.output or ""
    share, _ = repeated_ngram_share(text)
    return {
        "text": text,
        "n_tokens": len(record.output_token_ids) if record.output_token_ids is not None else None,
        "n_words": len(text.split()),
        "truncated": record.finish_reason == "length",
        "repeated_share": round(share, 4),
        "repetitive": is_repetitive(text),
        "kl": shift and shift["kl"],
        "shifted": shift and shift["shifted"],
        "viewer": f"{viewer}#response-{shift['index']}" if viewer and shift else None,
    }


def _look_at(prompts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The answers with the largest mean KL, then the repetitive ones, each with why."""
    every = [(row, model, answer) for row, prompt in enumerate(prompts) for model, answer in prompt["answers"].items()]
    shifted = [item for item in every if item[1] != "base" and item[2]["kl"] is not None]
    largest = sorted(shifted, key=lambda item: -item[2]["kl"])[:LOOK_AT_LARGEST_SHIFT]
    repetitive = [item for item in every if item[2]["repetitive"]][:LOOK_AT_MAX_REPETITIVE]
    reasons = [(item, f"largest shift: mean KL {item[2]['kl']:.3f} nats per token") for item in largest] + [
        (item, f"repetitive: {item[2]['repeated_share']:.0%} of its word {REPETITION_NGRAM}-grams repeat")
        for item in repetitive
    ]
    return [{"row": row, "id": prompts[row]["id"], "model": model, "why": why} for (row, model, _), why in reasons]


def _prompt_text(record: ResponseRecord) -> str:
    if record.instruction:
        return record.instruction
    users = [message["content"] for message in record.messages or [] if message.get("role") == "user"]
    return users[-1] if users else ""


def answers_section(cell: Cell, out_dir: Path) -> dict[str, Any] | None:
    """Per prompt, the base and every tuned model's answer with flags and shift numbers (None: no answers).

    The models are those whose answers the experiment generated, base first; prompts follow the base
    model's responses file, then any only the tuned models answered.
    """
    files = {"base": cell.base_responses} | {method: run.responses_path for method, run in cell.runs.items()}
    answered = {model: read_responses(path) for model, path in files.items() if path and path.is_file()}
    if not answered:
        return None
    shifts, viewers = {}, {}
    for method, run in cell.runs.items():
        if run.shift_dir and (run.shift_dir / "tokens.parquet").is_file():
            shifts[method] = per_response_shift(run.shift_dir)
            viewer = run.shift_dir / VIEWER_FILE
            viewers[method] = Path(os.path.relpath(viewer, out_dir)).as_posix() if viewer.is_file() else None
    by_model = {model: {record.id: record for record in records} for model, records in answered.items()}
    order = list(dict.fromkeys(record.id for records in answered.values() for record in records))
    prompts = []
    for prompt_id in order:
        records = {model: found[prompt_id] for model, found in by_model.items() if prompt_id in found}
        first = next(iter(records.values()))
        prompts.append(
            {
                "id": prompt_id,
                "prompt": _prompt_text(first),
                "answers": {
                    model: _answer(record, shifts.get(model, {}).get(prompt_id), viewers.get(model))
                    for model, record in records.items()
                },
            }
        )
    flagged = {
        model: {
            "answers": sum(model in prompt["answers"] for prompt in prompts),
            "truncated": sum(prompt["answers"][model]["truncated"] for prompt in prompts if model in prompt["answers"]),
            "repetitive": sum(
                prompt["answers"][model]["repetitive"] for prompt in prompts if model in prompt["answers"]
            ),
        }
        for model in answered
    }
    return {
        "models": list(answered),
        "repetition_rule": REPETITION_RULE,
        "truncation_rule": "truncated: generation stopped at the token limit (finish_reason 'length')",
        "counts": flagged,
        "look_at": _look_at(prompts),
        "prompts": prompts,
    }
