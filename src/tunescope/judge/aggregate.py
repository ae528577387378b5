"""From judgement records to the numbers in ``judge_summary.json``.

Pure functions over the records of :mod:`tunescope.judge.requests`. Failures (no reply, no JSON,
a missing aspect, "N/A", a score off the scale) are counted by kind and left out of every mean;
nothing is imputed. An item counts toward an aspect's mean only when that aspect parsed, and toward
the five-aspect (overall) average only when every aspect did; the items left out are counted
(``dropped``). Uncertainty is a bootstrap over items (:func:`tunescope.stats.bootstrap_mean`, BCa,
seeded, so a summary is reproducible), because judge scores are few, discrete and skewed.

Pairwise comparisons are asked in both orders. Per item and aspect the two verdicts, read from
the first model's side, are combined: when they agree that is the outcome; when they disagree the
judge was swayed by position, and the outcome is a tie (MT-bench's convention). How often the two
orders agree is reported as ``consistency``; how often a single verdict picked the answer shown
first, as ``first_shown_preferred`` (0.5 means no position bias).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any

import numpy as np

from tunescope.judge.prompts import SCORE_RANGE
from tunescope.stats import bootstrap_mean

CONFIDENCE = 0.95
JUSTEVAL_NA_SCORE = 5.0
"""What just-eval substitutes for an "N/A" score; used only in the flagged compatibility view."""


def spearman(x: Iterable[float], y: Iterable[float]) -> float | None:
    """Spearman rank correlation (ties get their average rank); None when undefined."""
    a, b = np.asarray(list(x), dtype=float), np.asarray(list(y), dtype=float)
    if a.size < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return None
    return round(float(np.corrcoef(_ranks(a), _ranks(b))[0, 1]), 4)


def _ranks(values: np.ndarray) -> np.ndarray:
    order = values.argsort(kind="stable")
    ranks = np.empty(values.size, dtype=float)
    ranks[order] = np.arange(1, values.size + 1)
    for value in np.unique(values):  # average the ranks of tied values
        tied = values == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def mean_with_ci(values: list[float], samples: int, seed: int) -> dict[str, Any]:
    """``n``, ``mean`` and the 95% bootstrap interval ``ci95`` of ``values`` (None without one).

    The interval is :func:`tunescope.stats.bootstrap_mean`'s (BCa, percentile where BCa is undefined),
    resampling items; fewer than two values, or ``samples`` 0, give no interval.
    """
    estimate = bootstrap_mean(values, resamples=samples, seed=seed)
    return {
        "n": len(values),
        "mean": round(estimate.value, 4) if estimate.value is not None else None,
        "ci95": [round(bound, 4) for bound in estimate.ci95] if estimate.ci95 else None,
    }


def failure_counts(records: list[dict[str, Any]], aspects: tuple[str, ...]) -> dict[str, Any]:
    """Failures by kind and by aspect, and how many records had at least one."""
    by_kind: Counter[str] = Counter()
    by_aspect: dict[str, Counter[str]] = {aspect: Counter() for aspect in aspects}
    for record in records:
        for aspect, kind in record.get("failures", {}).items():
            by_kind[kind] += 1
            by_aspect.setdefault(aspect, Counter())[kind] += 1
    return {
        "records_with_failures": sum(1 for record in records if record.get("failures")),
        "aspect_failures": sum(by_kind.values()),
        "by_kind": dict(sorted(by_kind.items())),
        "by_aspect": {aspect: dict(sorted(counts.items())) for aspect, counts in by_aspect.items()},
    }


def call_counts(records: list[dict[str, Any]]) -> dict[str, int]:
    """What the judgements cost: requests, retries, cache hits, tokens (cached replies are free)."""
    paid = [record for record in records if record["status"] != "error" and not record.get("cached")]
    return {
        "judgements": len(records),
        "from_cache": sum(1 for record in records if record.get("cached")),
        "requests": sum(record.get("attempts", 0) for record in records if not record.get("cached")),
        "retries": sum(max(0, record.get("attempts", 1) - 1) for record in records if not record.get("cached")),
        "request_errors": sum(1 for record in records if record["status"] == "error"),
        "prompt_tokens": sum(record.get("usage", {}).get("prompt_tokens", 0) for record in paid),
        "completion_tokens": sum(record.get("usage", {}).get("completion_tokens", 0) for record in paid),
    }


# ------------------------------------------------------------------------------------------
# Absolute scores (score and safety modes)


def item_average(record: dict[str, Any], aspects: tuple[str, ...]) -> float | None:
    """The mean of an item's scores over ``aspects``, or None unless every aspect parsed.

    Averaging whichever aspects parsed would let one valid aspect out of five stand for the whole
    item, and mix items scored on different aspects; such items are left out and counted instead.
    """
    scores = record.get("scores") or {}
    values = [scores.get(aspect) for aspect in aspects]
    if not aspects or any(not isinstance(value, int | float) for value in values):
        return None
    return float(np.mean(values))


def score_summary(
    records: list[dict[str, Any]],
    aspects: tuple[str, ...],
    *,
    samples: int = 2000,
    seed: int = 0,
    justeval_na_as_five: bool = False,
) -> dict[str, Any]:
    """Summary of one model's scored answers.

    Args:
        records: One record per item (score or safety mode).
        aspects: The aspects scored.
        samples: Bootstrap resamples.
        seed: Bootstrap seed.
        justeval_na_as_five: Also report just-eval's means, where "N/A" counts as 5.0, in a
            separate, labelled block (for reproducing published numbers only).
    """
    low, high = SCORE_RANGE
    per_aspect: dict[str, Any] = {}
    for aspect in aspects:
        pairs = [(r["scores"][aspect], r.get("response_words")) for r in records if aspect in r.get("scores", {})]
        values = [score for score, _ in pairs]
        counts = Counter(values)
        lengths = [(score, words) for score, words in pairs if words is not None]
        per_aspect[aspect] = {
            **mean_with_ci(values, samples, seed),
            "dropped": len(records) - len(values),
            "std": round(float(np.std(values, ddof=1)), 4) if len(values) > 1 else None,
            "histogram": {str(score): counts.get(score, 0) for score in range(low, high + 1)},
            "length_spearman": spearman([w for _, w in lengths], [s for s, _ in lengths]),
        }
    averages = [avg for r in records if (avg := item_average(r, aspects)) is not None]
    words = [r["response_words"] for r in records if r.get("response_words") is not None]
    tokens = [r["response_tokens"] for r in records if r.get("response_tokens") is not None]
    summary: dict[str, Any] = {
        "items": len(records),
        "judged": sum(1 for r in records if r["status"] != "error"),
        "complete": sum(1 for r in records if r["status"] == "ok"),
        "aspects": per_aspect,
        "overall": {
            **mean_with_ci(averages, samples, seed),
            "dropped": len(records) - len(averages),
            "definition": "mean over items of the average of all aspects; items missing any aspect are dropped",
        },
        "failures": failure_counts(records, aspects),
        "response_length": {
            "words_mean": round(float(np.mean(words)), 2) if words else None,
            "words_median": float(np.median(words)) if words else None,
            "tokens_mean": round(float(np.mean(tokens)), 2) if tokens else None,
        },
        "by_tag": tag_breakdown(records, aspects),
    }
    if justeval_na_as_five:
        summary["justeval_compatible"] = justeval_means(records, aspects)
    return summary


def tag_breakdown(records: list[dict[str, Any]], aspects: tuple[str, ...]) -> dict[str, Any]:
    """Per task tag: items, mean per aspect, and the mean of per-item averages (Tables 16-17)."""
    by_tag: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        for tag in record.get("tags", []):
            by_tag[tag].append(record)
    breakdown = {}
    for tag, tagged in sorted(by_tag.items()):
        aspect_means = {}
        for aspect in aspects:
            values = [r["scores"][aspect] for r in tagged if aspect in r.get("scores", {})]
            aspect_means[aspect] = round(float(np.mean(values)), 4) if values else None
        averages = [avg for r in tagged if (avg := item_average(r, aspects)) is not None]
        breakdown[tag] = {
            "items": len(tagged),
            "overall": round(float(np.mean(averages)), 4) if averages else None,
            "aspects": aspect_means,
        }
    return breakdown


def justeval_means(records: list[dict[str, Any]], aspects: tuple[str, ...]) -> dict[str, Any]:
    """Per-aspect means as just-eval computes them: "N/A" (and null) counted as 5.0.

    Other failures are still left out, as just-eval leaves out unparsed replies.
    """
    means = {}
    for aspect in aspects:
        values = [
            float(r["scores"][aspect]) if aspect in r.get("scores", {}) else JUSTEVAL_NA_SCORE
            for r in records
            if aspect in r.get("scores", {}) or r.get("failures", {}).get(aspect) == "na"
        ]
        means[aspect] = round(float(np.mean(values)), 4) if values else None
    imputed = sum(1 for r in records for kind in r.get("failures", {}).values() if kind == "na")
    return {
        "note": f"just-eval's convention, for comparison with published numbers only: {imputed} 'N/A' "
        f"scores counted as {JUSTEVAL_NA_SCORE}",
        "imputed": imputed,
        "means": means,
    }


# ------------------------------------------------------------------------------------------
# Pairwise comparisons


def _outcome(choice: str, first_is_a: bool) -> str:
    """A verdict from the first model's side: win, tie or loss."""
    if choice == "tie":
        return "tie"
    return "win" if (choice == "A") == first_is_a else "loss"


