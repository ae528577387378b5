"""Statistics behind every tunescope finding: estimates with intervals, paired comparisons, decision rules.

Every number a finding rests on is an :class:`Estimate`: a value with its 95% interval (and the 90%
interval an equivalence test needs), the number of items it was computed over, its standard error,
and the method, in words. The functions here build them:

* bootstrap over items (responses, prompts, questions, passages) with :func:`scipy.stats.bootstrap`:
  one sample (:func:`bootstrap_mean`, :func:`bootstrap_ratio`, and :func:`bootstrap_ratios` for many
  groups of the same items from the same resamples), matched items (:func:`paired_mean_difference`,
  :func:`paired_ratio_difference`, :func:`paired_bootstrap` for any statistic), unmatched samples
  (:func:`independent_ratio_difference`, :func:`independent_ratio_of_means`), and the slope of a
  statistic against a covariate such as log10(training-set size), resampling within each group
  (:func:`bootstrap_slope`, :func:`paired_slope_difference`, :func:`relative_slope`); every one takes the
  keywords of :class:`Resampling` (resamples, seed, interval method);
* proportions: one proportion against a chance rate (:func:`proportion`, Wilson interval and an
  exact binomial test) and the difference of two proportions on the same questions
  (:func:`paired_proportions`, Newcombe's hybrid score interval and the exact McNemar test).

Findings are then decided by pre-registered rules, each a pure function returning a
:class:`Decision` whose ``rule`` sentence is shown next to the verdict:

* :func:`difference_verdict` for a claimed difference (the 95% interval must exclude 0 on the
  claimed side);
* :func:`no_effect_verdict` for a claimed absence of effect (an equivalence test against a stated
  margin, plus a positive control showing the instrument could have seen an effect).

An estimate without an interval (too few items, the bootstrap switched off) never crashes a rule:
the verdict is *inconclusive* and the reason says why. Each estimate also gives the smallest effect
the run could have detected (:meth:`Estimate.detectable_effect`), and the items a run would need to
detect a given effect or show equivalence (:meth:`Estimate.items_to_detect`,
:meth:`Estimate.items_for_equivalence`), so an inconclusive verdict says how much more data it needs.
"""

from __future__ import annotations

import math
import operator
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypedDict, Unpack

import numpy as np

Verdict = Literal["reproduced", "not reproduced", "inconclusive", "not tested"]
VERDICTS: tuple[Verdict, ...] = ("reproduced", "not reproduced", "inconclusive", "not tested")
BootstrapMethod = Literal["BCa", "percentile"]

ALPHA = 0.05
"""Two-sided significance level of every interval and test (so intervals are 95%)."""
POWER = 0.80
"""Power at which :meth:`Estimate.detectable_effect` is stated."""
RESAMPLES = 2000
"""Default bootstrap resamples."""
_MAX_BATCH_ELEMENTS = 2_000_000
"""Resampled values held in memory at once (resamples per batch x items): bounds memory, keeps numpy vectorised."""

Statistic = Callable[..., Any]
"""A vectorised statistic: ``statistic(*samples, axis=-1)`` reduces the last axis of every sample."""
Values = Sequence[float] | np.ndarray
"""One value per item."""
SumsCounts = tuple[Values, Values]
"""Per item, a numerator and a denominator (e.g. a response's summed KL and its token count)."""


class Resampling(TypedDict, total=False):
    """How a bootstrap draws its resamples: the keyword arguments every bootstrap function here takes."""

    resamples: int
    """Bootstrap resamples (default :data:`RESAMPLES`; 0: no interval, so no verdict)."""
    seed: int
    """Seed of the resampling (default 0)."""
    method: BootstrapMethod
    """How the interval is read from the resamples: BCa (default) or percentile; percentile where BCa is undefined."""


