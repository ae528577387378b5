import json
import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from tunescope.stats import (
    Decision,
    Estimate,
    PairedSlopeGroup,
    PairedTable,
    SlopeGroup,
    bootstrap_mean,
    bootstrap_ratio,
    bootstrap_ratios,
    bootstrap_slope,
    difference_verdict,
    independent_mean_difference,
    independent_ratio_of_means,
    mcnemar_exact,
    newcombe_paired_interval,
    no_effect_verdict,
    paired_mean_difference,
    paired_proportions,
    paired_ratio_difference,
    paired_slope_difference,
    proportion,
    relative_slope,
    unavailable,
    wilson_interval,
)


def made(value, ci95, ci90=None, se=0.05):
    """An estimate with chosen intervals, to put a rule exactly at its threshold."""
    return Estimate(value=value, n=100, method="test", ci95=ci95, ci90=ci90 or ci95, se=se)


def controlled():
    return difference_verdict(made(0.3, (0.2, 0.4)), +1)


# --- library-backed numbers against known values ---


def test_newcombe_interval_matches_the_published_worked_example():
    # Fagerland, Lydersen & Laake (2017), Table 8.x: Cavo et al. (2012), complete response before and after
    # consolidation, [[59, 6], [16, 80]]: estimate -0.0621, Newcombe square-and-add 95% CI -0.1186 to -0.0046
    # (first minus second). tunescope reports second minus first, so the interval is mirrored.
    table = PairedTable(both=59, first_only=6, second_only=16, neither=80)
    low, high = newcombe_paired_interval(table)
    assert (round(low, 4), round(high, 4)) == (0.0046, 0.1186)
    estimate = paired_proportions([1] * 59 + [1] * 6 + [0] * 16 + [0] * 80, [1] * 59 + [0] * 6 + [1] * 16 + [0] * 80)
    assert estimate.value == pytest.approx(10 / 161) and estimate.ci95 == pytest.approx((low, high))


def test_mcnemar_exact_p_is_the_binomial_tail_of_the_discordant_pairs():
    # 6 vs 16 discordant: 2 * P(X <= 6), X ~ Bin(22, 1/2) = 2 * 110056 / 2**22.
    table = PairedTable(both=59, first_only=6, second_only=16, neither=80)
    assert mcnemar_exact(table) == pytest.approx(2 * 110056 / 2**22)
    assert mcnemar_exact(PairedTable(5, 0, 0, 5)) == 1.0


def test_newcombe_interval_covers_the_true_difference_about_95_percent_of_the_time():
    rng = np.random.default_rng(0)
    cells = np.array([0.45, 0.05, 0.15, 0.35])  # both, first only, second only, neither: true difference +0.10
    hits = 0
    for counts in rng.multinomial(60, cells, size=1000):
        low, high = newcombe_paired_interval(PairedTable(*map(int, counts)))
        hits += low <= 0.10 <= high
    assert 0.93 <= hits / 1000 <= 0.98


def test_paired_interval_has_width_when_nothing_is_discordant():
    estimate = paired_proportions([True] * 30 + [False] * 18, [True] * 30 + [False] * 18)
    low, high = estimate.ci95
    assert estimate.value == 0 and low < 0 < high and estimate.p_value == 1.0
    assert estimate.se > 0 and estimate.detectable_effect() > 0


