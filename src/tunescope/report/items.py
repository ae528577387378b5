"""Per-item data the findings pair on, read from a cell's outputs.

A finding compares two models on the *same* items: LoRA and full fine-tuning answered the same
evaluation prompts (a response's id is its prompt's id), the probe asked every model the same
questions and scored the same passages, the judge scored both models' answers to the same items.
The readers here return per-item arrays keyed by those ids, and :func:`matched` lines two of them up.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from tunescope.judge.aggregate import item_average
from tunescope.judge.pipeline import JUDGEMENTS_FILE
from tunescope.judge.requests import read_judgements
from tunescope.shift.output import TOKENS_FILE
from tunescope.shift.summary import initiation_sums

RESPONSE_COLUMNS = ("example_id", "example_index", "kl", "klass", "sentence_index", "initiation")
"""tokens.parquet columns the per-response sums need."""


@dataclass(frozen=True)
class PerItem:
    """Values per item (prompt, response, question), in one order, with the items' ids."""

    ids: tuple[str, ...]
    """Item ids, unique."""
    values: dict[str, np.ndarray]
    """Column name -> one value per item, in ``ids`` order."""

    def __getitem__(self, name: str) -> np.ndarray:
        return self.values[name]

    def __len__(self) -> int:
        return len(self.ids)

    def take(self, ids: list[str]) -> PerItem:
        """The same columns for ``ids`` only, in that order."""
        position = {item: index for index, item in enumerate(self.ids)}
        rows = np.array([position[item] for item in ids], dtype=int)
        return PerItem(tuple(ids), {name: values[rows] for name, values in self.values.items()})


def matched(first: PerItem, second: PerItem) -> tuple[PerItem, PerItem]:
    """Both restricted to the items they share, in ``first``'s order (e.g. prompts both models answered)."""
    theirs = set(second.ids)
    shared = [item for item in first.ids if item in theirs]
    return first.take(shared), second.take(shared)


@functools.lru_cache(maxsize=32)
def _response_sums(tokens_path: str, modified: float) -> PerItem:
    del modified  # part of the cache key only: a rewritten file is read again
    table = pq.read_table(tokens_path, columns=list(RESPONSE_COLUMNS))
    columns = {name: table.column(name).to_numpy(zero_copy_only=False) for name in RESPONSE_COLUMNS}
    columns["kl"] = columns["kl"].astype(float)
    indices, example = np.unique(columns["example_index"], return_inverse=True)
    n = len(indices)
    ids = [""] * n
    for row, index in enumerate(example):
        ids[index] = str(columns["example_id"][row])

    def per_response(values: np.ndarray) -> np.ndarray:
        return np.bincount(example, weights=values.astype(float), minlength=n)

    first_sums, first_counts, rest_sums, rest_counts = initiation_sums(columns, example, n)
    values = {
        "tokens": per_response(np.ones(len(example))),
        "kl": per_response(columns["kl"]),
        "unshifted": per_response(columns["klass"] == "unshifted"),
        "kl_first": first_sums,
        "first_tokens": first_counts,
        "kl_rest": rest_sums,
        "rest_tokens": rest_counts,
    }
    return PerItem(tuple(ids), values)


def response_sums(shift_dir: Path) -> PerItem | None:
    """Per response of a shift run: token count, summed KL, unshifted tokens, and the Fig. 4 split.

    Columns: ``tokens``, ``kl``, ``unshifted``, ``kl_first`` / ``first_tokens`` (sentence-initial
    tokens) and ``kl_rest`` / ``rest_tokens`` (the other sentence tokens). None without tokens.parquet.
    """
    path = shift_dir / TOKENS_FILE
    if not path.is_file():
        return None
    return _response_sums(str(path), path.stat().st_mtime)


@dataclass(frozen=True)
class JudgeItems:
    """Per model, the five-aspect average of each judged item, and what was left out."""

    scores: dict[str, dict[str, float]]
    """Model label -> item id -> the average over all aspects (items with every aspect parsed only)."""
    judged: dict[str, int]
    """Model label -> items with a judgement record."""


def judge_items(judge_dir: Path, aspects: tuple[str, ...]) -> JudgeItems:
    """Read judgements.jsonl (the latest record per judgement) into per-item averages over ``aspects``."""
    scores: dict[str, dict[str, float]] = {}
    judged: dict[str, int] = {}
    for record in read_judgements(judge_dir / JUDGEMENTS_FILE).values():
        if record.get("mode") != "score" or "model" not in record:
            continue
        model = str(record["model"])
        judged[model] = judged.get(model, 0) + 1
        average = item_average(record, aspects)
        if average is not None:
            scores.setdefault(model, {})[str(record["item_id"])] = average
    return JudgeItems(scores, judged)


def borrow_counts(section: dict[str, Any] | None, group: str) -> PerItem | None:
    """Per response, the two counts behind a share of borrow.json (``per_response`` of a section).

    For ``style_tokens`` the columns are ``style`` and ``tokens``; for ``borrowed_words``, ``found``
    and ``words``. None when the section has no per-response counts (borrow.json of an older run).
    """
    per_response = (section or {}).get("per_response")
    if not per_response or group not in per_response.get("groups", {}):
        return None
    counts = per_response["groups"][group]
    return PerItem(
        tuple(str(item) for item in per_response["ids"]),
        {name: np.asarray(values, dtype=float) for name, values in counts.items()},
    )
