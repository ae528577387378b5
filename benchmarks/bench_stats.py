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

    python benchmarks/bench_stats.py [--items 3000] [--resamples 2000] [--rounds 2]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from functools import partial

import numpy as np
from scipy.stats import bootstrap

from tunescope.stats import _batch_size, paired_ratio_difference


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


def timed(function, *args) -> tuple[float, object]:
    start = time.perf_counter()
    result = function(*args)
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=3000)
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=2, help="A B C C B A rounds per method")
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


if __name__ == "__main__":
    main()
