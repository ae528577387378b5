"""The findings that compare arms (NEFTune, LoRA's rank and learning rate, continued pre-training), on both sides
of their thresholds, and how a cell's arms are found for them.

Same style as test_findings.py: synthetic per-item data with a planted effect, its reverse, a null too
small to decide, an equivalence inside and beyond the margin, and a failing positive control.
"""

import json

import numpy as np
import pytest

from tunescope.report.collect import Cell, MethodRun, arm_label, manifest_arms
from tunescope.report.findings import (
    CLAIMS,
    NFT_JUDGE_MARGIN,
    NFT_SHIFT_MARGIN,
    RANK_MARGIN,
    Settings,
    all_findings,
    arms_of_kind,
    check_cpt_knowledge,
    check_learning_rate,
    check_nft_judge,
    check_nft_shift,
    check_rank,
    cpt_knowledge_finding,
    learning_rate_pair,
    rank_sweep,
)

FAST = Settings(resamples=1000, seed=0)
OFF = Settings(resamples=0)
CELL = {"model": "m", "dataset": "d", "subset_size": None, "name": "m · d · n=all"}
ARM_KEYS = ("nft_shift", "nft_judge", "lora_rank", "lora_lr", "cpt_knowledge")


def models(*means, n=150, seed=0, spread=0.01):
    """Per model, per prompt (summed KL, tokens) around each pooled mean; prompts share a level across models."""
    rng = np.random.default_rng(seed)
    prompt = rng.normal(0, 0.02, n)
    counts = rng.integers(20, 120, n).astype(float)
    return [(np.clip(mean + prompt + rng.normal(0, spread, n), 0, None) * counts, counts) for mean in means]


def as_json(finding):
    data = json.loads(json.dumps(finding.to_json(), allow_nan=False))
    assert data["rule"] and data["verdict"] == finding.verdict and data["cell"] == CELL
    return data


# --- NFT vs full: a claimed absence, with full above LoRA as the positive control ---


def test_nft_shifting_as_much_as_full_reproduces_the_claim():
    nft, full, lora = models(0.40, 0.40, 0.10)
    found = check_nft_shift(nft, full, lora, FAST, CELL)
    assert found.verdict == "reproduced" and found.decision.positive_control.verdict == "reproduced"
    data = as_json(found)
    assert data["margin"] == NFT_SHIFT_MARGIN and data["effect"]["unit"] == "share of full fine-tuning's mean KL"
    assert abs(data["effect"]["value"]) < 0.05 and data["positive_control"]["name"].startswith("(KL(full)")
    assert [m["name"] for m in data["measurements"]] == ["KL, NFT", "KL, full", "KL, LoRA"]


def test_nft_halving_the_shift_is_not_reproduced():
    nft, full, lora = models(0.20, 0.40, 0.10)
    found = check_nft_shift(nft, full, lora, FAST, CELL)
    assert found.verdict == "not reproduced"
    assert found.decision.estimate.value == pytest.approx(-0.5, abs=0.05)


def test_nft_equivalence_without_a_gap_between_full_and_lora_is_inconclusive():
    nft, full, lora = models(0.40, 0.40, 0.40)  # the control: full shifts no more than LoRA
    found = check_nft_shift(nft, full, lora, FAST, CELL)
    assert found.verdict == "inconclusive" and found.decision.positive_control.verdict != "reproduced"


def test_nft_shift_just_inside_and_just_beyond_the_margin():
    inside = check_nft_shift(*models(0.40 * (1 + NFT_SHIFT_MARGIN / 2), 0.40, 0.10, n=400), FAST, CELL)
    beyond = check_nft_shift(*models(0.40 * (1 + 2 * NFT_SHIFT_MARGIN), 0.40, 0.10, n=400), FAST, CELL)
    assert inside.verdict == "reproduced" and beyond.verdict == "not reproduced"


def test_nft_shift_from_few_prompts_or_without_the_bootstrap_is_inconclusive():
    few = check_nft_shift(*models(0.40, 0.40, 0.10, n=8), FAST, CELL)
    assert few.verdict == "inconclusive" and "fewer than 10" in few.decision.reason
    off = check_nft_shift(*models(0.40, 0.40, 0.10), OFF, CELL)
    assert off.verdict == "inconclusive" and "bootstrap off" in off.decision.reason


