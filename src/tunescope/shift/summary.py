"""summary.json: the token-level table reduced to the paper's numbers, with bootstrap intervals.

Two averages are reported for every metric (docs/method.md#averaging): **micro**, over all tokens
pooled (what the paper and AlignTDS report), and **macro**, the mean of per-response means. The 95%
intervals come from a bootstrap over responses (:func:`tunescope.stats.bootstrap_ratios`: whole
responses are resampled, which respects that tokens of one response are not independent; BCa
intervals, percentile where BCa is undefined). Every interval of one summary is read from the same
resamples. The method, resamples and seed are recorded under ``bootstrap``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from tunescope.distributions import CLASSES
from tunescope.shift.initiation import SEGMENTER
from tunescope.stats import BootstrapMethod, Estimate, bootstrap_ratios, paired_bootstrap

SUMMARY_COLUMNS = [
    "example_index", "position", "relative_position", "token_id", "token", "klass", "base_rank", "base_prob",
    "tuned_prob", "kl", "kl_reverse", "is_tuned_top1", "sentence_index", "initiation",
]  # fmt: skip

FLOAT_COLUMNS = ("kl", "kl_reverse", "base_prob", "tuned_prob")
CURVE_METRICS = ("kl_mean", "base_prob_mean", "base_rank_mean", "tr_mean", *CLASSES)
"""Metrics reported per relative-position bucket and per absolute position."""
TR_CAP = 50
"""Cap of the 0-indexed rank TR (AlignTDS's axis, which the paper's Fig. 1 plots)."""
BOOTSTRAP_METHOD: BootstrapMethod = "BCa"
"""Interval method of every summary interval (percentile where BCa is undefined, e.g. all resamples equal)."""


def _number(value: float | None) -> float | None:
    """A JSON-ready float: rounded to 6 significant digits, None for NaN."""
    if value is None or not math.isfinite(value):
        return None
    return float(f"{value:.6g}")


@dataclass(frozen=True)
class Resampling:
    """How the summary's intervals are drawn."""

    resamples: int
    """Bootstrap resamples of responses (0: no intervals)."""
    seed: int
    """Seed of the resampling."""

    def ratios(self, sums: np.ndarray, counts: np.ndarray) -> list[Estimate]:
        """Pooled means ``Σ sums / Σ counts`` over responses (axis 0) of each column, with intervals."""
        return bootstrap_ratios(
            sums.T, counts.T, resamples=self.resamples, seed=self.seed, method=BOOTSTRAP_METHOD,
            label="pooled mean over responses",
        )  # fmt: skip

    def describe(self) -> dict[str, Any]:
        """The ``bootstrap`` entry of summary.json."""
        return {
            "unit": "responses",
            "resamples": self.resamples,
            "seed": self.seed,
            "method": f"{BOOTSTRAP_METHOD} (percentile where BCa is undefined)",
            "confidence": 0.95,
        }


def _entry(estimate: Estimate) -> dict[str, Any]:
    low, high = estimate.ci95 or (None, None)
    return {"value": _number(estimate.value), "ci95": [_number(low), _number(high)]}


def _per_example_sums(
    example: np.ndarray, n: int, values: np.ndarray, group: np.ndarray | None = None, groups: int = 1
) -> np.ndarray:
    """Sums of ``values`` per (response, group) as an [n, groups] array."""
    index = example * groups + (group if group is not None else 0)
    return np.bincount(index, weights=values, minlength=n * groups).reshape(n, groups)


def _metric_arrays(columns: dict[str, np.ndarray], mode: str) -> dict[str, np.ndarray]:
    klass = columns["klass"]
    arrays = {
        "kl_mean": columns["kl"],
        "kl_reverse_mean": columns["kl_reverse"],
        "base_prob_mean": columns["base_prob"],
        "tuned_prob_mean": columns["tuned_prob"],
        "base_rank_mean": columns["base_rank"].astype(float),
        "tr_mean": tr_values(columns["base_rank"], mode),
        **{name: (klass == name).astype(float) for name in CLASSES},
        "tuned_top1_agreement": columns["is_tuned_top1"].astype(float),
    }
    return {name: values for name, values in arrays.items() if not np.isnan(values).all()}


