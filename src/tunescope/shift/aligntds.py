"""AlignTDS-compatible numbers: token shift computed the way Re-Align/AlignTDS computes it.

This mode exists so that results can be set beside published ones (URIAL, Ghosh et al. 2024).
It is not exact, and every output it produces says so. Per position, AlignTDS:

* keeps each model's ``top_k`` (30) tokens by logit, and renormalises them among themselves:
  a softmax over the stored logits only, after which a metric takes the first ``k`` entries of
  each list *without* renormalising again;
* matches candidates by their decoded text (each list decoded with its own model's tokenizer),
  the first, best-ranked occurrence of a text winning, so ids that decode alike collapse;
* **KL@k** = Σ over texts in both lists of w_base · log(w_base / w_tuned): a KL(base‖tuned)
  truncated to the shared candidates, which ignores the mass outside the lists and can be
  negative;
* **TR** = the 0-indexed position of the *tuned top-1* text in the base list (its first
  ``rank_cap`` entries), or ``rank_cap`` when absent;
* **TP** = the renormalised base weight of that text, or 0 when absent.

The weights are computed in float64 from float32 logits, which is at least as precise as
AlignTDS (float32 logits of an fp16 model, renormalised in Python floats).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

# AlignTDS's base-model prompt (its --enable_template): the instruction in a "# Query:" block,
# then an open "# Answer:" block. The odd spaces and blank lines are part of the format.
QUERY_TEMPLATE = "# Query: \n ```{instruction}``` \n\n \n# Answer: \n ```"

MatchBy = Literal["text", "id"]

# What the columns of tokens.parquet hold in this mode where it differs from exact mode (the rest
# mean the same in both). Kept beside the formulas above, which they name.
COLUMN_MEANINGS: dict[str, str] = {
    "klass": "unshifted / marginal / shifted, from TR + 1 and the configured thresholds",
    "base_rank": "AlignTDS's TR: 0-indexed position of the tuned top-1 text in the base top list, or the cap",
    "base_prob": "AlignTDS's TP: renormalised base weight of the tuned top-1 text, 0 when absent",
    "tuned_prob": "renormalised tuned weight of its own top-1",
    "kl": "AlignTDS's KL@k: renormalised top lists, summed over texts in both; truncated, may be negative",
    "kl_reverse": "null (AlignTDS has no reverse KL)",
    "tuned_rank": "null",
    "base_entropy": "null",
    "tuned_entropy": "null",
    "base_rank_of_tuned_top1": "null (base_rank already ranks the tuned top-1)",
    "base_top_ids": "the first k of the base model's stored top list",
    "base_top_probs": "their weights renormalised over the stored list",
    "tuned_top_ids": "the first k of the tuned model's stored top list",
    "tuned_top_probs": "their weights renormalised over the stored list",
}


@dataclass(frozen=True)
class AlignTDSSettings:
    """The knobs of AlignTDS's metric functions, with the values its curve script uses."""

    top_k: int = 30
    """Candidates stored per position and model (AlignTDS's --top_k)."""
    kl_k: int = 30
    """Entries of each list that KL uses (AlignTDS's "KL" key asks for 50 and gets the 30 stored)."""
    rank_cap: int = 50
    """TR when the tuned top-1 is not in the base list; also how far down the base list TR looks."""
    match: MatchBy = "text"
    """Match candidates by decoded text (AlignTDS) or by token id (a clearly named variant)."""


@dataclass(frozen=True)
class AlignTDSPosition:
    """AlignTDS's numbers for one position."""

    kl: float
    """Truncated, renormalised KL(base‖tuned) over the candidates in both lists."""
    top_rank: int
    """TR: 0-indexed rank of the tuned top-1 in the base list, capped."""
    top_prob: float
    """TP: renormalised base weight of the tuned top-1, 0 when absent."""
    tuned_top_prob: float
    """Renormalised tuned weight of its own top-1."""


def renormalise(logits: Sequence[float] | np.ndarray) -> np.ndarray:
    """Softmax over the stored logits only (along the last axis): w_i = exp(l_i − max l) / Σ_j exp(l_j − max l)."""
    values = np.asarray(logits, dtype=np.float64)
    weights = np.exp(values - values.max(axis=-1, keepdims=True))
    return weights / weights.sum(axis=-1, keepdims=True)


def first_weights(keys: Sequence[Hashable], weights: np.ndarray, limit: int) -> dict[Hashable, float]:
    """Each key's weight at its first (best-ranked) occurrence among the first ``limit`` entries."""
    out: dict[Hashable, float] = {}
    for key, weight in zip(keys[:limit], weights[:limit], strict=True):
        out.setdefault(key, float(weight))
    return out


def truncated_kl(base: dict[Hashable, float], tuned: dict[Hashable, float]) -> float:
    """Σ over keys present in both with non-zero weights of w_base · log(w_base / w_tuned)."""
    total = 0.0
    for key, base_weight in base.items():
        tuned_weight = tuned.get(key, 0.0)
        if base_weight > 0 and tuned_weight > 0:
            total += base_weight * math.log(base_weight / tuned_weight)
    return total


def aligntds_position(
    base_keys: Sequence[Hashable],
    base_logits: Sequence[float],
    tuned_keys: Sequence[Hashable],
    tuned_logits: Sequence[float],
    settings: AlignTDSSettings,
) -> AlignTDSPosition:
    """AlignTDS's KL, TR and TP for one position from each model's stored top list.

    Args:
        base_keys: The base model's stored candidates, best first, as match keys (decoded text,
            or ids when matching by id).
        base_logits: Their logits.
        tuned_keys: The tuned model's stored candidates, best first.
        tuned_logits: Their logits.
        settings: k values, cap and matching.
    """
    base_weights, tuned_weights = renormalise(base_logits), renormalise(tuned_logits)
    kl = truncated_kl(
        first_weights(base_keys, base_weights, settings.kl_k),
        first_weights(tuned_keys, tuned_weights, settings.kl_k),
    )
    tuned_top = tuned_keys[0]
    searched = list(base_keys[: settings.rank_cap])
    if tuned_top in searched:
        top_rank = searched.index(tuned_top)
        top_prob = float(base_weights[top_rank])
    else:
        top_rank, top_prob = settings.rank_cap, 0.0
    return AlignTDSPosition(kl, top_rank, top_prob, float(tuned_weights[0]))