def judge_scores(*means, n=120, seed=0, spread=0.3):
    rng = np.random.default_rng(seed)
    prompt = rng.normal(0, 0.5, n)
    return [np.clip(mean + prompt + rng.normal(0, spread, n), 1, 5) for mean in means]


def test_nft_judge_equivalence_with_lora_above_full_as_control():
    found = check_nft_judge(*judge_scores(2.4, 2.4, 3.2), FAST, CELL)
    assert found.verdict == "reproduced" and as_json(found)["margin"] == NFT_JUDGE_MARGIN
    assert check_nft_judge(*judge_scores(3.4, 2.4, 3.2), FAST, CELL).verdict == "not reproduced"
    no_control = check_nft_judge(*judge_scores(2.4, 2.4, 2.4), FAST, CELL)
    assert no_control.verdict == "inconclusive"
    assert check_nft_judge(*judge_scores(2.4, 2.4, 3.2, n=12, spread=1.0), FAST, CELL).verdict == "inconclusive"


# --- LoRA's rank: a claimed absence between the smallest and largest rank ---


def test_ranks_that_shift_alike_reproduce_no_substantial_change():
    small, large, full = models(0.10, 0.105, 0.40)
    found = check_rank(small, large, full, (2, 32), FAST, CELL)
    assert found.verdict == "reproduced" and as_json(found)["margin"] == RANK_MARGIN
    assert [m.name for m in found.measurements] == ["KL, LoRA r=2", "KL, LoRA r=32", "KL, full"]
    assert found.control_name == "(KL(full) − KL(LoRA r=32)) / KL(full)"


def test_a_rank_that_doubles_the_shift_is_not_reproduced_and_a_noisy_one_is_inconclusive():
    small, large, full = models(0.10, 0.25, 0.40)
    assert check_rank(small, large, full, (2, 32), FAST, CELL).verdict == "not reproduced"
    noisy = check_rank(*models(0.10, 0.13, 0.40, n=20, spread=0.1), (2, 32), FAST, CELL)
    assert noisy.verdict == "inconclusive" and noisy.needed_items() is not None


# --- LoRA's learning rate: a claimed difference ---


def test_lora_at_its_own_rate_shifting_more_reproduces_the_confound():
    own, at_full, full = models(0.20, 0.08, 0.40)
    found = check_learning_rate(own, at_full, full, (2e-4, 5e-5), FAST, CELL)
    assert found.verdict == "reproduced" and found.decision.estimate.value == pytest.approx(0.12, abs=0.01)
    data = as_json(found)
    assert data["measurements"][1]["name"] == "KL, LoRA at 5e-05 (full fine-tuning's rate)"
    assert data["measurements"][3]["name"].endswith("the method gap at one learning rate")
    assert check_learning_rate(at_full, own, full, (2e-4, 5e-5), FAST, CELL).verdict == "not reproduced"
    null = check_learning_rate(*models(0.1, 0.1, 0.4, n=12, spread=0.2), (2e-4, 5e-5), FAST, CELL)
    assert null.verdict == "inconclusive" and "includes 0" in null.decision.reason


# --- continued pre-training: cpt+lora − lora on the facts cpt+lora was taught ---


def outcomes(right, n):
    return [True] * right + [False] * (n - right)


def test_cpt_lora_answering_more_taught_facts_than_lora_is_reproduced():
    n = 96
    base, lora, cpt = outcomes(24, n), outcomes(26, n), outcomes(70, n)
    taught = [index < 20 for index in range(n)]
    found = check_cpt_knowledge(base, lora, cpt, taught, 0.25, CELL)
    assert found.verdict == "reproduced"
    data = as_json(found)
    assert data["effect"]["value"] == pytest.approx(44 / 96) and data["effect"]["items"] == "questions"
    assert "McNemar" in data["effect"]["method"] and data["n"] == n
    names = [m["name"] for m in data["measurements"]]
    assert names[:3] == [f"accuracy, {who}, facts cpt+lora was taught" for who in ("base", "lora", "cpt+lora")]
    assert names[3:] == [
        "cpt+lora − lora, facts only continued pre-training taught",
        "cpt+lora − lora, facts lora was taught too",
    ]
    only_cpt = data["measurements"][3]
    assert only_cpt["n"] == 76 and "lora's own data taught 20 of these 96 facts" in data["notes"][0]