def tr_values(base_rank: np.ndarray, mode: str) -> np.ndarray:
    """The 0-indexed base rank capped at ``TR_CAP`` (the paper's Fig. 1 axis) from the ``base_rank`` column.

    Exact mode stores the 1-indexed, uncapped rank; AlignTDS mode already stores TR.
    """
    ranks = base_rank.astype(float)
    return np.minimum(ranks - 1, TR_CAP) if mode == "exact" else ranks


def _curves(
    example: np.ndarray, n: int, metrics: dict[str, np.ndarray], group: np.ndarray, groups: int, boot: Resampling
) -> list[dict[str, Any]]:
    """Micro means with intervals of ``CURVE_METRICS`` in each of ``groups`` groups of tokens."""
    counts = _per_example_sums(example, n, np.ones(len(example)), group, groups)
    rows: list[dict[str, Any]] = [{"n_tokens": int(c)} for c in counts.sum(axis=0)]
    names = [name for name in CURVE_METRICS if name in metrics]
    if not names:
        return rows
    # One bootstrap for every (metric, group) column: [responses, metrics x groups].
    sums = np.concatenate([_per_example_sums(example, n, metrics[name], group, groups) for name in names], axis=1)
    estimates = boot.ratios(sums, np.tile(counts, len(names)))
    for m, name in enumerate(names):
        for g, row in enumerate(rows):
            row[name] = _entry(estimates[m * groups + g])
    return rows


def _top_tokens(columns: dict[str, np.ndarray], klass: str, limit: int) -> list[dict[str, Any]]:
    token_ids = columns["token_id"]
    occurrences = np.bincount(token_ids)
    hits = np.bincount(token_ids[columns["klass"] == klass], minlength=len(occurrences))
    order = sorted(np.flatnonzero(hits), key=lambda t: (-hits[t], t))[:limit]
    unique_ids, first_row = np.unique(token_ids, return_index=True)
    first_row_of = dict(zip(unique_ids.tolist(), first_row.tolist(), strict=True))
    return [
        {
            "token": str(columns["token"][first_row_of[int(t)]]),
            "token_id": int(t),
            "count": int(hits[t]),
            "occurrences": int(occurrences[t]),
            "rate": _number(hits[t] / occurrences[t]),
        }
        for t in order
    ]


def initiation_ratio(
    first_sums: np.ndarray, first_counts: np.ndarray, rest_sums: np.ndarray, rest_counts: np.ndarray, axis: int = -1
) -> np.ndarray:
    """Pooled KL of sentence-initial tokens over pooled KL of the rest (the paper's Fig. 4 ratio).

    Arguments are per response: the KL summed over its initiation tokens, their count, and the same
    for the rest of its sentence tokens. Vectorised over ``axis`` (responses), for the bootstrap.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        first = first_sums.sum(axis=axis) / first_counts.sum(axis=axis)
        return first / (rest_sums.sum(axis=axis) / rest_counts.sum(axis=axis))


def initiation_sums(
    columns: dict[str, np.ndarray], example: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per response: summed KL and count of its initiation tokens, then of its other sentence tokens."""
    in_sentence = columns["sentence_index"] >= 0
    first = in_sentence & columns["initiation"].astype(bool)
    rest = in_sentence & ~columns["initiation"].astype(bool)
    kl = columns["kl"]
    return (
        _per_example_sums(example, n, kl * first)[:, 0],
        _per_example_sums(example, n, first.astype(float))[:, 0],
        _per_example_sums(example, n, kl * rest)[:, 0],
        _per_example_sums(example, n, rest.astype(float))[:, 0],
    )


def _relative_difference(
    first_sums: np.ndarray, first_counts: np.ndarray, rest_sums: np.ndarray, rest_counts: np.ndarray, axis: int = -1
) -> np.ndarray:
    return initiation_ratio(first_sums, first_counts, rest_sums, rest_counts, axis) - 1


