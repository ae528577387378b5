"""Every finding's rule on synthetic cells, on both sides of its threshold.

Each claim is checked with a planted effect (reproduced), its reverse (not reproduced), a noisy null
(inconclusive, with the smallest detectable effect), and, where the rule has them, an equivalence
case inside and outside the margin and a missing positive control. The bootstrap switched off
gives *inconclusive* with the reason, never a crash.
"""

import json

import numpy as np
import pytest

from tunescope.report.collect import Cell, MethodRun
from tunescope.report.findings import (
    ARM_CLAIMS,
    CLAIMS,
    KNOWLEDGE_MARGIN,
    SIZE_MARGIN,
    Settings,
    all_findings,
    check_borrowed,
    check_forgetting,
    check_initiation,
    check_judge,
    check_kl,
    check_knowledge,
    check_size,
    check_style,
    check_unshifted,
    judge_finding,
)
from tunescope.report.items import PerItem, matched
from tunescope.stats import PairedSlopeGroup

FAST = Settings(resamples=1000, seed=0)
OFF = Settings(resamples=0)
CELL = {"model": "m", "dataset": "d", "subset_size": 100, "name": "m · d · n=100"}


def pooled(rng, n, mean, spread=0.02, per_item=None):
    """Per item: a token count and a sum whose pooled mean is about ``mean`` (shared item effects optional)."""
    counts = rng.integers(20, 120, n).astype(float)
    level = mean + (per_item if per_item is not None else 0) + rng.normal(0, spread, n)
    return np.clip(level, 0, None) * counts, counts


def two_models(mean_a, mean_b, n=120, seed=0, spread=0.02):
    """Two models' per-prompt (sums, counts); prompts differ far more than the models (a shared effect)."""
    rng = np.random.default_rng(seed)
    prompt = rng.normal(0, 0.05, n)
    return pooled(rng, n, mean_a, spread, prompt), pooled(rng, n, mean_b, spread, prompt)


def assert_json(finding):
    data = json.loads(json.dumps(finding.to_json(), allow_nan=False))
    assert data["rule"] and data["cell"] == CELL and data["verdict"] == finding.verdict
    return data


# --- differences over prompts: kl, unshifted, style, borrowed ---


@pytest.mark.parametrize(
    "check, order",
    [
        (check_kl, "second higher"),  # KL(full) − KL(LoRA) > 0
        (check_unshifted, "first higher"),  # unshifted share: LoRA − full > 0
        (check_style, "first higher"),  # style share: LoRA − full > 0
        (check_borrowed, "first higher"),  # found share: shifted − unshifted > 0
    ],
)
def test_pooled_difference_rules_follow_the_interval(check, order):
    low, high = 0.10, 0.16
    planted = two_models(low, high) if order == "second higher" else two_models(high, low)
    reverse = planted[::-1]
    assert check(*planted, FAST, CELL).verdict == "reproduced"
    assert check(*reverse, FAST, CELL).verdict == "not reproduced"
    null = check(*two_models(0.1, 0.1, n=15, seed=3, spread=0.05), FAST, CELL)
    assert null.verdict == "inconclusive" and "includes 0" in null.decision.reason
    data = assert_json(null)
    assert data["detectable"] > 0 and data["n"] == 15
    assert data["needed_n"] is None or data["needed_n"] >= 15
    assert data["effect"]["ci95"][0] <= 0 <= data["effect"]["ci95"][1] and len(data["measurements"]) == 2
    off = check(*planted, OFF, CELL)
    assert off.verdict == "inconclusive" and "bootstrap off" in off.decision.reason
    assert_json(off)


def test_the_kl_effect_is_the_difference_of_pooled_means_over_the_same_prompts():
    lora, full = two_models(0.1, 0.3)
    found = check_kl(lora, full, FAST, CELL)
    expected = full[0].sum() / full[1].sum() - lora[0].sum() / lora[1].sum()
    assert found.decision.estimate.value == pytest.approx(expected)
    assert "paired" in found.decision.estimate.method


