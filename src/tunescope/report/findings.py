"""The paper's claims, checked on this run: effect size, 95% interval and a verdict each.

Verdicts: *reproduced* (the interval excludes no effect, in the paper's direction), *not
reproduced* (it excludes it in the other direction), *inconclusive* (the interval spans no
effect), *not tested* (this run lacks what the claim needs). Claims the paper makes without
a number of its own, or that tunescope adds, say so.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from tunescope.judge.pipeline import JUDGEMENTS_FILE
from tunescope.report.collect import Cell, MethodRun, probe_results
from tunescope.report.stats import mean_difference_ci, micro_mean_difference_ci, paired_gain_ci, verdict
from tunescope.shift.output import TOKENS_FILE


def _finding(key: str, claim: str, paper: str, **rest: Any) -> dict[str, Any]:
    return {"key": key, "claim": claim, "paper": paper, "effect": None, "note": None, **rest}


def _not_tested(key: str, claim: str, paper: str, why: str) -> dict[str, Any]:
    return _finding(key, claim, paper, verdict="not tested", this_run=why)


def _per_example(run: MethodRun, column: str, value: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """Per response: the sum of ``column`` (or the count of rows equal to ``value``) and the token count."""
    import pyarrow.parquet as pq

    table = pq.read_table(run.shift_dir / TOKENS_FILE, columns=["example_id", column]).to_pandas()
    values = (table[column] == value).astype(float) if value is not None else table[column].astype(float)
    grouped = values.groupby(table["example_id"])
    return grouped.sum().to_numpy(), grouped.count().to_numpy().astype(float)


def _pair(cell: Cell) -> tuple[MethodRun, MethodRun] | None:
    lora, full = cell.runs.get("lora"), cell.runs.get("full")
    if lora and full and lora.shift and full.shift:
        return lora, full
    return None


def kl_finding(cell: Cell) -> dict[str, Any]:
    """Full fine-tuning shifts the distribution more than LoRA (mean KL)."""
    key, claim = "kl", "LoRA shifts the token distribution less than full fine-tuning"
    paper = "mean per-token KL ≈0.05–0.23 for LoRA vs ≈0.36–0.80 for full fine-tuning (Fig. 1, Llama-2)"
    if not (pair := _pair(cell)):
        return _not_tested(key, claim, paper, "needs shift results for both LoRA and full fine-tuning")
    lora, full = pair
    difference, ci = micro_mean_difference_ci(_per_example(lora, "kl"), _per_example(full, "kl"))
    return _finding(
        key, claim, paper,
        this_run=f"KL {lora.shift['kl_mean']:.4f} (LoRA) vs {full.shift['kl_mean']:.4f} (full)",
        effect={"name": "KL(full) − KL(LoRA), nats per token", "value": difference, "ci95": ci},
        verdict=verdict(ci, +1),
    )  # fmt: skip


def unshifted_finding(cell: Cell) -> dict[str, Any]:
    """LoRA mostly emits what the base model would (more unshifted tokens than full fine-tuning)."""
    key, claim = "unshifted", "LoRA mostly emits the base model's own top token (more unshifted positions)"
    paper = "LoRA base probability ≈0.75–0.90 vs ≈0.61–0.78 for full; URIAL's chat pairs 78–82% unshifted"
    if not (pair := _pair(cell)):
        return _not_tested(key, claim, paper, "needs shift results for both LoRA and full fine-tuning")
    lora, full = pair
    difference, ci = micro_mean_difference_ci(
        _per_example(full, "klass", "unshifted"), _per_example(lora, "klass", "unshifted")
    )
    return _finding(
        key, claim, paper,
        this_run=f"unshifted {lora.shift['unshifted']:.1%} (LoRA) vs {full.shift['unshifted']:.1%} (full)",
        effect={"name": "unshifted share, LoRA − full", "value": difference, "ci95": ci},
        verdict=verdict(ci, +1),
    )  # fmt: skip


def initiation_finding(cell: Cell) -> dict[str, Any]:
    """LoRA's shift sits at the start of sentences more than full fine-tuning's (Fig. 4)."""
    key, claim = "initiation", "LoRA's shift concentrates at the start of each sentence (response initiation)"
    paper = "KL of the first 5% of a sentence's tokens is 2.3–3.7x the rest for LoRA, 1.4–1.8x for full (Fig. 4)"
    if not (pair := _pair(cell)):
        return _not_tested(key, claim, paper, "needs shift results for both LoRA and full fine-tuning")
    lora, full = (run.shift["initiation"]["relative_difference"] for run in pair)
    ratio = {method: run.shift["initiation"] for method, run in zip(("lora", "full"), pair, strict=True)}
    text = ", ".join(
        f"{m}: first {r['kl_first']['value']:.3f} vs rest {r['kl_rest']['value']:.3f}" for m, r in ratio.items()
    )
    result = verdict(tuple(lora["ci95"]), +1)
    if result == "reproduced" and lora["value"] <= full["value"]:
        result = "not reproduced"  # concentrated, but no more than full fine-tuning's
    return _finding(
        key, claim, paper, this_run=text,
        effect={"name": "LoRA relative difference (first − rest) / rest", "value": lora["value"],
                "ci95": tuple(lora["ci95"]), "full": full["value"]},
        verdict=result,
    )  # fmt: skip


def knowledge_finding(cell: Cell) -> dict[str, Any]:
    """LoRA does not learn new facts (tunescope's probe; the motivation, not a paper figure)."""
    key, claim = "knowledge", "LoRA does not learn facts the base model lacks (no gain over the base on taught facts)"
    paper = "no probe in the paper (§11); the blog behind this project: LoRA on unseen content ≈ random"
    probe = cell.probe
    results = probe_results(cell)
    if not probe or not probe.get("facts_taught") or "lora" not in results or "base" not in results:
        return _not_tested(key, claim, paper, "needs a probe of a LoRA run trained on the fictional facts")
    ids = probe["fact_question_ids"]

    def correct(method: str) -> np.ndarray:
        right = set(results[method]["knowledge"]["correct_ids"])
        return np.array([question in right for question in ids])

    gain, ci = paired_gain_ci(correct("base"), correct("lora"))
    accuracies = ", ".join(f"{m} {e['knowledge']['multiple_choice']:.1%}" for m, e in results.items())
    return _finding(
        key, claim, paper,
        this_run=f"{accuracies} on {len(ids)} questions about taught facts (chance {probe['chance']:.0%})",
        effect={"name": "LoRA accuracy − base accuracy (paired)", "value": gain, "ci95": ci},
        # The claim is an absence: it holds unless LoRA's gain is clearly above zero.
        verdict="not reproduced" if ci[0] > 0 else "reproduced",
        note="extension: tunescope's knowledge-uptake probe on invented facts; a gain whose interval reaches 0 "
        "counts as no learning",
    )  # fmt: skip


def forgetting_finding(cell: Cell) -> dict[str, Any]:
    """Full fine-tuning raises held-out loss more than LoRA (tunescope's forgetting probe)."""
    key, claim = "forgetting", "Full fine-tuning moves the model's general language model more than LoRA"
    paper = "indirect in the paper (§11: knowledge degradation); measured here as held-out loss"
    probe = cell.probe
    lora, full = cell.runs.get("lora"), cell.runs.get("full")
    if not probe or not lora or not full:
        return _not_tested(key, claim, paper, "needs a probe of both LoRA and full runs")
    deltas = {
        method: entry["forgetting"]["heldout_loss_delta"]
        for method, entry in probe_results(cell).items()
        if "forgetting" in entry
    }
    if len(deltas) < 2:
        return _not_tested(key, claim, paper, "the probe lacks one of the runs")
    return _finding(
        key, claim, paper,
        this_run=f"held-out loss change {deltas['lora']:+.4f} (LoRA) vs {deltas['full']:+.4f} (full) nats/token",
        effect={"name": "Δloss(full) − Δloss(LoRA)", "value": deltas["full"] - deltas["lora"], "ci95": None},
        verdict="reproduced" if deltas["full"] > deltas["lora"] else "not reproduced",
        note="point estimate over the held-out passages, no interval; extension",
    )  # fmt: skip


def judge_finding(cell: Cell) -> dict[str, Any]:
    """LoRA scores higher than full fine-tuning with the judge (paper: 70 of 71 pairs on H, C, F)."""
    key, claim = "judge", "LoRA's answers score higher than full fine-tuning's"
    paper = "LoRA beats full fine-tuning on helpfulness, clarity and factuality in 70 of 71 matched pairs"
    if not cell.judge or not cell.judge_dir:
        return _not_tested(key, claim, paper, "no judge in this run")
    scores: dict[str, list[float]] = {"lora": [], "full": []}
    log = cell.judge_dir / JUDGEMENTS_FILE
    for line in log.read_text(encoding="utf-8").splitlines() if log.is_file() else []:
        record = json.loads(line)
        values = [v for v in (record.get("scores") or {}).values() if isinstance(v, int | float)]
        if record.get("model") in scores and values:
            scores[record["model"]].append(sum(values) / len(values))
    if not scores["lora"] or not scores["full"]:
        return _not_tested(key, claim, paper, "the judge produced no usable scores for both runs")
    difference, ci = mean_difference_ci(np.array(scores["full"]), np.array(scores["lora"]))
    stand_in = bool(cell.judge.get("stand_in_judge"))
    result = verdict(ci, +1)
    return _finding(
        key, claim, paper,
        this_run=f"mean of the five aspects {np.mean(scores['lora']):.2f} (LoRA, n={len(scores['lora'])}) vs "
        f"{np.mean(scores['full']):.2f} (full, n={len(scores['full'])})",
        effect={"name": "mean score, LoRA − full", "value": difference, "ci95": ci},
        verdict="not tested" if stand_in else result,
        note="stand-in judge: its scores do not measure quality, so no verdict" if stand_in else None,
    )  # fmt: skip


def size_finding(cells: list[Cell]) -> dict[str, Any]:
    """Data size barely changes LoRA's shift while full fine-tuning's grows (needs several sizes)."""
    key, claim = "size", "More data barely changes LoRA's shift; full fine-tuning's grows with data size"
    paper = "LoRA KL flat from 1K to 326K examples; full fine-tuning's rises (Fig. 1)"
    series: dict[str, list[tuple[float, float]]] = {"lora": [], "full": []}
    for cell in cells:
        for method, run in cell.runs.items():
            if run.shift and cell.subset_size and method in series:
                series[method].append((float(cell.subset_size), run.shift["kl_mean"]))
    if min(len({size for size, _ in points}) for points in series.values()) < 2:
        return _not_tested(key, claim, paper, "needs at least two training-set sizes")
    slopes = {}
    for method, points in series.items():
        sizes, kls = np.log10([p[0] for p in points]), np.array([p[1] for p in points])
        slopes[method] = float(np.polyfit(sizes, kls, 1)[0])
    return _finding(
        key, claim, paper,
        this_run=f"KL change per tenfold more data: {slopes['lora']:+.4f} (LoRA), {slopes['full']:+.4f} (full)",
        effect={"name": "slope(full) − slope(LoRA), KL per decade", "value": slopes["full"] - slopes["lora"],
                "ci95": None},
        verdict="reproduced" if slopes["full"] > max(slopes["lora"], 0) else "not reproduced",
        note="slopes of a least-squares line over the sizes, no interval",
    )  # fmt: skip


def borrow_findings(cell: Cell) -> list[dict[str, Any]]:
    """Style tokens (Fig. 12) and borrowed words (§6), from the borrowing analysis."""
    style_key, style_claim = "style", "LoRA's shifted tokens are style words more than full fine-tuning's"
    style_paper = "LoRA's shifted tokens are discourse words ('However', 'typically'); full's are content (Fig. 12)"
    borrow_key, borrow_claim = "borrowed", "Words at shifted positions come from the training set"
    borrow_paper = "81.2% of words at shifted and 66.7% at marginal positions occur in the training set (§6)"
    runs = {m: r.borrow for m, r in cell.runs.items() if r.borrow}
    if not runs:
        why = "no borrowing analysis in this run"
        return [
            _not_tested(style_key, style_claim, style_paper, why),
            _not_tested(borrow_key, borrow_claim, borrow_paper, why),
        ]
    found = []
    shares = {
        m: _measured((b.get("style_tokens") or {}).get("share", {}).get("shifted_or_marginal")) for m, b in runs.items()
    }
    if shares.get("lora") and shares.get("full"):
        lora, full_share = shares["lora"], shares["full"]
        found.append(_finding(
            style_key, style_claim, style_paper,
            this_run=f"style share of shifted/marginal tokens: {lora['value']:.1%} {_interval(lora)} (LoRA, "
            f"{lora['n']} tokens), {full_share['value']:.1%} {_interval(full_share)} (full, {full_share['n']} tokens)",
            effect={"name": "style share, LoRA − full", "value": lora["value"] - full_share["value"], "ci95": None},
            verdict=separation_verdict(lora, full_share),
            note=_SEPARATE_INTERVALS,
        ))  # fmt: skip
    else:
        found.append(_not_tested(style_key, style_claim, style_paper, "needs borrowing results for both methods"))
    full = runs.get("full") or next(iter(runs.values()))
    words = (full.get("borrowed_words") or {}).get("tuned", {})
    shifted, baseline = (
        _measured(words.get(klass, {}).get("all_words")) for klass in ("shifted_or_marginal", "unshifted")
    )
    if shifted and baseline:
        found.append(_finding(
            borrow_key, borrow_claim, borrow_paper,
            this_run=f"{shifted['value']:.1%} {_interval(shifted)} of words at shifted/marginal positions vs "
            f"{baseline['value']:.1%} {_interval(baseline)} at unshifted ones",
            effect={"name": "share found, shifted − unshifted", "value": shifted["value"] - baseline["value"],
                    "ci95": None},
            verdict=separation_verdict(shifted, baseline),
            note=_SEPARATE_INTERVALS,
        ))  # fmt: skip
    else:
        found.append(_not_tested(borrow_key, borrow_claim, borrow_paper, "borrowing results lack the word shares"))
    return found


MIN_SHARE_COUNT = 10
"""Fewest words behind a share before its bootstrap interval is trusted (one word gives [100%, 100%])."""


_SEPARATE_INTERVALS = (
    f"each share has its own 95% interval; the verdict needs them apart and {MIN_SHARE_COUNT}+ words behind each"
)


def _measured(share: dict[str, Any] | None) -> dict[str, Any] | None:
    """A share from borrow.json, or None where it had no words to count (its value and interval are null)."""
    if share and share.get("value") is not None and None not in (share.get("ci95") or [None]):
        return share
    return None


def _interval(share: dict[str, Any]) -> str:
    low, high = share["ci95"]
    return f"[{low:.1%}, {high:.1%}]"


def separation_verdict(expected_higher: dict[str, Any], expected_lower: dict[str, Any]) -> str:
    """A verdict from two shares' separate 95% intervals: reproduced only when apart in the expected order.

    Conservative: non-overlapping intervals imply a significant difference, overlapping ones do not
    imply its absence, so overlap is called inconclusive, as is a share counted over too few words.
    """
    if min(expected_higher["n"], expected_lower["n"]) < MIN_SHARE_COUNT:
        return "inconclusive"
    higher, lower = expected_higher["ci95"], expected_lower["ci95"]
    if higher[0] > lower[1]:
        return "reproduced"
    if higher[1] < lower[0]:
        return "not reproduced"
    return "inconclusive"


def all_findings(cells: list[Cell]) -> list[dict[str, Any]]:
    """Every claim, checked on the first cell that can test it (the size claim across cells)."""
    findings = []
    checks = (kl_finding, unshifted_finding, initiation_finding, knowledge_finding, forgetting_finding, judge_finding)
    for check in checks:
        results = [check(cell) for cell in cells] or [check(Cell("", "", None))]
        findings.append(next((r for r in results if r["verdict"] != "not tested"), results[0]))
    findings.append(size_finding(cells))
    borrowed = [borrow_findings(cell) for cell in cells] or [borrow_findings(Cell("", "", None))]
    for index in range(2):
        results = [pair[index] for pair in borrowed]
        findings.append(next((r for r in results if r["verdict"] != "not tested"), results[0]))
    return findings
