"""summary.json: the token-level table reduced to the paper's numbers, with bootstrap intervals.

Two averages are reported for every metric (docs/method.md#averaging): **micro**, over all tokens
pooled (what the paper and AlignTDS report), and **macro**, the mean of per-response means. The 95%
intervals come from a bootstrap over responses: resample responses with replacement, recompute the
statistic, take the 2.5th and 97.5th percentiles. Resampling whole responses respects that tokens
of one response are not independent.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from tunescope.distributions import CLASSES
from tunescope.shift.initiation import SEGMENTER

SUMMARY_COLUMNS = [
    "example_index", "position", "relative_position", "token_id", "token", "klass", "base_rank", "base_prob",
    "tuned_prob", "kl", "kl_reverse", "is_tuned_top1", "sentence_index", "initiation",
]  # fmt: skip

FLOAT_COLUMNS = ("kl", "kl_reverse", "base_prob", "tuned_prob")
CURVE_METRICS = ("kl_mean", "base_prob_mean", "base_rank_mean", *CLASSES)
"""Metrics reported per relative-position bucket and per absolute position."""
TR_CAP = 50
"""Cap of the 0-indexed rank ``tr_mean`` (AlignTDS's TR axis, for exact-mode runs)."""


def _number(value: float) -> float | None:
    """A JSON-ready float: rounded to 6 significant digits, None for NaN."""
    if value is None or not math.isfinite(value):
        return None
    return float(f"{value:.6g}")


def _percentiles(resampled: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """2.5th and 97.5th percentiles over resamples (axis 0), ignoring resamples where the statistic is undefined."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a group that no resample reaches is all NaN
        low, high = np.nanpercentile(resampled, [2.5, 97.5], axis=0)
    return low, high


class Bootstrap:
    """Resamples of responses, shared by every statistic so that their intervals are comparable."""

    def __init__(self, n_examples: int, samples: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        # Row s holds how often each response is drawn in resample s.
        self.weights = rng.multinomial(n_examples, np.full(n_examples, 1 / n_examples), size=samples).astype(float)

    def ratio(self, sums: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Micro mean Σ sums / Σ counts over responses (axis 0) with its interval: (value, low, high)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            value = sums.sum(axis=0) / counts.sum(axis=0)
            if not len(self.weights):
                return value, np.full_like(value, np.nan), np.full_like(value, np.nan)
            resampled = (self.weights @ sums) / (self.weights @ counts)
        return value, *_percentiles(resampled)

    def mean(self, per_example: np.ndarray) -> tuple[float, float, float]:
        """Macro mean over responses with its interval."""
        value = float(per_example.mean())
        if not len(self.weights):
            return value, math.nan, math.nan
        resampled = self.weights @ per_example / len(per_example)
        low, high = np.percentile(resampled, [2.5, 97.5])
        return value, float(low), float(high)


def _entry(value: float, low: float, high: float) -> dict[str, Any]:
    return {"value": _number(value), "ci95": [_number(low), _number(high)]}


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
        **{name: (klass == name).astype(float) for name in CLASSES},
        "tuned_top1_agreement": columns["is_tuned_top1"].astype(float),
    }
    if mode == "exact":
        arrays["tr_mean"] = np.minimum(columns["base_rank"] - 1, TR_CAP).astype(float)
    return {name: values for name, values in arrays.items() if not np.isnan(values).all()}


def _curves(
    example: np.ndarray, n: int, metrics: dict[str, np.ndarray], group: np.ndarray, groups: int, boot: Bootstrap
) -> list[dict[str, Any]]:
    """Micro means with intervals of ``CURVE_METRICS`` in each of ``groups`` groups of tokens."""
    counts = _per_example_sums(example, n, np.ones(len(example)), group, groups)
    rows: list[dict[str, Any]] = [{"n_tokens": int(c)} for c in counts.sum(axis=0)]
    for name in CURVE_METRICS:
        if name not in metrics:
            continue
        value, low, high = boot.ratio(_per_example_sums(example, n, metrics[name], group, groups), counts)
        for row, v, lo, hi in zip(rows, value, low, high, strict=True):
            row[name] = _entry(v, lo, hi)
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


def _initiation(columns: dict[str, np.ndarray], example: np.ndarray, n: int, boot: Bootstrap) -> dict[str, Any]:
    """Mean KL of the first tokens of sentences vs the rest (Fig. 4), with intervals."""
    in_sentence = columns["sentence_index"] >= 0
    first = in_sentence & columns["initiation"]
    rest = in_sentence & ~columns["initiation"]
    kl = columns["kl"]
    sums = np.stack([_per_example_sums(example, n, kl * m)[:, 0] for m in (first, rest)], axis=1)
    counts = np.stack([_per_example_sums(example, n, m.astype(float))[:, 0] for m in (first, rest)], axis=1)
    value, low, high = boot.ratio(sums, counts)
    out = {"kl_first": _entry(value[0], low[0], high[0]), "kl_rest": _entry(value[1], low[1], high[1])}
    with np.errstate(invalid="ignore", divide="ignore"):
        relative = (value[0] - value[1]) / value[1]
        if len(boot.weights):
            resampled = (boot.weights @ sums) / (boot.weights @ counts)
            rel_low, rel_high = _percentiles((resampled[:, 0] - resampled[:, 1]) / resampled[:, 1])
        else:
            rel_low = rel_high = math.nan
    out["relative_difference"] = _entry(relative, rel_low, rel_high)
    sentences = {(e, s) for e, s in zip(example[in_sentence], columns["sentence_index"][in_sentence], strict=True)}
    out.update(n_sentences=len(sentences), n_first=int(first.sum()), n_rest=int(rest.sum()), segmenter=SEGMENTER)
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
    boot = Bootstrap(n, bootstrap_samples, seed)
    metrics = _metric_arrays(columns, mode)
    counts = _per_example_sums(example, n, np.ones(len(example)))[:, 0]

    micro, macro = {}, {}
    for name, values in metrics.items():
        sums = _per_example_sums(example, n, values)[:, 0]
        micro[name] = _entry(*(float(x) for x in boot.ratio(sums, counts)))
        macro[name] = _entry(*boot.mean(sums / counts))

    kl = columns["kl"]
    summary: dict[str, Any] = {
        "mode": mode,
        "n_examples": n,
        "n_tokens": int(len(example)),
        **{name: micro[name]["value"] for name in (*CLASSES, "kl_mean", "base_prob_mean", "base_rank_mean")},
        "micro": micro,
        "macro": macro,
        "base_rank_median": _number(float(np.median(columns["base_rank"]))),
        "kl_quantiles": {f"q{int(q * 100)}": _number(float(np.quantile(kl, q))) for q in (0.5, 0.9, 0.95, 0.99)}
        | {"max": _number(float(kl.max()))},
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