def test_prompts_are_paired_by_id_whatever_the_order():
    lora = PerItem(("p1", "p2", "p3"), {"kl": np.array([1.0, 2.0, 3.0])})
    full = PerItem(("p3", "p4", "p1"), {"kl": np.array([30.0, 40.0, 10.0])})
    a, b = matched(lora, full)
    assert a.ids == b.ids == ("p1", "p3")
    assert a["kl"].tolist() == [1.0, 3.0] and b["kl"].tolist() == [10.0, 30.0]


# --- initiation: the Fig. 4 ratio, LoRA − full ---


def initiation_arrays(ratio, n=150, seed=0):
    rng = np.random.default_rng(seed)
    first_counts, rest_counts = rng.integers(2, 6, n).astype(float), rng.integers(20, 60, n).astype(float)
    rest_level = rng.gamma(4.0, 0.025, n)
    first = first_counts * rest_level * ratio * rng.lognormal(0, 0.2, n)
    return first, first_counts, rest_counts * rest_level, rest_counts


def test_initiation_compares_the_two_ratios():
    lora, full = initiation_arrays(3.0, seed=1), initiation_arrays(1.5, seed=2)
    planted = check_initiation(lora, full, FAST, CELL)
    assert planted.verdict == "reproduced" and planted.decision.estimate.value == pytest.approx(1.5, abs=0.3)
    assert check_initiation(full, lora, FAST, CELL).verdict == "not reproduced"
    # Both concentrated, equally: LoRA's shift sits at sentence starts, but no more than full's.
    same = check_initiation(initiation_arrays(3.0, n=20, seed=1), initiation_arrays(3.0, n=20, seed=2), FAST, CELL)
    assert same.verdict == "inconclusive"
    off = check_initiation(lora, full, OFF, CELL)
    assert off.verdict == "inconclusive" and "bootstrap off" in off.decision.reason
    assert [m.name for m in planted.measurements] == ["KL first / KL rest, LoRA", "KL first / KL rest, full"]


# --- knowledge: a claimed absence, equivalence against ±10 points with a positive control ---


def outcomes(right, n):
    return [True] * right + [False] * (n - right)