def test_cpt_lora_no_better_or_worse_than_lora():
    n = 96
    base = outcomes(24, n)
    worse = check_cpt_knowledge(base, outcomes(70, n), outcomes(24, n), [False] * n, 0.25, CELL)
    assert worse.verdict == "not reproduced"
    same = check_cpt_knowledge(base, outcomes(25, n), outcomes(27, n), [False] * n, 0.25, CELL)
    assert same.verdict == "inconclusive" and same.decision.detectable > 0
    assert len(same.measurements) == 3  # no question was taught to lora too: no split by what lora was taught


# --- finding the arms in a cell ---


def run(name, kind, method, **config):
    arm = {"name": name, "label": name, "kind": kind, "method": method, "settings": {}, "parent": None}
    rates = {"lora_learning_rate": 2e-4, "full_learning_rate": 5e-5}
    return MethodRun(name, arm, config={"method": method, "lora_r": 8, "out": f"runs/{name}", **rates, **config})


def cell_with(*runs):
    return Cell("m", "d", None, runs={r.method: r for r in runs})


def test_arms_are_found_by_kind_the_one_named_after_it_first():
    cell = cell_with(run("lora-r2", "lora", "lora", lora_r=2), run("lora", "lora", "lora"), run("nft", "nft", "full"))
    assert [r.method for r in arms_of_kind(cell, "lora")] == ["lora", "lora-r2"]
    assert [r.method for r in arms_of_kind(cell, "nft")] == ["nft"]


def test_a_rank_sweep_is_the_lora_arms_that_differ_only_in_rank():
    cell = cell_with(
        run("lora", "lora", "lora"), run("lora-r32", "lora", "lora", lora_r=32),
        run("lora-r2", "lora", "lora", lora_r=2), run("lora-lr5e-5", "lora", "lora", lora_learning_rate=5e-5),
        run("cpt+lora", "cpt+lora", "lora", lora_r=4),
    )  # fmt: skip
    assert [r.method for r in rank_sweep(cell)] == ["lora-r2", "lora", "lora-r32"]
    assert rank_sweep(cell_with(run("lora", "lora", "lora"), run("lora-lr5e-5", "lora", "lora", lora_r=2,
                                                                  lora_learning_rate=5e-5))) == []  # fmt: skip


def test_the_learning_rate_pair_is_lora_at_full_fine_tunings_rate_and_above_it_at_the_same_rank():
    full, own = run("full", "full", "full"), run("lora", "lora", "lora")
    at_full = run("lora-lr5e-5", "lora", "lora", lora_learning_rate=5e-5)
    assert learning_rate_pair(cell_with(own, full, at_full)) == (own, at_full, full)
    assert "at full fine-tuning's rate (5e-05)" in learning_rate_pair(cell_with(own, full))
    other_rank = run("lora-lr5e-5", "lora", "lora", lora_r=2, lora_learning_rate=5e-5)
    assert "same rank" in learning_rate_pair(cell_with(own, full, other_rank))
    assert "needs a trained full arm" in learning_rate_pair(cell_with(own, at_full))


def test_arm_findings_appear_when_the_grid_has_arms_and_say_what_is_missing():
    plain = all_findings([cell_with(run("lora", "lora", "lora"), run("full", "full", "full"))], FAST)
    assert [finding.claim.key for finding in plain.headline] == [key for key in CLAIMS if key not in ARM_KEYS]
    assert all(len(findings) == 8 for findings in plain.by_cell)
    swept = cell_with(
        run("lora", "lora", "lora"), run("full", "full", "full"), run("lora-r2", "lora", "lora", lora_r=2)
    )
    findings = all_findings([swept], FAST)
    by_key = {finding.claim.key: finding for finding in findings.headline}
    assert list(by_key) == list(CLAIMS) and [f.claim.key for f in findings.by_cell[0]][-5:] == list(ARM_KEYS)
    for key in ARM_KEYS:
        assert by_key[key].verdict == "not tested" and by_key[key].decision.reason, key
        assert by_key[key].to_json()["rule"]
    assert by_key["nft_shift"].decision.reason == "needs an nft arm and a full arm"
    assert "shift results" in by_key["lora_rank"].decision.reason  # the rank sweep is there; its shift is not


def probe_entry(correct, taught):
    return {"taught": taught, "sets": {"facts": {"correct": correct}}}