def _initiation(columns: dict[str, np.ndarray], example: np.ndarray, n: int, boot: Resampling) -> dict[str, Any]:
    """Mean KL of the first tokens of sentences vs the rest (Fig. 4), with intervals."""
    first_sums, first_counts, rest_sums, rest_counts = initiation_sums(columns, example, n)
    first, rest = boot.ratios(np.stack([first_sums, rest_sums], 1), np.stack([first_counts, rest_counts], 1))
    relative = paired_bootstrap(
        (first_sums, first_counts, rest_sums, rest_counts), _relative_difference, resamples=boot.resamples,
        seed=boot.seed, method=BOOTSTRAP_METHOD, label="(KL first − KL rest) / KL rest, bootstrap over responses",
    )  # fmt: skip
    out = {"kl_first": _entry(first), "kl_rest": _entry(rest), "relative_difference": _entry(relative)}
    in_sentence = columns["sentence_index"] >= 0
    sentences = {(e, s) for e, s in zip(example[in_sentence], columns["sentence_index"][in_sentence], strict=True)}
    out.update(
        n_sentences=len(sentences), n_first=int(first_counts.sum()), n_rest=int(rest_counts.sum()), segmenter=SEGMENTER
    )
    return out


def summarize_columns(
    columns: dict[str, np.ndarray],
    *,
    mode: str,
    relative_buckets: int = 10,
    max_position: int = 100,
    top_tokens: int = 50,
    bootstrap_samples: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Aggregate per-token columns (those in ``SUMMARY_COLUMNS``) into the summary's numbers."""
    examples, example = np.unique(columns["example_index"], return_inverse=True)
    n = len(examples)
    boot = Resampling(bootstrap_samples, seed)
    metrics = _metric_arrays(columns, mode)
    counts = _per_example_sums(example, n, np.ones(len(example)))[:, 0]
    names = list(metrics)
    sums = np.stack([_per_example_sums(example, n, metrics[name])[:, 0] for name in names], axis=1)
    micro = dict(zip(names, map(_entry, boot.ratios(sums, counts[:, None])), strict=True))
    # Macro: each response's own mean, averaged with equal weight (a ratio with counts of one).
    with np.errstate(divide="ignore", invalid="ignore"):
        per_response = sums / counts[:, None]
    macro = dict(zip(names, map(_entry, boot.ratios(per_response, np.ones_like(per_response))), strict=True))

    kl = columns["kl"]
    tr = tr_values(columns["base_rank"], mode)
    summary: dict[str, Any] = {
        "mode": mode,
        "n_examples": n,
        "n_tokens": int(len(example)),
        **{name: micro[name]["value"] for name in (*CLASSES, "kl_mean", "base_prob_mean", "base_rank_mean")},
        "tr_mean": micro["tr_mean"]["value"],
        "micro": micro,
        "macro": macro,
        "base_rank_median": _number(float(np.median(columns["base_rank"]))),
        "tr_median": _number(float(np.median(tr))),
        "tr_cap": TR_CAP,
        "kl_quantiles": {f"q{int(q * 100)}": _number(float(np.quantile(kl, q))) for q in (0.5, 0.9, 0.95, 0.99)}
        | {"max": _number(float(kl.max()))},
        "bootstrap": boot.describe(),
    }
    bucket = np.minimum((columns["relative_position"] * relative_buckets).astype(int), relative_buckets - 1)
    summary["by_relative_position"] = [
        {"bucket": [b / relative_buckets, (b + 1) / relative_buckets], **row}
        for b, row in enumerate(_curves(example, n, metrics, bucket, relative_buckets, boot))
    ]
    early = columns["position"] < max_position
    rows = _curves(example[early], n, {k: v[early] for k, v in metrics.items()},
                   columns["position"][early], max_position, boot)  # fmt: skip
    summary["by_position"] = [{"position": p + 1, **row} for p, row in enumerate(rows) if row["n_tokens"]]
    summary["top_shifted_tokens"] = _top_tokens(columns, "shifted", top_tokens)
    summary["top_marginal_tokens"] = _top_tokens(columns, "marginal", top_tokens)
    summary["initiation"] = _initiation(columns, example, n, boot)
    return summary


def summarize_table(path: str, **settings: Any) -> dict[str, Any]:
    """Read the summary's columns of a tokens.parquet file and aggregate them (see ``summarize_columns``)."""
    table = pq.read_table(path, columns=SUMMARY_COLUMNS)
    mode = (table.schema.metadata or {}).get(b"tunescope.mode", b"exact").decode()
    columns = {}
    for name in SUMMARY_COLUMNS:
        values = table.column(name).to_numpy(zero_copy_only=False)
        columns[name] = values.astype(float) if name in FLOAT_COLUMNS else values  # null -> NaN
    return summarize_columns(columns, mode=mode, **settings)