def probe(lora_facts, full_facts=None, lora_wording=None, n=400, base_right=100):
    base = outcomes(base_right, n)
    correct = {
        "base": {"facts": base, "control": outcomes(n // 4, n), "training_wording": base},
        "lora": {"facts": lora_facts, "control": outcomes(n // 4, n), "training_wording": lora_wording or base},
    }
    if full_facts is not None:
        correct["full"] = {"facts": full_facts, "control": outcomes(n // 4, n), "training_wording": full_facts}
    return correct


def test_no_gain_with_a_working_control_reproduces_learns_no_facts():
    n = 400
    lora = outcomes(100, n)
    lora[0], lora[150] = False, True  # one question lost, one gained
    found = check_knowledge(probe(lora, full_facts=outcomes(260, n)), 0.25, CELL)
    assert found.verdict == "reproduced" and found.decision.positive_control.verdict == "reproduced"
    data = assert_json(found)
    assert data["margin"] == KNOWLEDGE_MARGIN and data["positive_control"]["name"].startswith("full − base")
    assert data["effect"]["unit"] == "proportion" and data["effect"]["items"] == "questions"


def test_a_clear_gain_beyond_the_margin_is_not_reproduced():
    found = check_knowledge(probe(outcomes(250, 400), full_facts=outcomes(260, 400)), 0.25, CELL)
    assert found.verdict == "not reproduced"  # LoRA learnt facts: 37.5 points above the base


def test_few_questions_are_inconclusive_and_say_how_many_would_do():
    n = 48
    lora = outcomes(14, n)  # the demo's situation: 12/48 vs 14/48, interval far wider than ±10 points
    found = check_knowledge(probe(lora, full_facts=outcomes(40, n), n=n, base_right=12), 0.25, CELL)
    assert found.verdict == "inconclusive" and "reaches beyond" in found.decision.reason
    data = assert_json(found)
    assert data["detectable"] > KNOWLEDGE_MARGIN and data["needed_n"] > n


def test_equivalence_without_a_working_positive_control_is_inconclusive():
    n = 400
    # No full run, and LoRA did not even pick up its training wording: the instrument showed nothing.
    no_control = check_knowledge(probe(outcomes(100, n)), 0.25, CELL)
    assert no_control.verdict == "inconclusive" and "positive control" in no_control.decision.reason
    assert no_control.control_name.startswith("LoRA − base accuracy on the taught facts in the training wording")
    # The training-wording control stands in when there is no full run, and can pass.
    with_wording = check_knowledge(probe(outcomes(100, n), lora_wording=outcomes(300, n)), 0.25, CELL)
    assert with_wording.verdict == "reproduced"
    # A full run that learnt nothing is a failed control.
    failed = check_knowledge(probe(outcomes(100, n), full_facts=outcomes(100, n)), 0.25, CELL)
    assert failed.verdict == "inconclusive"


def test_knowledge_notes_whether_the_untaught_control_sits_at_chance():
    found = check_knowledge(probe(outcomes(100, 400), full_facts=outcomes(260, 400)), 0.25, CELL)
    assert any("chance inside its 95% interval" in note for note in found.notes)
    biased = probe(outcomes(100, 400), full_facts=outcomes(260, 400))
    biased["base"]["control"] = outcomes(200, 400)
    assert any("outside" in note for note in check_knowledge(biased, 0.25, CELL).notes)


# --- forgetting: held-out loss, full − LoRA, paired over passages ---


def passages(mean, n=40, seed=0, shared=None):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(100, 400, n).astype(float)
    level = 3.0 + (shared if shared is not None else 0) + mean + rng.normal(0, 0.01, n)
    return level * tokens, tokens


def test_forgetting_rule_follows_the_paired_interval():
    shared = np.random.default_rng(9).normal(0, 0.5, 40)  # passages differ far more than the models do
    base, lora, full = (passages(d, shared=shared, seed=s) for s, d in ((1, 0.0), (2, 0.02), (3, 0.15)))
    # The same token counts for all three: the same passages.
    lora, full = (lora[0] / lora[1] * base[1], base[1]), (full[0] / full[1] * base[1], base[1])
    assert check_forgetting(base, lora, full, FAST, CELL).verdict == "reproduced"
    assert check_forgetting(base, full, lora, FAST, CELL).verdict == "not reproduced"
    null = check_forgetting(base, lora, (lora[0] * 1.0005, lora[1]), FAST, CELL)
    assert null.verdict in {"inconclusive", "reproduced"}  # a tiny planted rise; never "not reproduced"
    noisy = [passages(0.0, n=6, seed=s) for s in (4, 5, 6)]
    assert check_forgetting(*noisy, FAST, CELL).verdict == "inconclusive"
    off = check_forgetting(base, lora, full, OFF, CELL)
    assert off.verdict == "inconclusive" and "bootstrap off" in off.decision.reason


# --- the judge: five-aspect averages paired over prompts; dropped items; stand-in; unfinished ---


def test_judge_rule_on_paired_averages():
    rng = np.random.default_rng(4)
    prompt = rng.normal(3, 0.8, 80)
    lora, full = prompt + 0.4 + rng.normal(0, 0.2, 80), prompt + rng.normal(0, 0.2, 80)
    assert check_judge(lora, full, FAST, CELL).verdict == "reproduced"
    assert check_judge(full, lora, FAST, CELL).verdict == "not reproduced"
    noise = rng.normal(0, 1, 10)
    null = check_judge(prompt[:10] + noise - noise.mean(), prompt[:10], FAST, CELL)  # no difference on average
    assert null.verdict == "inconclusive" and null.decision.estimate.value == pytest.approx(0, abs=1e-9)
    assert check_judge(lora, full, OFF, CELL).verdict == "inconclusive"


def write_judge(directory, scores, stand_in=False, complete=None):
    aspects = ["helpfulness", "clarity", "factuality", "depth", "engagement"]
    directory.mkdir(parents=True, exist_ok=True)
    lines = []
    for model, items in scores.items():
        for item, values in items.items():
            record = {"key": f"score/{model}/{item}", "mode": "score", "model": model, "item_id": item,
                      "status": "ok", "scores": dict(zip(aspects, values, strict=False))}  # fmt: skip
            lines.append(json.dumps(record))
    (directory / "judgements.jsonl").write_text("\n".join(lines) + "\n")
    summary = {"mode": "score", "aspects": aspects, "stand_in_judge": stand_in, "calls": {"request_errors": 3}}
    if complete is not None:
        summary["complete"] = complete
    cell = Cell("m", "d", 100, runs={"lora": MethodRun("lora"), "full": MethodRun("full")})
    cell.judge_dir, cell.judge = directory, summary
    return cell


def test_judge_finding_pairs_items_and_drops_incomplete_ones(tmp_path):
    rng = np.random.default_rng(5)
    lora = {f"p{i}": [int(v) for v in rng.integers(3, 6, 5)] for i in range(60)}
    full = {f"p{i}": [int(v) for v in rng.integers(1, 4, 5)] for i in range(60)}
    lora["p0"] = [5, 5, 5, 5]  # one aspect missing: dropped, with its pair
    found = judge_finding(write_judge(tmp_path / "j", {"lora": lora, "full": full}), FAST)
    assert found.verdict == "reproduced" and found.decision.estimate.n == 59
    assert any("2 of 120 judgements left out" in note for note in found.notes)
    assert not any("incomplete" in note for note in found.notes)  # no "complete" key: complete
    stand_in = judge_finding(write_judge(tmp_path / "s", {"lora": lora, "full": full}, stand_in=True), FAST)
    assert stand_in.verdict == "not tested" and "stand-in" in stand_in.decision.reason
    assert stand_in.decision.estimate is not None  # the numbers are still shown
    unfinished = judge_finding(write_judge(tmp_path / "u", {"lora": lora, "full": full}, complete=False), FAST)
    assert any("incomplete (3 requests failed)" in note for note in unfinished.notes)


# --- data size: LoRA flat (equivalence, full's growth as control) and full growing ---


def size_groups(lora_slope, full_slope, n=150, sizes=(1000, 10000, 50000), seed=0, noise=0.02):
    rng = np.random.default_rng(seed)
    groups = []
    for size in sizes:
        x = np.log10(size)
        prompt = rng.normal(0, 0.03, n)
        lora = 0.10 + lora_slope * (x - 4) + prompt + rng.normal(0, noise, n)
        full = 0.50 + full_slope * (x - 4) + prompt + rng.normal(0, noise, n)
        tokens = np.full(n, 50.0)
        groups.append(PairedSlopeGroup(x, (lora * tokens, tokens), (full * tokens, tokens)))
    return groups


def test_lora_flat_and_full_growing_is_reproduced():
    found = check_size(size_groups(lora_slope=0.0, full_slope=0.15), FAST, CELL)
    assert found.verdict == "reproduced"
    assert [part.verdict for part in found.parts] == ["reproduced", "reproduced"]
    data = assert_json(found)
    assert data["margin"] == SIZE_MARGIN and len(data["parts"]) == 2 and data["positive_control"]["verdict"]


def test_lora_growing_beyond_the_margin_is_not_reproduced():
    # LoRA's KL grows by 0.1 per decade: 20% of full's mean KL (0.5), beyond the 10% margin.
    found = check_size(size_groups(lora_slope=0.10, full_slope=0.15), FAST, CELL)
    assert found.verdict == "not reproduced" and found.parts[0].verdict == "not reproduced"


def test_full_not_growing_fails_the_positive_control_and_the_second_part():
    flat_both = check_size(size_groups(lora_slope=0.0, full_slope=0.0, n=40, noise=0.05), FAST, CELL)
    assert flat_both.verdict == "inconclusive"
    assert flat_both.parts[0].verdict == "inconclusive" and "positive control" in flat_both.parts[0].decision.reason
    shrinking = check_size(size_groups(lora_slope=0.0, full_slope=-0.15), FAST, CELL)
    assert shrinking.verdict == "not reproduced" and shrinking.parts[1].verdict == "not reproduced"


def test_size_equivalence_inside_and_outside_the_margin():
    # 0.03 per decade over full's 0.5 is 6%: inside ±10% once the interval is narrow enough.
    inside = check_size(size_groups(lora_slope=0.03, full_slope=0.15, n=400, noise=0.01), FAST, CELL)
    assert inside.parts[0].verdict == "reproduced"
    # 0.07 per decade is 14%: outside; with few prompts the interval straddles the margin: inconclusive.
    straddling = check_size(size_groups(lora_slope=0.05, full_slope=0.15, n=10, noise=0.08, seed=2), FAST, CELL)
    assert straddling.parts[0].verdict == "inconclusive" and straddling.verdict == "inconclusive"
    off = check_size(size_groups(lora_slope=0.0, full_slope=0.15), OFF, CELL)
    assert off.verdict == "inconclusive" and all("bootstrap off" in part.decision.reason for part in off.parts)


# --- selection and serialisation ---


def test_an_empty_experiment_has_every_claim_not_tested_with_its_rule():
    findings = all_findings([Cell("m", "d", None)], FAST)
    # No arms beyond lora and full: the paper's claims only (the arm comparisons: test_arm_findings.py).
    assert [f.claim.key for f in findings.headline] == [key for key in CLAIMS if key not in ARM_CLAIMS]
    for finding in findings.headline:
        data = json.loads(json.dumps(finding.to_json(), allow_nan=False))
        assert data["verdict"] == "not tested" and data["reason"] and data["effect"] is None
        assert data["rule"].startswith(("A difference is claimed", "No effect is claimed", "Two parts"))


def test_a_bootstrap_over_fewer_than_ten_items_decides_nothing():
    lora, full = two_models(0.1, 0.5, n=9)  # a huge planted difference, but only nine prompts
    few = check_kl(lora, full, FAST, CELL)
    assert few.verdict == "inconclusive" and "fewer than 10" in few.decision.reason
    assert few.decision.estimate.value == pytest.approx(0.4, abs=0.05) and few.decision.estimate.ci95 is None
    assert check_kl(*two_models(0.1, 0.5, n=10), FAST, CELL).verdict == "reproduced"
    groups = size_groups(lora_slope=0.0, full_slope=0.3, n=9)
    assert all("fewer than 10" in part.decision.reason for part in check_size(groups, FAST, CELL).parts)


def test_the_headline_reads_the_largest_training_set_of_a_model_and_dataset_first(monkeypatch):
    import tunescope.report.findings as findings_module
    from tunescope.report.findings import cell_of, difference
    from tunescope.stats import paired_mean_difference

    def kl_growing_with_size(cell, settings):
        """KL(full) − KL(LoRA) below 0 at the small size and above it at the large one."""
        lora = np.random.default_rng(0).normal(0.3, 0.05, 40)
        full = lora + (0.2 if cell.subset_size == 96 else -0.2) + np.random.default_rng(1).normal(0, 0.01, 40)
        return difference(CLAIMS["kl"], paired_mean_difference(lora, full, **vars(FAST)), cell_of(cell))

    monkeypatch.setattr(findings_module, "CELL_CHECKS", [kl_growing_with_size])
    found = all_findings([Cell("m", "d", 12), Cell("m", "d", 96)], FAST)
    kl = next(finding for finding in found.headline if finding.claim.key == "kl")
    assert kl.cell["subset_size"] == 96 and kl.verdict == "reproduced"
    assert [cell[0].verdict for cell in found.by_cell] == ["not reproduced", "reproduced"]  # grid order kept