def test_the_cpt_finding_reads_the_probe_by_arm_and_keeps_the_questions_cpt_lora_was_taught(tmp_path):
    cpt_run, lora_run = run("cpt+lora", "cpt+lora", "lora"), run("lora", "lora", "lora")
    for r in (cpt_run, lora_run):
        r.train_dir = tmp_path / r.method
        r.train_dir.mkdir()
    n = 60
    taught_cpt = [index < 50 for index in range(n)]  # the last ten: taught to no arm (another run's facts)
    cell = cell_with(lora_run, cpt_run)
    cell.probe = {
        "schema_version": 3, "base": "smollm2", "chance": 0.25, "facts_taught": True,
        "models": {
            "smollm2": probe_entry(outcomes(12, n), None),
            str(tmp_path / "lora"): probe_entry(outcomes(13, n), [index < 10 for index in range(n)]),
            str(tmp_path / "cpt+lora"): probe_entry(outcomes(45, n), taught_cpt),
        },
    }  # fmt: skip
    found = cpt_knowledge_finding(cell, FAST)
    assert found.verdict == "reproduced" and found.decision.estimate.n == 50
    assert found.cell["methods"] == ["base", "lora", "cpt+lora"]
    cell.probe["schema_version"] = 2
    for entry in cell.probe["models"].values():
        entry.pop("taught")
    assert "before schema 3" in cpt_knowledge_finding(cell, FAST).decision.reason


def test_arms_come_from_the_manifest_with_their_labels_and_an_older_manifest_still_reads():
    arms = [
        {"name": "lora-r2", "label": "lora r=2", "kind": "lora", "method": "lora", "settings": {"lora_r": 2},
         "parent": None},
        {"name": "nft", "kind": "nft", "method": "full", "settings": {}, "parent": None},  # no label: older manifest
    ]  # fmt: skip
    read = manifest_arms({"arms": arms, "config": {"methods": [{"arm": "lora", "lora_r": [2]}, "nft"]}})
    assert [arm["label"] for arm in read] == ["lora r=2", "nft"]
    old = manifest_arms({"config": {"methods": ["lora", "full"]}})
    assert [(arm["name"], arm["method"]) for arm in old] == [("lora", "lora"), ("full", "full")]
    assert arm_label(MethodRun("lora-r2", read[0])) == "lora r=2" and arm_label(MethodRun("full")) == "full"


def knowledge_probe(tmp_path, lora_taught):
    """A probe of base, lora and full; full knows every fact, lora only what it is planted with (below)."""
    n = len(lora_taught)
    sets = {name: {"correct": outcomes(n // 4, n)} for name in ("control", "training_wording")}
    sets["facts"] = {"correct": [False] * 20 + [True] * 20 + [False] * (n - 40)}  # the base: right on 20-39
    lora_sets = {**sets, "facts": {"correct": [True] * 40 + [False] * (n - 40)}}  # lora: on 0-39
    full_sets = {name: {"correct": [True] * n} for name in sets}
    runs = [run("lora", "lora", "lora"), run("full", "full", "full")]
    for r in runs:
        r.train_dir = tmp_path / r.method
        r.train_dir.mkdir(exist_ok=True)
    cell = cell_with(*runs)
    cell.probe = {
        "schema_version": 3, "base": "smollm2", "chance": 0.25, "facts_taught": True,
        "models": {
            "smollm2": {"taught": None, "sets": sets},
            str(tmp_path / "lora"): {"taught": lora_taught, "sets": lora_sets},
            str(tmp_path / "full"): {"taught": lora_taught, "sets": full_sets},
        },
    }  # fmt: skip
    return cell


def test_the_knowledge_finding_keeps_only_the_questions_the_lora_run_was_taught(tmp_path):
    from tunescope.report.findings import knowledge_finding

    # The questions also cover facts only another arm was taught (cpt+lora's articles): LoRA was taught the
    # last 60 of 80, where it answers as the base does, so it learnt nothing of what it was taught.
    n = 80
    found = knowledge_finding(knowledge_probe(tmp_path, [index >= 20 for index in range(n)]), FAST)
    assert found.decision.estimate.n == 60 and found.verdict == "reproduced"
    # Over all 80, LoRA gains 20 questions it was never taught (a planted artefact): not the claim's question.
    everything = knowledge_finding(knowledge_probe(tmp_path, [True] * n), FAST)
    assert everything.decision.estimate.n == 80 and everything.verdict == "not reproduced"
    none = knowledge_finding(knowledge_probe(tmp_path, [False] * n), FAST)
    assert none.verdict == "not tested" and "taught none" in none.decision.reason