def _number(value: Any) -> float | None:
    """A finite float, or None (JSON has no NaN)."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _interval(low: Any, high: Any) -> tuple[float, float] | None:
    low, high = _number(low), _number(high)
    return None if low is None or high is None else (low, high)


@dataclass(frozen=True)
class Estimate:
    """A statistic with its uncertainty, as every finding and probe result reports it."""

    value: float | None
    """The statistic on the observed data (None when there is no data)."""
    n: int
    """Items the statistic is computed over (questions, responses, passages, ...); summed over groups."""
    method: str
    """How the value and interval were computed, in words (e.g. 'paired bootstrap, BCa, 2000 resamples')."""
    ci95: tuple[float, float] | None = None
    """95% confidence interval; None when none could be computed (see ``note``)."""
    ci90: tuple[float, float] | None = None
    """90% interval, the one an equivalence test at the 5% level uses (two one-sided tests)."""
    se: float | None = None
    """Standard error: the bootstrap distribution's standard deviation, or an analytic one (see ``method``)."""
    p_value: float | None = None
    """Two-sided p-value of the test named in ``method`` (e.g. exact McNemar, binomial against chance)."""
    note: str | None = None
    """Why there is no interval, when there is none."""

    @property
    def has_interval(self) -> bool:
        """Whether a decision rule can use this estimate (both intervals and a value exist)."""
        return self.value is not None and self.ci95 is not None and self.ci90 is not None

    def detectable_effect(self, power: float = POWER, alpha: float = ALPHA) -> float | None:
        """Smallest true effect a two-sided test at ``alpha`` would detect with probability ``power``.

        ``(z_{1-alpha/2} + z_{power}) x SE`` (2.80 SE for 5% and 80%), the usual normal-approximation
        minimum detectable effect. It uses this run's standard error, so it says how large an effect
        the run could have seen, and shrinks as 1/sqrt(n) with more items. None without a standard error.
        """
        from scipy.stats import norm

        if self.se is None:
            return None
        return float((norm.ppf(1 - alpha / 2) + norm.ppf(power)) * self.se)

    def items_to_detect(self, effect: float, power: float = POWER, alpha: float = ALPHA) -> int | None:
        """Items a run like this one would need for its two-sided test to detect ``effect`` with ``power``.

        The standard error shrinks as 1/sqrt(n), so the detectable effect does too:
        ``n x (detectable / effect)^2``, rounded up (normal approximation, the per-item spread of this
        run assumed to hold). None without a standard error or for a zero effect.
        """
        detectable = self.detectable_effect(power, alpha)
        if detectable is None or not effect or self.n <= 0:
            return None
        return max(self.n, math.ceil(self.n * (detectable / abs(effect)) ** 2))

    def items_for_equivalence(self, margin: float, power: float = POWER, alpha: float = ALPHA) -> int | None:
        """Items for an equivalence test against ``±margin`` to succeed with ``power``, were the true effect this value.

        The test succeeds when the 90% interval fits inside the margin, which at true effect
        ``|value|`` needs ``(z_{1-alpha} + z_{power}) x SE <= margin - |value|`` (normal approximation,
        the nearer bound only); the standard error shrinks as 1/sqrt(n). None without a standard
        error, or when the value itself lies at or beyond the margin (no sample size shows equivalence then).
        """
        from scipy.stats import norm

        if self.se is None or self.value is None or abs(self.value) >= margin or self.n <= 0:
            return None
        needed_se = (margin - abs(self.value)) / (norm.ppf(1 - alpha) + norm.ppf(power))
        return max(self.n, math.ceil(self.n * (self.se / needed_se) ** 2))

    def minus(self, reference: float, method: str | None = None) -> Estimate:
        """The estimate less a known constant, e.g. accuracy minus the chance rate, intervals moved with it.

        The p-value is kept: for :func:`proportion` with ``chance=reference`` it tests exactly this
        difference against 0.
        """

        def moved(interval: tuple[float, float] | None) -> tuple[float, float] | None:
            return (interval[0] - reference, interval[1] - reference) if interval else None

        value = None if self.value is None else self.value - reference
        return Estimate(
            value, self.n, method or f"{self.method}; minus {reference:.4g}", moved(self.ci95), moved(self.ci90),
            self.se, self.p_value, self.note,
        )  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        """Plain JSON: numbers, ``[low, high]`` lists, None for what is missing."""
        return {
            "value": _number(self.value),
            "ci95": list(self.ci95) if self.ci95 else None,
            "ci90": list(self.ci90) if self.ci90 else None,
            "n": self.n,
            "se": _number(self.se),
            "p_value": _number(self.p_value),
            "detectable": _number(self.detectable_effect()),
            "method": self.method,
            "note": self.note,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Estimate:
        """Rebuild an estimate written by :meth:`to_json` (``detectable`` is recomputed, not read)."""
        return cls(
            value=data.get("value"),
            n=int(data.get("n", 0)),
            method=data.get("method", ""),
            ci95=_interval(*data["ci95"]) if data.get("ci95") else None,
            ci90=_interval(*data["ci90"]) if data.get("ci90") else None,
            se=data.get("se"),
            p_value=data.get("p_value"),
            note=data.get("note"),
        )


def unavailable(value: float | None, n: int, method: str, why: str) -> Estimate:
    """An estimate without an interval; every decision rule reads it as *inconclusive*, giving ``why``."""
    return Estimate(value=_number(value), n=n, method=method, note=why)


# --- bootstrap ---------------------------------------------------------------------------------------------


def _batch_size(items: int, resamples: int) -> int:
    return max(1, min(resamples, _MAX_BATCH_ELEMENTS // max(items, 1)))


def _run_bootstrap(
    data: tuple[np.ndarray, ...],
    statistic: Statistic,
    *,
    paired: bool,
    label: str,
    resamples: int = RESAMPLES,
    seed: int = 0,
    method: BootstrapMethod = "BCa",
) -> Estimate:
    """The shared engine: point value, then 95% and 90% intervals from one bootstrap distribution.

    ``data`` holds one array per sample; with ``paired`` all are resampled with the same indices (the
    items are matched), otherwise each is resampled on its own (independent samples, or strata).
    """
    from scipy.stats import bootstrap

    sizes = [len(sample) for sample in data]
    n = sizes[0] if paired else sum(sizes)
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # e.g. the mean of no items: NaN, handled just below
        value = _number(statistic(*data, axis=-1))
    description = f"{label}, {method} bootstrap, {resamples} resamples"
    if value is None:
        return unavailable(None, n, description, "the statistic is undefined on these data (e.g. no items)")
    if resamples <= 0:
        return unavailable(value, n, label, "bootstrap off (0 resamples): no interval, so no verdict")
    if min(sizes) < 2:
        return unavailable(value, n, description, "fewer than 2 items in a sample: no interval")

    options = {
        "paired": paired,
        "vectorized": True,
        "batch": _batch_size(max(sizes), resamples),
        "rng": np.random.default_rng(seed),
    }
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        # A degenerate distribution (every resample equal) makes BCa undefined; handled below.
        warnings.simplefilter("ignore")
        result = bootstrap(data, statistic, n_resamples=resamples, method=method, confidence_level=0.95, **options)
        levels = {0.95: _interval(*result.confidence_interval)}
        used = method if levels[0.95] is not None else "percentile"
        # bootstrap_result with n_resamples=0 re-reads the same distribution at another level or method.
        for level in (0.95, 0.90) if used != method else (0.90,):
            again = bootstrap(
                data, statistic, n_resamples=0, bootstrap_result=result, method=used, confidence_level=level, **options
            )
            levels[level] = _interval(*again.confidence_interval)
    if used != method:
        description = f"{label}, percentile bootstrap (BCa undefined: degenerate distribution), {resamples} resamples"
    se = _number(result.standard_error)
    if levels[0.95] is None or levels[0.90] is None or se is None:
        return unavailable(value, n, description, "the statistic is undefined in some resamples: no interval")
    return Estimate(value=value, n=n, method=description, ci95=levels[0.95], ci90=levels[0.90], se=se)


def _as_float(values: Values) -> np.ndarray:
    return np.asarray(values, dtype=float).reshape(-1)


def _paired(
    data: tuple[np.ndarray, ...], statistic: Statistic, label: str, **resampling: Unpack[Resampling]
) -> Estimate:
    if len({len(sample) for sample in data}) > 1:
        raise ValueError(f"per-item arrays differ in length: {[len(sample) for sample in data]}")
    return _run_bootstrap(data, statistic, paired=True, label=label, **resampling)


def paired_bootstrap(
    samples: Sequence[Values],
    statistic: Statistic,
    *,
    label: str = "paired bootstrap over items",
    **resampling: Unpack[Resampling],
) -> Estimate:
    """Bootstrap interval of any statistic of matched per-item arrays (the building block of the others).

    Computes: ``statistic(*samples)`` and its 95% and 90% intervals from ``resamples`` resamples of the
    items (``scipy.stats.bootstrap`` with ``paired=True``: every array is resampled with the same
    indices, so an item's values stay together), BCa by default, percentile when BCa is undefined.

    Assumptions: items are independent draws from the population of interest (prompts, questions,
    passages); values within an item may be arbitrarily dependent, which is why whole items are
    resampled. ``statistic`` must be vectorised: ``statistic(*arrays, axis=-1)`` reduces the last axis.
    """
    return _paired(tuple(_as_float(sample) for sample in samples), statistic, label, **resampling)


def _mean(values: np.ndarray, axis: int = -1) -> np.ndarray:
    return values.mean(axis=axis)


def _ratio(sums: np.ndarray, counts: np.ndarray, axis: int = -1) -> np.ndarray:
    return sums.sum(axis=axis) / counts.sum(axis=axis)


def _ratio_difference(
    a_sums: np.ndarray, a_counts: np.ndarray, b_sums: np.ndarray, b_counts: np.ndarray, axis: int = -1
) -> np.ndarray:
    return _ratio(b_sums, b_counts, axis) - _ratio(a_sums, a_counts, axis)


def bootstrap_mean(values: Values, **resampling: Unpack[Resampling]) -> Estimate:
    """Mean of per-item values with a bootstrap interval over items (``scipy.stats.bootstrap``).

    Assumptions: items are independent; nothing about their distribution (judge scores, per-item
    shares). Use :func:`proportion` for 0/1 outcomes, whose score interval behaves better at small n.
    """
    return _run_bootstrap((_as_float(values),), _mean, paired=True, label="mean over items", **resampling)


def bootstrap_ratio(sums: Values, counts: Values, **resampling: Unpack[Resampling]) -> Estimate:
    """Ratio of sums (a pooled, or micro, mean) with a bootstrap interval over items.

    Computes ``sum(sums) / sum(counts)``: e.g. per response the summed KL and its token count give the
    mean KL per token; per response the count of unshifted tokens and the token count give the
    unshifted share. Items (responses) are resampled whole with ``scipy.stats.bootstrap``, which
    respects that tokens of one response are not independent.

    Assumptions: items are independent; ``counts`` are positive in total.
    """
    data = (_as_float(sums), _as_float(counts))
    return _paired(data, _ratio, "ratio of sums over items (pooled mean)", **resampling)


def _draw_weights(index: np.ndarray, items: int) -> np.ndarray:
    """How often each item is drawn in each resample: ``[..., items]`` counts from ``[..., draws]`` indices."""
    index = np.asarray(index).astype(int)
    if index.ndim == 1:
        return np.bincount(index, minlength=items).astype(float)
    rows = index.reshape(-1, index.shape[-1])
    offsets = (np.arange(len(rows)) * items)[:, None]
    counts = np.bincount((rows + offsets).ravel(), minlength=len(rows) * items)
    return counts.reshape(*index.shape[:-1], items).astype(float)


def bootstrap_ratios(
    sums: Sequence[Sequence[float]] | np.ndarray,
    counts: Sequence[Sequence[float]] | Values,
    *,
    resamples: int = RESAMPLES,
    seed: int = 0,
    method: BootstrapMethod = "BCa",
    label: str = "ratio of sums over items (pooled mean)",
) -> list[Estimate]:
    """:func:`bootstrap_ratio` for many groups of the same items at once, all from the same resamples.

    ``sums`` is ``[groups, items]`` (e.g. per response, the KL summed over its tokens in each
    position bucket), ``counts`` the same shape or one row for every group (e.g. token counts).
    Group ``g``'s value is ``sum(sums[g]) / sum(counts[g])``. One ``scipy.stats.bootstrap`` call
    draws the resamples of items for every group (so the groups' intervals are comparable); the
    statistic turns each resample's indices into draw counts and takes all groups' pooled means by
    one matrix product, which keeps hundreds of groups over thousands of items fast.

    A group that some resamples leave without any item (a late position only a few responses
    reach) has its interval taken over the resamples where it is defined (percentile, the count
    left out named in ``method``); with fewer than half defined it gets no interval. ``n`` of each
    estimate counts the items with a positive count in that group.

    Assumptions: as :func:`bootstrap_ratio`: items (responses) are independent.
    """
    from scipy.stats import bootstrap

    sums = np.atleast_2d(np.asarray(sums, dtype=float))
    counts = np.broadcast_to(np.atleast_2d(np.asarray(counts, dtype=float)), sums.shape)
    groups, items = sums.shape
    present = (counts > 0).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        values = sums.sum(axis=1) / counts.sum(axis=1)
    description = f"{label}, {method} bootstrap, {resamples} resamples"
    if resamples <= 0 or items < 2:
        why = "bootstrap off (0 resamples): no interval, so no verdict" if resamples <= 0 else "fewer than 2 items"
        return [unavailable(v, int(k), label, why) for v, k in zip(values, present, strict=True)]

    def statistic(index: np.ndarray, axis: int = -1) -> np.ndarray:
        weights = _draw_weights(index, items)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = (weights @ sums.T) / (weights @ counts.T)  # [..., groups]
        return np.moveaxis(ratio, -1, 0)  # groups first, resamples last, as scipy expects

    options = {
        "vectorized": True,
        "batch": max(1, min(resamples, _MAX_BATCH_ELEMENTS // max(items, groups))),
        "rng": np.random.default_rng(seed),
    }
    data = (np.arange(items),)
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore")  # degenerate or partly undefined groups are handled below
        result = bootstrap(data, statistic, n_resamples=resamples, method=method, confidence_level=0.95, **options)
        again = bootstrap(
            data, statistic, n_resamples=0, bootstrap_result=result, method=method, confidence_level=0.90, **options
        )
    distribution = np.atleast_2d(result.bootstrap_distribution)
    levels = [np.atleast_1d(bound) for bound in (*result.confidence_interval, *again.confidence_interval)]
    estimates = []
    for g in range(groups):
        value, n = _number(values[g]), int(present[g])
        if value is None:
            estimates.append(unavailable(None, n, description, "the statistic is undefined on these data (no items)"))
            continue
        if n < 2:
            estimates.append(unavailable(value, n, description, "fewer than 2 items in this group: no interval"))
            continue
        low95, high95, low90, high90 = (_number(bound[g]) for bound in levels)
        defined = distribution[g][np.isfinite(distribution[g])]
        how = description
        if None in (low95, high95, low90, high90):
            # BCa is undefined for a degenerate distribution; a group missing from some resamples has NaN
            # there, which scipy's quantiles propagate: read the defined resamples' percentiles instead.
            if len(defined) < resamples / 2:
                estimates.append(unavailable(value, n, description, "the group is empty in most resamples"))
                continue
            low95, low90, high90, high95 = (float(q) for q in np.quantile(defined, [0.025, 0.05, 0.95, 0.975]))
            left_out = resamples - len(defined)
            how = f"{label}, percentile bootstrap, {resamples} resamples" + (
                f" ({left_out} without any item of this group left out)" if left_out else " (BCa undefined: degenerate)"
            )
        se = float(np.std(defined, ddof=1)) if len(defined) > 1 else None
        estimates.append(Estimate(value, n, how, (low95, high95), (low90, high90), se))
    return estimates


def paired_mean_difference(first: Values, second: Values, **resampling: Unpack[Resampling]) -> Estimate:
    """``mean(second - first)`` over matched items, with a bootstrap interval (``scipy.stats.bootstrap``).

    E.g. per passage, the tuned model's loss minus the base model's; per prompt, LoRA's judge score
    minus full fine-tuning's. Pairing removes the between-item variation both share, which is why the
    interval is much narrower than comparing two independent means.

    Assumptions: ``first[i]`` and ``second[i]`` are measured on the same item; items are independent.
    """
    a, b = _as_float(first), _as_float(second)
    if len(a) != len(b):
        raise ValueError(f"paired samples differ in length: {len(a)} and {len(b)}")
    return _run_bootstrap((b - a,), _mean, paired=True, label="paired mean difference", **resampling)


def paired_ratio_difference(first: SumsCounts, second: SumsCounts, **resampling: Unpack[Resampling]) -> Estimate:
    """Difference of pooled means, ``sum(s2)/sum(c2) - sum(s1)/sum(c1)``, over matched items.

    ``first`` and ``second`` are ``(sums, counts)`` per item, for two models answering the same items:
    e.g. per prompt each model's summed KL and its token count (the two responses may differ in
    length), or per passage each model's summed loss and token count. Items are resampled with the
    same indices for both models (``scipy.stats.bootstrap``, ``paired=True``).

    Assumptions: item ``i`` of both sides is the same prompt or passage; items are independent.
    """
    data = tuple(_as_float(array) for array in (*first, *second))
    return _paired(data, _ratio_difference, "paired difference of pooled means", **resampling)


def _independent(
    first: SumsCounts,
    second: SumsCounts,
    combine: Callable[[np.ndarray, np.ndarray], np.ndarray],
    label: str,
    **resampling: Unpack[Resampling],
) -> Estimate:
    """Bootstrap ``combine(second's pooled mean, first's pooled mean)``, each side's items resampled on their own.

    The samples are index arrays (``paired=False``), so each item's sum and count stay together.
    """
    a_sums, a_counts, b_sums, b_counts = (_as_float(array) for array in (*first, *second))
    if len(a_sums) != len(a_counts) or len(b_sums) != len(b_counts):
        raise ValueError("each side needs one sum and one count per item")

    def statistic(a_index: np.ndarray, b_index: np.ndarray, axis: int = -1) -> np.ndarray:
        a, b = a_index.astype(int), b_index.astype(int)
        return combine(_ratio(b_sums[b], b_counts[b], axis), _ratio(a_sums[a], a_counts[a], axis))

    data = (np.arange(len(a_sums)), np.arange(len(b_sums)))
    return _run_bootstrap(data, statistic, paired=False, label=label, **resampling)


def independent_ratio_difference(first: SumsCounts, second: SumsCounts, **resampling: Unpack[Resampling]) -> Estimate:
    """Difference of pooled means of two unmatched samples, each resampled on its own.

    Like :func:`paired_ratio_difference` for items that are not the same on both sides (different
    prompts). Each side's items are resampled independently (``scipy.stats.bootstrap`` over index
    arrays, ``paired=False``), keeping each item's sum and count together. Use the paired version when
    items are matched: it is never less precise.

    Assumptions: items are independent within and between the two samples.
    """
    label = "difference of pooled means, independent samples"
    return _independent(first, second, operator.sub, label, **resampling)


def independent_ratio_of_means(first: SumsCounts, second: SumsCounts, **resampling: Unpack[Resampling]) -> Estimate:
    """Ratio of two unmatched samples' pooled means, ``(sum(s2)/sum(c2)) / (sum(s1)/sum(c1))``.

    E.g. a model's loss per token on a data set's responses over its loss per token on held-out prose
    (per item, the summed loss and the token count): how much harder the data is than text the model
    knows, as a factor. Each side's items are resampled on their own, keeping each item's sum and count
    together (``scipy.stats.bootstrap`` over index arrays, ``paired=False``), as in
    :func:`independent_ratio_difference`.

    Assumptions: items are independent within and between the two samples; the first side's pooled mean
    is positive.
    """
    label = "ratio of pooled means, independent samples"
    return _independent(first, second, operator.truediv, label, **resampling)


def independent_mean_difference(first: Values, second: Values, **resampling: Unpack[Resampling]) -> Estimate:
    """``mean(second) - mean(first)`` for unmatched samples (see :func:`independent_ratio_difference`)."""
    a, b = _as_float(first), _as_float(second)
    return independent_ratio_difference((a, np.ones_like(a)), (b, np.ones_like(b)), **resampling)


@dataclass(frozen=True)
class SlopeGroup:
    """The items measured at one value of the covariate (e.g. the responses of one training-set size)."""

    x: float
    """The covariate, e.g. log10(training-set size)."""
    sums: Values
    """Per item, the numerator (e.g. summed KL of a response)."""
    counts: Values
    """Per item, the denominator (e.g. its token count); ones for a plain mean."""


def _ols_slope(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least-squares slope of ``y`` (last axis: one value per group) against ``x``."""
    centred = x - x.mean()
    return (y * centred).sum(axis=-1) / (centred**2).sum()


def bootstrap_slope(groups: Sequence[SlopeGroup], **resampling: Unpack[Resampling]) -> Estimate:
    """Least-squares slope of each group's pooled mean against its ``x``, with a stratified bootstrap interval.

    Computes, e.g., the change of mean KL per tenfold more training data: one point per group
    (pooled mean of its items), an ordinary least-squares line through the points. The interval
    resamples items within each group independently (``scipy.stats.bootstrap`` over index arrays,
    ``paired=False``, one sample per group), so it reflects the sampling noise of every point; the
    groups themselves (the sizes trained) are fixed by design and not resampled.

    Assumptions: items are independent within and between groups; at least two distinct ``x``.
    A straight line is the model; with only two groups it passes through both points exactly.
    """
    xs = np.array([group.x for group in groups], dtype=float)
    if len(set(xs.tolist())) < 2:
        n = sum(len(group.sums) for group in groups)
        return unavailable(None, n, "least-squares slope", "needs at least two distinct values of the covariate")
    sums = [_as_float(group.sums) for group in groups]
    counts = [_as_float(group.counts) for group in groups]

    def statistic(*indices: np.ndarray, axis: int = -1) -> np.ndarray:
        picks = [index.astype(int) for index in indices]
        means = [_ratio(s[i], c[i], axis) for s, c, i in zip(sums, counts, picks, strict=True)]
        return _ols_slope(xs, np.stack(np.broadcast_arrays(*means), axis=-1))

    data = tuple(np.arange(len(group_sums)) for group_sums in sums)
    label = f"least-squares slope over {len(groups)} groups, items resampled within groups"
    return _run_bootstrap(data, statistic, paired=False, label=label, **resampling)


@dataclass(frozen=True)
class PairedSlopeGroup:
    """Two models' per-item values at one value of the covariate, on the same items (e.g. prompts)."""

    x: float
    """The covariate, e.g. log10(training-set size)."""
    first: SumsCounts
    """``(sums, counts)`` per item for the first model (e.g. LoRA)."""
    second: SumsCounts
    """``(sums, counts)`` per item for the second model (e.g. full fine-tuning), same items in the same order."""


def _paired_slopes(
    groups: Sequence[PairedSlopeGroup],
    combine: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray],
    label: str,
    **resampling: Unpack[Resampling],
) -> Estimate:
    """Bootstrap a statistic of both models' per-group pooled means: ``combine(xs, firsts, seconds)``.

    ``firsts`` and ``seconds`` hold one pooled mean per group on their last axis. Items are resampled
    within each group, with the same indices for both models, independently across groups.
    """
    xs = np.array([group.x for group in groups], dtype=float)
    if len(set(xs.tolist())) < 2:
        n = sum(len(group.first[0]) for group in groups)
        return unavailable(None, n, label, "needs at least two distinct values of the covariate")
    arrays = [tuple(_as_float(a) for a in (*group.first, *group.second)) for group in groups]
    for group_arrays in arrays:
        if len({len(a) for a in group_arrays}) > 1:
            raise ValueError("within a group both models need one sum and one count per item")

    def statistic(*indices: np.ndarray, axis: int = -1) -> np.ndarray:
        firsts, seconds = [], []
        for (s1, c1, s2, c2), index in zip(arrays, indices, strict=True):
            i = index.astype(int)
            firsts.append(_ratio(s1[i], c1[i], axis))
            seconds.append(_ratio(s2[i], c2[i], axis))
        return combine(xs, np.stack(np.broadcast_arrays(*firsts), -1), np.stack(np.broadcast_arrays(*seconds), -1))

    data = tuple(np.arange(len(group_arrays[0])) for group_arrays in arrays)
    label = f"{label} over {len(groups)} groups, items paired within groups"
    return _run_bootstrap(data, statistic, paired=False, label=label, **resampling)


def paired_slope_difference(groups: Sequence[PairedSlopeGroup], **resampling: Unpack[Resampling]) -> Estimate:
    """``slope(second) - slope(first)``: how much faster the second model's pooled mean grows with ``x``.

    Both slopes as in :func:`bootstrap_slope`; items are resampled within each group with the same
    indices for both models (they answered the same prompts), independently across groups
    (``scipy.stats.bootstrap`` over one index array per group, ``paired=False``).

    Assumptions: as :func:`bootstrap_slope`, plus item ``i`` of a group is the same prompt for both.
    """

    def difference(xs: np.ndarray, firsts: np.ndarray, seconds: np.ndarray) -> np.ndarray:
        return _ols_slope(xs, seconds) - _ols_slope(xs, firsts)

    return _paired_slopes(groups, difference, "difference of least-squares slopes", **resampling)


def relative_slope(
    groups: Sequence[PairedSlopeGroup],
    *,
    of: Literal["first", "second"] = "first",
    **resampling: Unpack[Resampling],
) -> Estimate:
    """The slope of one model's pooled mean against ``x``, as a share of the second model's mean level.

    Computes ``slope(of) / mean_g(second_g)``: e.g. the change of LoRA's mean KL per tenfold more
    training data divided by full fine-tuning's mean KL over the same sizes, a unit-free rate that
    means the same on models whose shifts differ in scale. With ``of="second"`` it is the second
    model's own slope over its own level. The slope is :func:`bootstrap_slope`'s; the interval
    resamples items within each group with the same indices for both models (they answered the
    same prompts), independently across groups, so it carries the uncertainty of the slope and of
    the level together (``scipy.stats.bootstrap``, ``paired=False`` over one index array per group).

    Assumptions: as :func:`paired_slope_difference`; the second model's mean level is positive.
    """

    def rate(xs: np.ndarray, firsts: np.ndarray, seconds: np.ndarray) -> np.ndarray:
        return _ols_slope(xs, firsts if of == "first" else seconds) / seconds.mean(axis=-1)

    label = f"least-squares slope of the {of} model's pooled mean over the second model's mean level"
    return _paired_slopes(groups, rate, label, **resampling)


# --- proportions -------------------------------------------------------------------------------------------


def _z(confidence: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(1 - (1 - confidence) / 2))


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion (``statsmodels.stats.proportion.proportion_confint``)."""
    from statsmodels.stats.proportion import proportion_confint

    low, high = proportion_confint(successes, n, alpha=1 - confidence, method="wilson")
    return float(low), float(high)


def proportion(successes: int, n: int, chance: float | None = None) -> Estimate:
    """Share of successes with its Wilson interval, and an exact binomial test against ``chance``.

    Computes ``successes / n``; 95% and 90% Wilson score intervals (statsmodels); with ``chance``
    (e.g. 1/4 for four-way multiple choice) the two-sided exact binomial test of "accuracy equals
    chance" (``scipy.stats.binomtest``). The standard error is Agresti and Coull's,
    ``sqrt(p~(1-p~)/(n+z^2))`` with ``p~ = (x + z^2/2)/(n + z^2)``, which stays positive at 0% and 100%.

    Assumptions: the ``n`` trials are independent with one success probability.
    """
    if n <= 0:
        return unavailable(None, 0, "proportion", "no items")
    if not 0 <= successes <= n:
        raise ValueError(f"successes ({successes}) must lie between 0 and n ({n})")
    from scipy.stats import binomtest

    z = _z(1 - ALPHA)
    adjusted = (successes + z * z / 2) / (n + z * z)
    p_value = binomtest(successes, n, p=chance).pvalue if chance is not None else None
    method = "Wilson score interval" + (f"; exact binomial test against chance {chance:.4g}" if chance else "")
    return Estimate(
        value=successes / n,
        n=n,
        method=method,
        ci95=wilson_interval(successes, n, 0.95),
        ci90=wilson_interval(successes, n, 0.90),
        se=math.sqrt(adjusted * (1 - adjusted) / (n + z * z)),
        p_value=_number(p_value),
    )


@dataclass(frozen=True)
class PairedTable:
    """Outcomes of two measurements on the same items, e.g. two models answering the same questions."""

    both: int
    """Items right in both."""
    first_only: int
    """Right in the first, wrong in the second."""
    second_only: int
    """Wrong in the first, right in the second."""
    neither: int
    """Wrong in both."""

    @classmethod
    def from_outcomes(cls, first: Sequence[bool], second: Sequence[bool]) -> PairedTable:
        """Count the four cells from per-item outcomes (same items, same order)."""
        if len(first) != len(second):
            raise ValueError(f"paired outcomes differ in length: {len(first)} and {len(second)}")
        pairs = list(zip(map(bool, first), map(bool, second), strict=True))
        return cls(
            both=pairs.count((True, True)),
            first_only=pairs.count((True, False)),
            second_only=pairs.count((False, True)),
            neither=pairs.count((False, False)),
        )

    @property
    def n(self) -> int:
        """Items."""
        return self.both + self.first_only + self.second_only + self.neither


def newcombe_paired_interval(table: PairedTable, confidence: float = 0.95) -> tuple[float, float]:
    """Newcombe's hybrid score interval for ``p_second - p_first`` on paired data (his method 10).

    Newcombe, R. G. (1998). Improved confidence intervals for the difference between binomial
    proportions based on paired data. Statistics in Medicine 17, 2635-2650 (method 10); also
    Fagerland, Lydersen & Laake (2017), Statistical Analysis of Contingency Tables, section 8.5
    ("Newcombe square-and-add"). Neither scipy nor statsmodels (0.15) has an interval for a paired
    difference of proportions, so it is written here, on top of statsmodels' Wilson intervals: the
    two marginal Wilson intervals are combined by "square and add", with the correlation of the two
    marginal proportions estimated by the phi coefficient of the table, whose numerator ``ad - bc`` is
    shrunk by ``n/2`` towards zero when positive (Newcombe's correction, as in the published method).
    Unlike the Wald interval it stays inside [-1, 1] and has a positive width when no item is
    discordant.
    """
    a, b, c, d = table.both, table.first_only, table.second_only, table.neither
    n = table.n
    if n == 0:
        raise ValueError("no items")
    # Newcombe's notation: proportion 1 is the first measurement's, 2 the second's; theta = p1 - p2.
    p1, p2 = (a + b) / n, (a + c) / n
    l1, u1 = wilson_interval(a + b, n, confidence)
    l2, u2 = wilson_interval(a + c, n, confidence)
    margins = (a + b) * (c + d) * (a + c) * (b + d)
    cross = a * d - b * c
    if margins == 0:
        phi = 0.0
    elif cross > n / 2:
        phi = (cross - n / 2) / math.sqrt(margins)
    elif cross >= 0:
        phi = 0.0
    else:
        phi = cross / math.sqrt(margins)
    theta = p1 - p2
    lower = theta - math.sqrt(max((p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2, 0.0))
    upper = theta + math.sqrt(max((u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2, 0.0))
    # Reported the other way round: second minus first.
    return max(-1.0, -upper), min(1.0, -lower)


def mcnemar_exact(table: PairedTable) -> float:
    """Two-sided exact McNemar p-value (``statsmodels.stats.contingency_tables.mcnemar(exact=True)``).

    A binomial test of the discordant items: under "both measurements are equally often right" each
    discordant item is equally likely to favour either side. 1.0 when no item is discordant.
    """
    from statsmodels.stats.contingency_tables import mcnemar

    result = mcnemar([[table.both, table.first_only], [table.second_only, table.neither]], exact=True)
    return float(result.pvalue)


def paired_proportions(first: Sequence[bool], second: Sequence[bool]) -> Estimate:
    """Difference of two accuracies on the same questions, ``mean(second) - mean(first)``.

    Computes: the difference, its 95% and 90% Newcombe hybrid score intervals
    (:func:`newcombe_paired_interval`), the exact McNemar test (statsmodels) as ``p_value``, and the
    Bonett-Price adjusted standard error ``sqrt((p10 + p01 - (p10 - p01)^2) / (n + 2))`` with
    ``p10 = (b + 1)/(n + 2)``, ``p01 = (c + 1)/(n + 2)`` (Bonett & Price 2012), which stays positive
    when no question is discordant (it sizes the detectable effect).

    Assumptions: ``first[i]`` and ``second[i]`` are outcomes on the same question; questions are
    independent. Pairing makes this far more precise than comparing two independent accuracies when
    the models mostly agree.
    """
    table = PairedTable.from_outcomes(first, second)
    n = table.n
    method = "paired difference of proportions: Newcombe hybrid score interval, exact McNemar test"
    if n == 0:
        return unavailable(None, 0, method, "no items")
    p10, p01 = (table.first_only + 1) / (n + 2), (table.second_only + 1) / (n + 2)
    return Estimate(
        value=(table.second_only - table.first_only) / n,
        n=n,
        method=method,
        ci95=newcombe_paired_interval(table, 0.95),
        ci90=newcombe_paired_interval(table, 0.90),
        se=math.sqrt((p10 + p01 - (p10 - p01) ** 2) / (n + 2)),
        p_value=mcnemar_exact(table),
    )


# --- decision rules ----------------------------------------------------------------------------------------


def _plain(value: float) -> str:
    return f"{value:+.3g}"


Formatter = Callable[[float], str]
"""Writes an effect size for a reader, e.g. ``lambda x: f'{100 * x:+.1f} points'``."""


@dataclass(frozen=True)
class Decision:
    """A verdict with the rule that produced it and the numbers behind it."""

    verdict: Verdict
    """reproduced, not reproduced, inconclusive or not tested."""
    rule: str
    """The pre-registered rule, in one sentence a reader understands."""
    reason: str
    """Why this verdict: the interval against the rule's threshold, or what is missing."""
    estimate: Estimate | None = None
    """The effect the verdict rests on."""
    margin: float | None = None
    """Equivalence margin of a no-effect claim."""
    expected_sign: int | None = None
    """Direction the claim predicts: +1 (effect above 0) or -1 (below)."""
    positive_control: Decision | None = None
    """The control a no-effect verdict required, with its own verdict."""

    @property
    def detectable(self) -> float | None:
        """Smallest effect this run could detect (two-sided 5%, 80% power): :meth:`Estimate.detectable_effect`."""
        return self.estimate.detectable_effect() if self.estimate else None

    def to_json(self) -> dict[str, Any]:
        """Plain JSON (estimates as in :meth:`Estimate.to_json`)."""
        return {
            "verdict": self.verdict,
            "rule": self.rule,
            "reason": self.reason,
            "estimate": self.estimate.to_json() if self.estimate else None,
            "detectable": _number(self.detectable),
            "margin": _number(self.margin),
            "expected_sign": self.expected_sign,
            "positive_control": self.positive_control.to_json() if self.positive_control else None,
        }


def not_tested(why: str, rule: str = "") -> Decision:
    """The verdict when this run lacks what the claim needs (e.g. no LoRA run, one data size)."""
    return Decision(verdict="not tested", rule=rule, reason=why)


def _span(interval: tuple[float, float], fmt: Formatter) -> str:
    return f"[{fmt(interval[0])}, {fmt(interval[1])}]"


def _detectable_clause(estimate: Estimate, fmt: Formatter) -> str:
    detectable = estimate.detectable_effect()
    if detectable is None:
        return ""
    return f"; this run can detect an effect of {fmt(detectable).lstrip('+')} or more (80% power)"


def difference_rule(expected_sign: int, effect: str = "the effect") -> str:
    """The rule text of :func:`difference_verdict`."""
    side, other = ("above", "below") if expected_sign > 0 else ("below", "above")
    return (
        f"A difference is claimed: reproduced if the 95% interval of {effect} lies entirely {side} 0 (the "
        f"claimed direction), not reproduced if it lies entirely {other} 0, otherwise inconclusive."
    )


def difference_verdict(
    estimate: Estimate, expected_sign: int, *, effect: str = "the effect", fmt: Formatter = _plain
) -> Decision:
    """Decide a claimed difference (e.g. "full fine-tuning shifts more than LoRA") from a 95% interval.

    *reproduced* when the 95% interval excludes 0 on the claimed side (``expected_sign`` +1: above,
    -1: below), *not reproduced* when it excludes 0 on the other side, otherwise *inconclusive*; an
    interval touching 0 does not exclude it. An estimate without an interval is *inconclusive*.
    """
    if expected_sign not in (1, -1):
        raise ValueError("expected_sign must be +1 or -1")
    rule = difference_rule(expected_sign, effect)
    common = {"rule": rule, "estimate": estimate}
    common["expected_sign"] = expected_sign
    if not estimate.has_interval:
        return Decision("inconclusive", reason=f"no interval: {estimate.note or 'not computed'}", **common)
    low, high = estimate.ci95  # type: ignore[misc]
    span = _span((low, high), fmt)
    if (expected_sign > 0 and low > 0) or (expected_sign < 0 and high < 0):
        return Decision("reproduced", reason=f"the 95% interval {span} excludes 0 in the claimed direction", **common)
    if (expected_sign > 0 and high < 0) or (expected_sign < 0 and low > 0):
        return Decision("not reproduced", reason=f"the 95% interval {span} excludes 0 the other way", **common)
    return Decision(
        "inconclusive", reason=f"the 95% interval {span} includes 0{_detectable_clause(estimate, fmt)}", **common
    )


def no_effect_rule(margin: float, effect: str = "the effect", fmt: Formatter = _plain) -> str:
    """The rule text of :func:`no_effect_verdict`."""
    bound = fmt(margin).lstrip("+")
    return (
        f"No effect is claimed: reproduced if the 90% interval of {effect} lies inside ±{bound} (equivalence, two "
        f"one-sided tests at 5%) and a positive control in this run detects an effect; not reproduced if the 95% "
        f"interval lies entirely beyond ±{bound}; otherwise inconclusive."
    )


def no_effect_verdict(
    estimate: Estimate,
    margin: float,
    positive_control: Decision | None,
    *,
    effect: str = "the effect",
    fmt: Formatter = _plain,
) -> Decision:
    """Decide a claimed absence of effect (e.g. "LoRA learns no facts") by an equivalence test.

    *reproduced* only when the 90% interval lies strictly inside ``(-margin, +margin)``, which is the
    two one-sided tests (TOST, Schuirmann 1987) at the 5% level in interval form, **and**
    ``positive_control`` is *reproduced*: the same run detected an effect where one is expected (for
    knowledge: full fine-tuning above the base, or the probe on the training wording), so the
    instrument could have seen one. *not reproduced* when the 95% interval lies entirely beyond the
    margin (the effect is significantly larger than what counts as none); that needs no control,
    since an effect was detected. Otherwise, including a missing or failed control, *inconclusive*.
    """
    if margin <= 0:
        raise ValueError("the equivalence margin must be positive")
    rule = no_effect_rule(margin, effect, fmt)
    common = {
        "rule": rule, "estimate": estimate, "margin": margin,
        "positive_control": positive_control,
    }  # fmt: skip
    if not estimate.has_interval:
        return Decision("inconclusive", reason=f"no interval: {estimate.note or 'not computed'}", **common)
    bound = fmt(margin).lstrip("+")
    low95, high95 = estimate.ci95  # type: ignore[misc]
    if low95 > margin or high95 < -margin:
        span = _span((low95, high95), fmt)
        return Decision("not reproduced", reason=f"the 95% interval {span} lies beyond ±{bound}", **common)
    low90, high90 = estimate.ci90  # type: ignore[misc]
    span90 = _span((low90, high90), fmt)
    if not -margin < low90 <= high90 < margin:
        return Decision(
            "inconclusive",
            reason=f"the 90% interval {span90} reaches beyond ±{bound}, so neither equivalence nor an effect is "
            f"shown{_detectable_clause(estimate, fmt)}",
            **common,
        )
    if positive_control is None:
        return Decision(
            "inconclusive", reason=f"the 90% interval {span90} lies inside ±{bound}, but this run has no positive "
            "control to show the instrument can detect an effect", **common,
        )  # fmt: skip
    if positive_control.verdict != "reproduced":
        return Decision(
            "inconclusive", reason=f"the 90% interval {span90} lies inside ±{bound}, but the positive control "
            f"detected no effect ({positive_control.reason})", **common,
        )  # fmt: skip
    return Decision(
        "reproduced",
        reason=f"the 90% interval {span90} lies inside ±{bound} and the positive control detected an effect",
        **common,
    )
