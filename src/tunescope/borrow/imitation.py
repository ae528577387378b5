"""Style imitation (paper Table 11): do the tuned model's answers take the training responses' length?

The paper reports an "Avg Token Length" of training responses and of model outputs whose values
look like characters (docs/method.md#table-11-lengths). tunescope reports all three units,
labelled: characters, words (runs of non-space characters) and tokens of the tuned model's
tokenizer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from tunescope.borrow.text import word_count

PAPER_TABLE_11 = {
    "unit": "probably characters (the paper says 'Avg Token Length')",
    "model": "LLaMa-2 7B, full fine-tuning, just-eval-instruct outputs",
    "rows": [
        {"dataset": "LIMA 1K", "dataset_responses": 2504.01, "model_outputs": 1163.7},
        {"dataset": "Alpaca 52k", "dataset_responses": 270.31, "model_outputs": 416.81},
        {"dataset": "databricks-dolly 15k", "dataset_responses": 358.10, "model_outputs": 493.63},
        {"dataset": "LIMA-simple 1k", "dataset_responses": 523.14, "model_outputs": 541.79},
    ],
}


def _describe(values: np.ndarray) -> dict[str, float | None]:
    if not len(values):
        return {"mean": None, "median": None}
    return {"mean": round(float(values.mean()), 2), "median": round(float(np.median(values)), 2)}


def length_stats(
    texts: Sequence[str],
    token_counts: Sequence[int] | np.ndarray,
    *,
    truncated: Sequence[bool] | None = None,
) -> dict[str, Any]:
    """Mean and median length of ``texts`` in characters, words and tokens.

    Args:
        texts: One response per entry.
        token_counts: Tokens of each response.
        truncated: Whether each response was cut by the generation limit (its length is then a
            lower bound, which the summary counts).
    """
    chars = np.fromiter((len(text) for text in texts), dtype=np.float64, count=len(texts))
    words = np.fromiter((word_count(text) for text in texts), dtype=np.float64, count=len(texts))
    tokens = np.asarray(token_counts, dtype=np.float64)
    out: dict[str, Any] = {
        "n": len(texts),
        "chars": _describe(chars),
        "words": _describe(words),
        "tokens": _describe(tokens),
    }
    if truncated is not None:
        out["n_truncated"] = int(sum(bool(t) for t in truncated))
    return out


def imitation_summary(
    training: dict[str, Any], tuned: dict[str, Any], base: dict[str, Any] | None, tokenizer_name: str
) -> dict[str, Any]:
    """Table 11 for one run: training responses, tuned outputs and base outputs side by side.

    ``tuned_to_training`` and ``base_to_training`` are ratios of mean character lengths: closer to
    1 for the tuned model than for the base means its answers moved towards the training length.
    """

    def ratio(side: dict[str, Any] | None) -> float | None:
        if side is None or not side["chars"]["mean"] or not training["chars"]["mean"]:
            return None
        return round(side["chars"]["mean"] / training["chars"]["mean"], 4)

    return {
        "units": {
            "chars": "characters",
            "words": "runs of non-space characters",
            "tokens": f"tokens of the tuned model's tokenizer ({tokenizer_name})",
        },
        "training_responses": training,
        "tuned_outputs": tuned,
        "base_outputs": base,
        "tuned_to_training_chars": ratio(tuned),
        "base_to_training_chars": ratio(base),
        "note": "outputs cut by the generation limit (n_truncated) make their lengths lower bounds",
        "paper": PAPER_TABLE_11,
    }