def pairwise_summary(
    records: list[dict[str, Any]],
    aspects: tuple[str, ...],
    first: str,
    second: str,
    *,
    samples: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """Win/tie/loss of ``first`` against ``second`` per aspect, both orders combined."""
    by_item: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for record in records:
        by_item[record["item_id"]][record["order"]] = record
    per_aspect = {}
    for aspect in aspects:
        outcomes: list[str] = []
        agreements = 0
        shown_first = decided = incomplete = 0
        for orders in by_item.values():
            verdicts = []
            for order, record in orders.items():
                choice = record.get("choices", {}).get(aspect)
                if choice is None:
                    continue
                verdicts.append(_outcome(choice, first_is_a=(order == "ab")))
                if choice != "tie":
                    decided += 1
                    shown_first += choice == "A"
            if len(verdicts) < 2:
                incomplete += 1
                continue
            agreements += verdicts[0] == verdicts[1]
            outcomes.append(verdicts[0] if verdicts[0] == verdicts[1] else "tie")
        counts = Counter(outcomes)
        points = [{"win": 1.0, "tie": 0.5, "loss": 0.0}[outcome] for outcome in outcomes]
        per_aspect[aspect] = {
            "n": len(outcomes),
            "wins": counts["win"],
            "ties": counts["tie"],
            "losses": counts["loss"],
            "win_rate": round(float(np.mean(points)), 4) if points else None,
            "ci95": mean_with_ci(points, samples, seed)["ci95"],
            "consistency": round(agreements / len(outcomes), 4) if outcomes else None,
            "first_shown_preferred": round(shown_first / decided, 4) if decided else None,
            "incomplete": incomplete,
        }
    return {
        "first": first,
        "second": second,
        "items": len(by_item),
        "win_rate_definition": "(wins + ties/2) / n, for the first model; orders that disagree count as a tie",
        "aspects": per_aspect,
        "failures": failure_counts(records, aspects),
    }
