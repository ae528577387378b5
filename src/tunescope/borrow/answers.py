"""Model answers the analysis reads or asks for: the tuned responses, the base model's, counterfactuals.

Answers are the records of responses files (:class:`~tunescope.generate.store.ResponseRecord`);
asking reuses `tunescope generate`, so that new answers are ordinary, resumable responses files
with exact token ids and their generation settings recorded.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from tunescope.errors import UserError
from tunescope.files import write_jsonl
from tunescope.generate import GenerateConfig, generate
from tunescope.generate.store import ResponseRecord, read_responses

DEFAULT_MAX_NEW_TOKENS = 512
"""Longest new answer when the tuned responses do not record their own limit."""


def read_answers(path: str | Path) -> dict[str, ResponseRecord]:
    """The answers in a responses file, by prompt id (see :mod:`tunescope.generate.store` for the accepted shapes).

    Raises:
        UserError: naming the file and line of a malformed record.
    """
    return {record.id: record for record in read_responses(path)}


def generation_settings(answers: dict[str, ResponseRecord]) -> dict[str, Any]:
    """The tuned answers' limit and template, so that new answers are generated comparably."""
    for answer in answers.values():
        if answer.generation:
            return {
                "max_new_tokens": int(answer.generation.get("max_new_tokens") or DEFAULT_MAX_NEW_TOKENS),
                "template": answer.generation.get("template"),
            }
    return {"max_new_tokens": DEFAULT_MAX_NEW_TOKENS, "template": None}


def ask(
    model: str,
    prompts: list[dict[str, Any]],
    out: Path,
    *,
    max_new_tokens: int,
    template: str | None = None,
    batch_size: int = 8,
    precision: str = "auto",
    progress: Callable[[int], None] | None = None,
) -> dict[str, ResponseRecord]:
    """Answer ``prompts`` (records with ``id`` and ``messages``) greedily with ``model`` into ``out``.

    ``out`` is a responses file that grows as batches finish; calling again after a crash answers
    only what is missing. The prompts themselves are written beside it (``<out>.prompts.jsonl``).

    Raises:
        UserError: when ``out`` holds answers generated with other settings, or the model fails to load.
    """
    if not prompts:
        return {}
    prompts_file = out.with_name(out.stem + ".prompts.jsonl")
    write_jsonl(prompts_file, prompts)
    config = GenerateConfig(
        model=model,
        data=str(prompts_file),
        format="messages",
        template=template,
        out=str(out),
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        precision=precision,
    )
    generate(config, progress=progress)
    answers = read_answers(out)
    missing = [prompt["id"] for prompt in prompts if prompt["id"] not in answers]
    if missing:
        raise UserError(f"{out}: no answer for {len(missing)} prompts (first: {missing[0]})")
    return answers
