"""Bootstrap speed: tunescope.stats' vectorised path against two baselines, in one run.

Every finding of the report rests on a bootstrap over items, e.g. the paired difference of pooled
KL between two models answering the same prompts. ``tunescope.stats.paired_ratio_difference``
hands ``scipy.stats.bootstrap`` a vectorised statistic (all resamples of a batch reduced by numpy
at once, batches bounded in memory) and returns 95% and 90% intervals. Baselines:

* ``loop``: the same scipy call with ``vectorized=False``: scipy evaluates the statistic once per
  resample, which is what a statistic written without an ``axis`` argument gets. Same seed and
  batches, so the same interval (checked);
* ``numpy``: the hand-written percentile bootstrap tunescope used before (index matrix, sums,
  ``np.percentile``), 95% interval only.

Each is timed in A B C C B A order; medians.

Second part, many groups of the same items (``--groups``): the shift summary's curves are pooled
means of hundreds of (metric, position) groups over the same responses, all from one resampling.
``tunescope.stats.bootstrap_ratios`` turns each resample's indices into draw counts and takes every
group's pooled mean by one matrix product; the baseline is the same ``scipy.stats.bootstrap`` call
indexing the ``[groups, items]`` arrays itself (``paired=True``), same seed and batches, so the same
intervals (checked). Timed in A B B A order.

    python benchmarks/bench_stats.py [--items 3000] [--resamples 2000] [--rounds 2]
                                     [--groups 800 --group-items 1000 --group-resamples 1000]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from functools import partial

import numpy as np
from scipy.stats import bootstrap

from tunescope.stats import _MAX_BATCH_ELEMENTS, _batch_size, bootstrap_ratios, paired_ratio_difference


def synthetic_responses(items: int, seed: int = 0) -> tuple[np.ndarray, ...]:
    """Per prompt: each model's summed KL and token count, the second model shifting 20% more."""
    rng = np.random.default_rng(seed)
    counts_a = rng.integers(20, 300, items).astype(float)
    counts_b = rng.integers(20, 300, items).astype(float)
    sums_a = counts_a * rng.gamma(2.0, 0.05, items)
    sums_b = counts_b * rng.gamma(2.0, 0.06, items)
    return sums_a, counts_a, sums_b, counts_b


def looped(data: tuple[np.ndarray, ...], resamples: int, method: str) -> tuple[float, float]:
    """The baseline: the same bootstrap, the statistic evaluated once per resample."""

    def statistic(sums_a, counts_a, sums_b, counts_b):
        return sums_b.sum() / counts_b.sum() - sums_a.sum() / counts_a.sum()

    # The same batches as tunescope's, so both draw the same resamples from the same seed.
    result = bootstrap(
        data, statistic, n_resamples=resamples, paired=True, vectorized=False, method=method,
        batch=_batch_size(len(data[0]), resamples), rng=np.random.default_rng(0),
    )  # fmt: skip
    return tuple(result.confidence_interval)  # type: ignore[return-value]


def handwritten(data: tuple[np.ndarray, ...], resamples: int) -> tuple[float, float]:
    """The previous hand-written numpy percentile bootstrap, paired form."""
    sums_a, counts_a, sums_b, counts_b = data
    picks = np.random.default_rng(0).integers(0, len(sums_a), size=(resamples, len(sums_a)))
    differences = sums_b[picks].sum(1) / counts_b[picks].sum(1) - sums_a[picks].sum(1) / counts_a[picks].sum(1)
    low, high = np.percentile(differences, [2.5, 97.5])
    return float(low), float(high)


def scipy_indexing(sums: np.ndarray, counts: np.ndarray, resamples: int, method: str) -> np.ndarray:
    """The baseline for many groups: scipy resamples the ``[groups, items]`` arrays by indexing them."""

    def statistic(s, c, axis=-1):
        return s.sum(axis=axis) / c.sum(axis=axis)

    groups, items = sums.shape
    result = bootstrap(
        (sums, counts), statistic, n_resamples=resamples, paired=True, vectorized=True, method=method, axis=-1,
        batch=max(1, min(resamples, _MAX_BATCH_ELEMENTS // max(items, groups))), rng=np.random.default_rng(0),
    )  # fmt: skip
    return np.stack(result.confidence_interval, axis=-1)


def many_groups(groups: int, items: int, resamples: int, rounds: int) -> None:
    rng = np.random.default_rng(1)
    counts = rng.integers(1, 6, size=(groups, items)).astype(float)
    sums = counts * rng.gamma(2.0, 0.05, size=(groups, items))
    print(f"many groups: {groups} groups x {items} items, {resamples} resamples")
    for method in ("percentile", "BCa"):
        ours = partial(bootstrap_ratios, sums, counts, resamples=resamples, method=method)
        theirs = partial(scipy_indexing, sums, counts, resamples, method)
        ours_ci = np.array([estimate.ci95 for estimate in ours()])
        assert np.allclose(ours_ci, theirs()), "the same resamples must give the same intervals"
        times: dict[str, list[float]] = {"tunescope": [], "scipy indexing": []}
        for _ in range(rounds):
            for name in ("tunescope", "scipy indexing", "scipy indexing", "tunescope"):
                times[name].append(timed(ours if name == "tunescope" else theirs)[0])
        medians = {name: statistics.median(values) for name, values in times.items()}
        print(f"{method}: " + ", ".join(f"{name} {seconds:.2f} s" for name, seconds in medians.items())
              + f"; {medians['scipy indexing'] / medians['tunescope']:.1f}x faster")  # fmt: skip


def timed(function, *args) -> tuple[float, object]:
    start = time.perf_counter()
    result = function(*args)
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=3000)
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=2, help="A B C C B A rounds per method")
    parser.add_argument("--groups", type=int, default=800, help="groups of the many-groups part (0: skip it)")
    parser.add_argument("--group-items", type=int, default=1000)
    parser.add_argument("--group-resamples", type=int, default=1000)
    args = parser.parse_args()
    data = synthetic_responses(args.items)
    print(f"{platform.processor() or platform.machine()}, numpy {np.__version__}; {args.items} items, "
          f"{args.resamples} resamples")  # fmt: skip
    for method in ("percentile", "BCa"):
        ours = partial(paired_ratio_difference, data[:2], data[2:], resamples=args.resamples, method=method)
        theirs = partial(looped, data, args.resamples, method)
        estimate, baseline = ours(), theirs()  # warm-up, and the same interval from the same seed
        assert np.allclose(estimate.ci95, baseline), (estimate.ci95, baseline)
        rivals = {"tunescope": ours, "loop": theirs, "numpy": partial(handwritten, data, args.resamples)}
        times: dict[str, list[float]] = {name: [] for name in rivals}
        for _ in range(args.rounds):
            for name in ("tunescope", "loop", "numpy", "numpy", "loop", "tunescope"):
                times[name].append(timed(rivals[name])[0])
        medians = {name: statistics.median(values) for name, values in times.items()}
        print(f"{method}: " + ", ".join(f"{name} {seconds:.3f} s" for name, seconds in medians.items())
              + f"; tunescope/loop {medians['loop'] / medians['tunescope']:.2f}x, "
              f"tunescope/numpy {medians['numpy'] / medians['tunescope']:.2f}x")  # fmt: skip
    if args.groups:
        many_groups(args.groups, args.group_items, args.group_resamples, args.rounds)


if __name__ == "__main__":
    main()