def test_wilson_interval_matches_its_formula_and_binomial_test_matches_a_hand_value():
    x, n, z = 13, 48, scipy_stats.norm.ppf(0.975)
    p = x / n
    centre, half = p + z * z / (2 * n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    expected = ((centre - half) / (1 + z * z / n), (centre + half) / (1 + z * z / n))
    assert wilson_interval(x, n) == pytest.approx(expected)
    assert proportion(3, 3, chance=0.5).p_value == pytest.approx(0.25)  # P(3 of 3) + P(0 of 3)
    estimate = proportion(13, 48, chance=0.25)
    assert estimate.ci95 == pytest.approx(expected) and estimate.value == pytest.approx(13 / 48)
    assert proportion(0, 0).has_interval is False


def test_bootstrap_mean_agrees_with_the_t_interval_on_normal_data():
    values = np.random.default_rng(1).normal(3.0, 2.0, size=400)
    estimate = bootstrap_mean(values, seed=1)
    t_low, t_high = scipy_stats.ttest_1samp(values, 0).confidence_interval(0.95)
    assert estimate.ci95 == pytest.approx((t_low, t_high), abs=0.04)
    assert estimate.se == pytest.approx(values.std(ddof=1) / 20, rel=0.1)
    low90, high90 = estimate.ci90
    assert estimate.ci95[0] < low90 < estimate.value < high90 < estimate.ci95[1]


def test_bootstrap_is_seeded():
    values = np.random.default_rng(2).normal(size=50)
    assert bootstrap_mean(values, seed=3) == bootstrap_mean(values, seed=3)
    assert bootstrap_mean(values, seed=3).ci95 != bootstrap_mean(values, seed=4).ci95


def test_pooled_mean_weights_items_by_their_counts():
    sums, counts = np.array([10.0, 1.0, 3.0]), np.array([10.0, 1.0, 2.0])
    estimate = bootstrap_ratio(sums, counts)
    assert estimate.value == pytest.approx(14 / 13)
    assert estimate.ci95[0] <= estimate.value <= estimate.ci95[1]


def test_pairing_narrows_the_interval_when_items_vary_a_lot():
    rng = np.random.default_rng(5)
    item_effect = rng.normal(0, 5, size=300)  # prompts differ far more than the two models do
    first, second = item_effect + rng.normal(0, 0.3, 300), item_effect + 0.2 + rng.normal(0, 0.3, 300)
    paired = paired_mean_difference(first, second)
    unpaired = independent_mean_difference(first, second)
    assert paired.value == pytest.approx(unpaired.value)
    assert paired.ci95[0] > 0  # the planted +0.2 is found only when the pairing is used
    assert unpaired.ci95[0] < 0 < unpaired.ci95[1]
    width = lambda e: e.ci95[1] - e.ci95[0]  # noqa: E731
    assert width(paired) < width(unpaired) / 5


def test_ratio_of_pooled_means_of_unmatched_samples_covers_the_planted_factor():
    rng = np.random.default_rng(11)
    counts_a, counts_b = rng.integers(50, 400, 16).astype(float), rng.integers(5, 60, 64).astype(float)
    sums_a = counts_a * rng.gamma(20.0, 0.2, 16)  # held-out passages: about 4 nats per token
    sums_b = counts_b * rng.gamma(20.0, 0.2, 64) * 1.5  # responses: 1.5 times harder
    estimate = independent_ratio_of_means((sums_a, counts_a), (sums_b, counts_b), resamples=2000, seed=1)
    assert estimate.value == pytest.approx((sums_b.sum() / counts_b.sum()) / (sums_a.sum() / counts_a.sum()))
    assert estimate.ci95[0] < 1.5 < estimate.ci95[1] and estimate.ci95[0] > 1.2 and estimate.n == 80
    assert estimate.ci95[0] <= estimate.ci90[0] <= estimate.value <= estimate.ci90[1] <= estimate.ci95[1]
    # Swapping the sides inverts the ratio.
    swapped = independent_ratio_of_means((sums_b, counts_b), (sums_a, counts_a), resamples=200)
    assert swapped.value == pytest.approx(1 / estimate.value)
    assert independent_ratio_of_means(([1.0], [1.0]), (sums_b, counts_b)).ci95 is None  # one passage: no interval


def test_paired_ratio_difference_finds_a_planted_shift_in_pooled_means():
    rng = np.random.default_rng(6)
    counts_a, counts_b = rng.integers(5, 60, 500).astype(float), rng.integers(5, 60, 500).astype(float)
    sums_a = counts_a * rng.gamma(2.0, 0.05, 500)
    sums_b = counts_b * rng.gamma(2.0, 0.05, 500) * 1.5
    estimate = paired_ratio_difference((sums_a, counts_a), (sums_b, counts_b))
    assert estimate.value == pytest.approx(sums_b.sum() / counts_b.sum() - sums_a.sum() / counts_a.sum())
    assert estimate.ci95[0] > 0 and "paired" in estimate.method and estimate.n == 500
    with pytest.raises(ValueError):
        paired_ratio_difference((sums_a, counts_a), (sums_b[:-1], counts_b[:-1]))


def test_slope_interval_resamples_within_groups():
    rng = np.random.default_rng(7)
    rising = [SlopeGroup(x, rng.normal(0.1 * x, 0.5, 300), np.ones(300)) for x in (3.0, 4.0, 5.0)]
    flat = [SlopeGroup(x, rng.normal(0.2, 0.5, 300), np.ones(300)) for x in (3.0, 4.0, 5.0)]
    up, level = bootstrap_slope(rising), bootstrap_slope(flat)
    assert up.ci95[0] > 0 and level.ci95[0] < 0 < level.ci95[1]
    means = [np.mean(group.sums) for group in rising]
    assert up.value == pytest.approx(np.polyfit([3.0, 4.0, 5.0], means, 1)[0])
    assert bootstrap_slope(rising[:1] * 2).has_interval is False  # one distinct x: no slope


def test_paired_slope_difference():
    rng = np.random.default_rng(8)
    groups = []
    for x in (3.0, 4.0, 5.0):
        base = rng.normal(0, 1, 200)
        tuned = base + 0.15 * x + rng.normal(0, 0.2, 200)
        groups.append(PairedSlopeGroup(x, (base, np.ones(200)), (tuned, np.ones(200))))
    estimate = paired_slope_difference(groups)
    assert estimate.value == pytest.approx(0.15, abs=0.05) and estimate.ci95[0] > 0


def test_estimate_serialises_to_plain_json_numbers():
    estimate = paired_proportions([1, 0, 1, 1, 0, 1], [1, 1, 1, 1, 0, 1])
    data = json.loads(json.dumps(estimate.to_json(), allow_nan=False))
    assert isinstance(data["ci95"], list) and len(data["ci95"]) == 2 and data["n"] == 6
    assert data["detectable"] == pytest.approx(estimate.detectable_effect())
    assert Estimate.from_json(data) == estimate
    missing = unavailable(float("nan"), 0, "x", "no items").to_json()
    assert missing["value"] is None and missing["ci95"] is None and missing["note"] == "no items"
    json.dumps(missing, allow_nan=False)


def test_detectable_effect_is_2_8_standard_errors_and_shrinks_with_n():
    assert made(0, (-1, 1), se=0.1).detectable_effect() == pytest.approx(0.1 * (1.959964 + 0.841621))
    small = paired_proportions([True, False] * 25, [False, True] * 25)
    large = paired_proportions([True, False] * 100, [False, True] * 100)
    assert large.detectable_effect() < small.detectable_effect()


# --- the rule for a claimed difference ---


def test_planted_difference_is_reproduced_and_its_reverse_is_not():
    rng = np.random.default_rng(10)
    first = rng.normal(0, 1, 200)
    planted = paired_mean_difference(first, first + 0.5 + rng.normal(0, 1, 200))
    reverse = paired_mean_difference(first, first - 0.5 + rng.normal(0, 1, 200))
    assert difference_verdict(planted, +1).verdict == "reproduced"
    assert difference_verdict(reverse, +1).verdict == "not reproduced"
    assert difference_verdict(reverse, -1).verdict == "reproduced"
    assert difference_verdict(planted, -1).verdict == "not reproduced"


def test_noisy_null_difference_is_inconclusive_and_says_what_it_could_detect():
    rng = np.random.default_rng(11)
    null = paired_mean_difference(rng.normal(0, 1, 30), rng.normal(0, 1, 30))
    decision = difference_verdict(null, +1)
    assert decision.verdict == "inconclusive"
    assert "can detect an effect of" in decision.reason and decision.detectable > 0


@pytest.mark.parametrize("sign", [+1, -1])
def test_an_interval_touching_zero_does_not_exclude_it(sign):
    touching = made(0.1 * sign, (0.0, 0.2) if sign > 0 else (-0.2, 0.0))
    assert difference_verdict(touching, sign).verdict == "inconclusive"
    assert difference_verdict(touching, -sign).verdict == "inconclusive"
    barely = made(0.1 * sign, (1e-9, 0.2) if sign > 0 else (-0.2, -1e-9))
    assert difference_verdict(barely, sign).verdict == "reproduced"


def test_missing_interval_is_inconclusive_not_a_crash():
    off = bootstrap_mean([1.0, 2.0, 3.0], resamples=0)
    decision = difference_verdict(off, +1)
    assert decision.verdict == "inconclusive" and "bootstrap off" in decision.reason
    assert difference_verdict(unavailable(None, 0, "x", "no items"), -1).verdict == "inconclusive"
    assert no_effect_verdict(off, 0.1, controlled()).verdict == "inconclusive"
    json.dumps(decision.to_json(), allow_nan=False)
    for empty in (paired_mean_difference([], []), bootstrap_ratio([0.0, 0.0], [0.0, 0.0]), paired_proportions([], [])):
        assert empty.value is None and not empty.has_interval and empty.note
        assert difference_verdict(empty, +1).verdict == "inconclusive"


# --- the rule for a claimed absence of effect ---


def test_equivalence_inside_the_margin_with_a_positive_control_is_reproduced():
    same = [True] * 120 + [False] * 280
    nearly = same[:]
    nearly[0], nearly[200] = False, True  # one question lost, one gained: no effect
    estimate = paired_proportions(same, nearly)
    decision = no_effect_verdict(estimate, 0.10, controlled())
    assert decision.verdict == "reproduced" and decision.margin == 0.10
    assert "±0.1" in decision.rule and decision.positive_control.verdict == "reproduced"


def test_equivalence_without_or_with_a_failed_positive_control_is_inconclusive():
    inside = made(0.0, (-0.05, 0.05), (-0.04, 0.04))
    assert no_effect_verdict(inside, 0.10, None).verdict == "inconclusive"
    failed = difference_verdict(made(0.0, (-0.1, 0.1)), +1)
    decision = no_effect_verdict(inside, 0.10, failed)
    assert decision.verdict == "inconclusive" and "positive control" in decision.reason
    assert no_effect_verdict(inside, 0.10, controlled()).verdict == "reproduced"


def test_an_effect_beyond_the_margin_is_not_reproduced_even_without_a_control():
    base = [False] * 200
    lora = [True] * 70 + [False] * 130  # a planted 35-point gain
    estimate = paired_proportions(base, lora)
    assert no_effect_verdict(estimate, 0.10, None).verdict == "not reproduced"
    worse = paired_proportions(lora, base)
    assert no_effect_verdict(worse, 0.10, controlled()).verdict == "not reproduced"


def test_noisy_null_against_a_margin_is_inconclusive():
    rng = np.random.default_rng(12)
    # The demo's situation: 48 questions, accuracies near chance, so the interval is wider than ±10 points.
    first, second = rng.random(48) < 0.25, rng.random(48) < 0.3
    decision = no_effect_verdict(paired_proportions(first, second), 0.10, controlled())
    assert decision.verdict == "inconclusive" and "can detect an effect of" in decision.reason


def test_equivalence_needs_the_90_percent_interval_strictly_inside_the_margin():
    reaching = made(0.0, (-0.12, 0.12), (-0.05, 0.10))
    assert no_effect_verdict(reaching, 0.10, controlled()).verdict == "inconclusive"
    reaching_low = made(0.0, (-0.12, 0.12), (-0.10, 0.05))
    assert no_effect_verdict(reaching_low, 0.10, controlled()).verdict == "inconclusive"
    # The 95% interval reaching beyond the margin does not matter for equivalence: TOST uses the 90% one.
    assert no_effect_verdict(made(0.0, (-0.12, 0.12), (-0.0999, 0.0999)), 0.10, controlled()).verdict == "reproduced"


def test_not_reproduced_needs_the_95_percent_interval_entirely_beyond_the_margin():
    touching = made(0.2, (0.10, 0.30), (0.12, 0.28))
    assert no_effect_verdict(touching, 0.10, controlled()).verdict == "inconclusive"
    beyond = made(0.2, (0.1001, 0.30), (0.12, 0.28))
    assert no_effect_verdict(beyond, 0.10, controlled()).verdict == "not reproduced"
    below = made(-0.2, (-0.30, -0.1001), (-0.28, -0.12))
    assert no_effect_verdict(below, 0.10, controlled()).verdict == "not reproduced"


def test_decisions_serialise_with_rule_reason_and_numbers():
    decision = no_effect_verdict(
        made(0.02, (-0.06, 0.10), (-0.04, 0.08)), 0.10, controlled(), effect="LoRA − base accuracy",
        fmt=lambda x: f"{100 * x:+.1f} points",
    )  # fmt: skip
    data = json.loads(json.dumps(decision.to_json(), allow_nan=False))
    assert data["verdict"] == "reproduced" and "LoRA − base accuracy" in data["rule"] and "10.0 points" in data["rule"]
    assert data["estimate"]["ci95"] == [-0.06, 0.10] and data["positive_control"]["verdict"] == "reproduced"
    assert isinstance(Decision(**{**decision.__dict__}), Decision)
    with pytest.raises(ValueError):
        no_effect_verdict(made(0, (-1, 1)), 0.0, None)
    with pytest.raises(ValueError):
        difference_verdict(made(0, (-1, 1)), 0)


# --- many groups at once, relative slopes, sample sizes ---


def test_many_groups_share_resamples_and_match_the_single_group_interval():
    rng = np.random.default_rng(13)
    counts = rng.integers(1, 40, size=(3, 120)).astype(float)
    sums = counts * rng.gamma(2.0, 0.05, size=(3, 120))
    together = bootstrap_ratios(sums, counts, seed=4)
    alone = bootstrap_ratio(sums[1], counts[1], seed=4)
    assert together[1].ci95 == pytest.approx(alone.ci95) and together[1].value == pytest.approx(alone.value)
    assert [estimate.n for estimate in together] == [120, 120, 120]
    # One row of counts serves every group.
    shared = bootstrap_ratios(sums, counts[0], seed=4)
    assert shared[2].value == pytest.approx(sums[2].sum() / counts[0].sum())


def test_a_group_some_resamples_leave_empty_gets_an_interval_from_the_rest():
    counts = np.zeros((2, 60))
    counts[0] = 1
    counts[1, :4] = [3, 1, 2, 5]  # only 4 of 60 responses reach this position
    sums = counts * np.linspace(0.1, 1.0, 60)
    dense, sparse = bootstrap_ratios(sums, counts, resamples=1000, seed=1)
    assert dense.has_interval and sparse.has_interval and sparse.n == 4
    assert sparse.ci95[0] <= sparse.value <= sparse.ci95[1] and "left out" in sparse.method
    alone = bootstrap_ratios(sums[1:], np.where(np.arange(60) == 0, 1.0, 0.0), resamples=1000)[0]
    assert not alone.has_interval and "fewer than 2" in alone.note
    off = bootstrap_ratios(sums, counts, resamples=0)
    assert all(not e.has_interval and "bootstrap off" in e.note for e in off) and off[0].value == pytest.approx(
        sums[0].sum() / 60
    )


def relative_groups(lora_slope, full_slope, level=0.5, n=200, seed=14):
    rng = np.random.default_rng(seed)
    groups = []
    for x in (3.0, 4.0, 5.0):
        prompt = rng.normal(0, 0.05, n)  # prompts differ; both models answered the same ones
        lora = 0.1 + lora_slope * (x - 4) + prompt + rng.normal(0, 0.02, n)
        full = level + full_slope * (x - 4) + prompt + rng.normal(0, 0.02, n)
        groups.append(PairedSlopeGroup(x, (lora, np.ones(n)), (full, np.ones(n))))
    return groups


def test_relative_slope_divides_by_the_second_models_level():
    groups = relative_groups(lora_slope=0.01, full_slope=0.1)
    lora = relative_slope(groups)
    full = relative_slope(groups, of="second")
    full_means = [np.mean(g.second[0]) for g in groups]
    lora_means = [np.mean(g.first[0]) for g in groups]
    assert lora.value == pytest.approx(np.polyfit([3, 4, 5], lora_means, 1)[0] / np.mean(full_means))
    assert full.value == pytest.approx(np.polyfit([3, 4, 5], full_means, 1)[0] / np.mean(full_means))
    assert full.ci95[0] > 0 and lora.ci95[0] < 0.1 / 0.5 and lora.ci90[1] < 0.1


def test_items_needed_scale_with_the_inverse_square_of_the_effect():
    estimate = made(0.05, (-0.05, 0.15), se=0.05)  # n = 100, detectable 0.14
    assert estimate.items_to_detect(0.14) == pytest.approx(100, abs=1)
    assert estimate.items_to_detect(0.07) == pytest.approx(400, abs=2)
    assert estimate.items_to_detect(0.5) == 100  # never fewer than this run had
    assert estimate.items_to_detect(0.0) is None
    # Equivalence within ±0.10 at a true effect of 0.05: (1.645 + 0.842) x SE must fit in 0.05.
    assert estimate.items_for_equivalence(0.10) == pytest.approx(100 * (0.05 * 2.486 / 0.05) ** 2, rel=0.01)
    assert estimate.items_for_equivalence(0.05) is None  # the effect sits on the margin
