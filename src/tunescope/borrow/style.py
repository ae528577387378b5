"""Which tokens shift (paper Fig. 12): the most frequent shifted and marginal tokens, tagged style or content.

Every token of every scored response is tagged with :func:`~tunescope.borrow.lexicon.tag_tokens`.
Per run this gives one comparable number, the **style share**: the fraction of tokens at shifted
(or marginal, or either) positions whose category is discourse, function or format. The share at
unshifted positions is its baseline: style words are common everywhere, so a run's shifted tokens
are "mostly style" only when their share clearly exceeds that.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import numpy as np

from tunescope.borrow.lexicon import CATEGORIES, STYLE_CATEGORIES, Category
from tunescope.shift.output import ShiftResponse
from tunescope.shift.summary import Resampling
from tunescope.stats import Estimate

CLASS_GROUPS: dict[str, tuple[str, ...]] = {
    "shifted": ("shifted",),
    "marginal": ("marginal",),
    "shifted_or_marginal": ("shifted", "marginal"),
    "unshifted": ("unshifted",),
    "all": ("unshifted", "marginal", "shifted"),
}
"""Token groups reported, by the shift classes they pool."""
HEADLINE_GROUP = "shifted_or_marginal"
"""The group of the one-number comparison: Fig. 12 pools shifted and marginal positions."""

Tag = tuple[Category, "str | None"]


def rounded(value: float | None, digits: int = 6) -> float | None:
    """A JSON-ready number: ``digits`` significant digits, None for a missing or non-finite value."""
    if value is None or not math.isfinite(value):
        return None
    return float(f"{value:.{digits}g}")


def share_entry(estimate: Estimate) -> dict[str, Any]:
    """``{"value", "ci95"}`` as every share in borrow.json is written (``[None, None]`` without an interval)."""
    low, high = estimate.ci95 or (None, None)
    return {"value": rounded(estimate.value), "ci95": [rounded(low), rounded(high)]}


def group_shares(hits: np.ndarray, totals: np.ndarray, boot: Resampling, names: list[str]) -> dict[str, dict[str, Any]]:
    """Pooled share ``Σ hits / Σ totals`` per group with a bootstrap interval over responses.

    Args:
        hits: ``[n_responses, n_groups]`` counts of tokens (or words) with the property.
        totals: ``[n_responses, n_groups]`` counts of all of them.
        boot: The resampling of responses.
        names: Group names, one per column.
    """
    estimates = boot.ratios(hits, totals)
    return {
        name: {**share_entry(estimates[g]), "n": int(totals[:, g].sum()), "hits": int(hits[:, g].sum())}
        for g, name in enumerate(names)
    }


def per_response_counts(
    ids: list[str], hits: np.ndarray, totals: np.ndarray, names: list[str], hit_name: str, total_name: str
) -> dict[str, Any]:
    """Per response and group the two counts behind a share, so a report can pair responses across runs."""
    return {
        "ids": ids,
        "groups": {
            name: {hit_name: hits[:, g].astype(int).tolist(), total_name: totals[:, g].astype(int).tolist()}
            for g, name in enumerate(names)
        },
    }


def _top_tokens(
    responses: list[ShiftResponse], tags: list[list[Tag]], classes: tuple[str, ...], limit: int
) -> list[dict[str, Any]]:
    occurrences: Counter[int] = Counter()
    hits: Counter[int] = Counter()
    text: dict[int, str] = {}
    categories: dict[int, Counter[str]] = {}
    words: dict[int, Counter[str]] = {}
    for response, response_tags in zip(responses, tags, strict=True):
        for token_id, token, klass, (category, word) in zip(
            response.token_ids.tolist(), response.tokens, response.klass, response_tags, strict=True
        ):
            occurrences[token_id] += 1
            text.setdefault(token_id, token)
            if klass in classes:
                hits[token_id] += 1
                categories.setdefault(token_id, Counter())[category] += 1
                if word is not None:
                    words.setdefault(token_id, Counter())[word] += 1
    ranked = sorted(hits, key=lambda token_id: (-hits[token_id], token_id))[:limit]
    out = []
    for token_id in ranked:
        category = categories[token_id].most_common(1)[0][0]
        out.append(
            {
                "token": text[token_id],
                "token_id": token_id,
                "count": hits[token_id],
                "occurrences": occurrences[token_id],
                "rate": rounded(hits[token_id] / occurrences[token_id]),
                "category": category,
                "style": category in STYLE_CATEGORIES,
                "words": [word for word, _ in words.get(token_id, Counter()).most_common(3)],
            }
        )
    return out


def style_token_summary(
    responses: list[ShiftResponse],
    tags: list[list[Tag]],
    *,
    top_n: int = 125,
    bootstrap_samples: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Style shares per token group and the most frequent shifted and marginal tokens.

    Args:
        responses: The shift run's responses.
        tags: ``tag_tokens`` of each response, token for token.
        top_n: Tokens listed per class (the paper's Fig. 12 shows 125).
        bootstrap_samples: Resamples of responses behind each interval.
        seed: Seed of the resampling.
    """
    names = list(CLASS_GROUPS)
    n = len(responses)
    totals = np.zeros((n, len(names)))
    styled = np.zeros((n, len(names)))
    by_category = {name: Counter() for name in names}
    for row, (response, response_tags) in enumerate(zip(responses, tags, strict=True)):
        categories = np.array([category for category, _ in response_tags], dtype=object)
        is_style = np.isin(categories, list(STYLE_CATEGORIES))
        for g, name in enumerate(names):
            in_group = np.isin(response.klass, CLASS_GROUPS[name])
            totals[row, g] = in_group.sum()
            styled[row, g] = (in_group & is_style).sum()
            by_category[name].update(categories[in_group].tolist())
    shares = group_shares(styled, totals, Resampling(bootstrap_samples, seed), names)
    for name in names:
        shares[name]["by_category"] = {category: by_category[name].get(category, 0) for category in CATEGORIES}
    headline = shares[HEADLINE_GROUP]
    return {
        "definition": "share of tokens whose word is a discourse marker, a function word or formatting "
        "(lexicon and rules in tunescope.borrow.lexicon); 95% intervals by bootstrap over responses (BCa); "
        "per_response holds each response's style and total token counts per group",
        "headline": {"group": HEADLINE_GROUP, "style_share": headline["value"], "n_tokens": headline["n"]},
        "share": shares,
        "top_shifted": _top_tokens(responses, tags, ("shifted",), top_n),
        "top_marginal": _top_tokens(responses, tags, ("marginal",), top_n),
        "top_shifted_or_marginal": _top_tokens(responses, tags, ("shifted", "marginal"), top_n),
        "per_response": per_response_counts(
            [response.example_id for response in responses], styled, totals, names, "style", "tokens"
        ),
    }
