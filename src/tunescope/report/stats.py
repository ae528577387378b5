"""Effect sizes with uncertainty: percentile bootstrap intervals over examples or questions."""

from __future__ import annotations

import numpy as np


def micro_mean_difference_ci(
    a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray], samples: int = 2000, seed: int = 0
) -> tuple[float, tuple[float, float]]:
    """Difference of pooled (micro) means, mean_b − mean_a, with a 95% percentile bootstrap interval.

    Each side is ``(sums, counts)`` per example (e.g. summed KL and token count of each response);
    examples are resampled independently on each side, since the two models answered separately.
    """
    rng = np.random.default_rng(seed)

    def pooled(sums: np.ndarray, counts: np.ndarray, picks: np.ndarray) -> np.ndarray:
        return sums[picks].sum(axis=-1) / counts[picks].sum(axis=-1)

    point = b[0].sum() / b[1].sum() - a[0].sum() / a[1].sum()
    picks_a = rng.integers(0, len(a[0]), size=(samples, len(a[0])))
    picks_b = rng.integers(0, len(b[0]), size=(samples, len(b[0])))
    differences = pooled(*b, picks_b) - pooled(*a, picks_a)
    low, high = np.percentile(differences, [2.5, 97.5])
    return float(point), (float(low), float(high))


def mean_difference_ci(a: np.ndarray, b: np.ndarray, samples: int = 2000, seed: int = 0):
    """mean(b) − mean(a) with a 95% percentile bootstrap interval (independent resampling)."""
    ones_a, ones_b = np.ones_like(a, dtype=float), np.ones_like(b, dtype=float)
    return micro_mean_difference_ci((a.astype(float), ones_a), (b.astype(float), ones_b), samples, seed)


def verdict(ci: tuple[float, float], expected_sign: int) -> str:
    """'reproduced' when the interval excludes 0 on the expected side, 'not reproduced' on the other."""
    low, high = ci
    if (expected_sign > 0 and low > 0) or (expected_sign < 0 and high < 0):
        return "reproduced"
    if (expected_sign > 0 and high < 0) or (expected_sign < 0 and low > 0):
        return "not reproduced"
    return "inconclusive"


def paired_gain_ci(
    before: np.ndarray, after: np.ndarray, samples: int = 2000, seed: int = 0
) -> tuple[float, tuple[float, float]]:
    """mean(after − before) over paired items (e.g. questions), with a 95% percentile bootstrap interval."""
    rng = np.random.default_rng(seed)
    gains = after.astype(float) - before.astype(float)
    picks = rng.integers(0, len(gains), size=(samples, len(gains)))
    low, high = np.percentile(gains[picks].mean(axis=1), [2.5, 97.5])
    return float(gains.mean()), (float(low), float(high))
