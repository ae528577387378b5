"""The paper's claims, checked on this run, each decided by a pre-registered rule (docs/method.md#findings).

Every claim is data (:class:`Claim`: what is claimed, the paper's number, the effect and its unit,
the rule and its margin) and one function that measures the effect on matched items of one cell and
hands it to a rule of :mod:`tunescope.stats`:

* a claimed **difference** ("full fine-tuning shifts more than LoRA") is *reproduced* when the
  paired 95% interval excludes 0 in the paper's direction, *not reproduced* when it excludes 0 the
  other way, otherwise *inconclusive* (:func:`tunescope.stats.difference_verdict`);
* a claimed **absence of effect** ("LoRA learns no facts") is *reproduced* only when the 90%
  interval lies inside a margin stated here (equivalence by two one-sided tests) *and* a positive
  control in the same run detected an effect; *not reproduced* when the 95% interval lies beyond
  the margin; otherwise *inconclusive* (:func:`tunescope.stats.no_effect_verdict`);
* *not tested* when the run lacks what the claim needs.

No verdict rests on a point estimate: an effect without an interval (too few items, the bootstrap
switched off) is *inconclusive*, with the reason. Each finding carries the cell it came from, the
effect with its intervals and n, the rule, and the smallest effect the run could have detected.

To add a finding: a :class:`Claim` in :data:`CLAIMS` and a function ``(Cell, Settings) -> Finding``
in :data:`CELL_CHECKS` (or ``(list[Cell], Settings) -> list[Finding]`` in :data:`SERIES_CHECKS`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from tunescope.display import display_name
from tunescope.report.collect import Cell, MethodRun, learning_rate, probe_results
from tunescope.report.items import PerItem, borrow_counts, judge_items, matched, response_sums
from tunescope.shift.summary import initiation_ratio
from tunescope.stats import (
    RESAMPLES,
    Decision,
    Estimate,
    PairedSlopeGroup,
    Resampling,
    SumsCounts,
    bootstrap_mean,
    bootstrap_ratio,
    difference_rule,
    difference_verdict,
    no_effect_rule,
    no_effect_verdict,
    paired_bootstrap,
    paired_mean_difference,
    paired_proportions,
    paired_ratio_difference,
    proportion,
    relative_slope,
)

KNOWLEDGE_MARGIN = 0.10
"""Equivalence margin of "LoRA learns no facts": ±10 accuracy points of LoRA − base on the taught facts."""
MIN_BOOTSTRAP_ITEMS = 10
"""Fewest matched items behind a bootstrap interval that a verdict may rest on. Below it a percentile or BCa
interval undercovers badly (a handful of items has only a handful of distinct resamples), so the effect is
shown without an interval and the verdict is inconclusive. Score intervals (accuracies) need no such floor."""
SIZE_MARGIN = 0.10
"""Equivalence margin of "more data barely changes LoRA's shift": LoRA's KL may change by at most 10% of full
fine-tuning's mean KL (same model and data) per tenfold more training data (docs/method.md#findings)."""
NFT_SHIFT_MARGIN = 0.20
"""Equivalence margin of "NEFTune leaves full fine-tuning's shift as it is": NFT's mean KL within ±20% of full
fine-tuning's. In the paper's Fig. 1 LoRA's KL is 40–85% below full's, so a NEFTune that closed even a third of
that gap would fall outside the margin."""
NFT_JUDGE_MARGIN = 0.25
"""Equivalence margin of "NEFTune's answers score no better than full fine-tuning's": ±0.25 judge points (1–5),
a third of the paper's LoRA − full gap (3.14 − 2.42) and over ten times its NFT − full difference (−0.02)."""
RANK_MARGIN = 0.10
"""Equivalence margin of "LoRA's rank makes no substantial change": the largest and the smallest rank's mean KL
may differ by at most 10% of full fine-tuning's mean KL (the size claim's margin, for a 16-fold change of rank)."""


# --- units ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Unit:
    """How the numbers of one unit are shown (report.json keeps the raw values and the unit's name)."""

    scale: float = 1.0
    """Multiplier for display (100 for proportions shown as percentages or points)."""
    digits: int = 4
    """Decimals shown."""
    difference: str = ""
    """Suffix of a difference (e.g. ' points')."""
    level: str = ""
    """Suffix of a level (e.g. '%')."""

    def format(self, value: float | None, signed: bool = True) -> str:
        """``value`` for a reader: signed with the difference suffix, or unsigned with the level suffix."""
        if value is None:
            return "–"
        shown = f"{value * self.scale:{'+' if signed else ''}.{self.digits}f}"
        return shown + (self.difference if signed else self.level)


UNITS: dict[str, Unit] = {
    "nats per token": Unit(digits=4),
    "proportion": Unit(scale=100, digits=1, difference=" points", level="%"),
    "ratio": Unit(digits=2, level="×"),
    "judge score (1-5)": Unit(digits=2),
    "KL change per tenfold data, as a share of full fine-tuning's mean KL": Unit(
        scale=100, digits=1, difference="%", level="%"
    ),
    "share of full fine-tuning's mean KL": Unit(scale=100, digits=1, difference="%", level="%"),
}
"""Every unit a finding or measurement uses, by the name report.json gives it."""


def formatter(unit: str) -> Callable[[float], str]:
    """The signed formatter of ``unit``, for the rule and reason sentences."""
    return lambda value: UNITS[unit].format(value)


# --- claims and findings -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    """One claim, with everything its verdict depends on fixed before any data is seen."""

    key: str
    """Stable id (report.json, tests)."""
    claim: str
    """The claim, in words."""
    paper: str
    """What the paper reports (or that it has no number: see ``extension``)."""
    effect: str
    """The effect measured, in words (e.g. 'KL(full) − KL(LoRA)')."""
    unit: str
    """Unit of the effect (a key of :data:`UNITS`)."""
    items: str
    """What the effect's n counts (prompts, questions, passages, ...)."""
    kind: Literal["difference", "no effect", "two parts"]
    """Which rule decides it."""
    expected_sign: int = 1
    """Direction of a claimed difference: +1 (effect above 0) or -1."""
    margin: float | None = None
    """Equivalence margin of a no-effect claim, in the effect's unit."""
    extension: bool = False
    """True when the paper has no such measurement and tunescope's probe stands in for it."""
    parts: tuple[Claim, ...] = ()
    """A two-part claim's parts: a no-effect claim whose positive control is the second, a difference claim."""

    def rule(self) -> str:
        """The rule, in words (shown beside the verdict even when the claim is not tested)."""
        if self.kind == "difference":
            return difference_rule(self.expected_sign, self.effect)
        if self.kind == "no effect" and self.margin is not None:
            return no_effect_rule(self.margin, self.effect, formatter(self.unit))
        first, second = self.parts
        return (
            f"Two parts, both decided in this run: (1) {first.rule()} Its positive control is part (2). "
            f"(2) {second.rule()} The claim is reproduced when both parts are, not reproduced when either is not, "
            "otherwise inconclusive."
        )


@dataclass(frozen=True)
class Measurement:
    """A number shown beside a finding for context (a level, not a verdict), e.g. each model's KL."""

    name: str
    """What it is, e.g. 'KL, LoRA'."""
    unit: str
    """Its unit (a key of :data:`UNITS`)."""
    estimate: Estimate
    """Value, interval and n."""

    def to_json(self) -> dict[str, Any]:
        """``{name, unit, value, ci95, ci90, n, se, p_value, detectable, method, note}``."""
        return {"name": self.name, "unit": self.unit, **self.estimate.to_json()}


@dataclass(frozen=True)
class Finding:
    """A claim's verdict on this run, with the numbers and the rule behind it."""

    claim: Claim
    """The claim checked."""
    decision: Decision
    """Verdict, rule, reason, effect estimate, detectable effect, margin, positive control."""
    cell: dict[str, Any]
    """Where the effect was measured: model, dataset, training-set size(s), methods."""
    measurements: tuple[Measurement, ...] = ()
    """Numbers shown for context."""
    notes: tuple[str, ...] = ()
    """Anything a reader needs to weigh the verdict (items left out, an unfinished judge, ...)."""
    control_name: str | None = None
    """What the positive control measured, when the rule has one."""
    parts: tuple[Finding, ...] = ()
    """The sub-findings of a two-part claim."""

    @property
    def verdict(self) -> str:
        """The verdict."""
        return self.decision.verdict

    def needed_items(self) -> int | None:
        """For an inconclusive verdict: items that would decide it at the observed effect (normal approximation).

        A difference: enough to detect the observed effect with 80% power. A claimed absence: enough
        for the 90% interval to fit inside the margin, were the true effect the observed one.
        """
        estimate = self.decision.estimate
        if self.verdict != "inconclusive":
            return None
        if self.parts:
            needed = [n for part in self.parts if (n := part.needed_items()) is not None]
            return max(needed) if needed else None
        if estimate is None or estimate.value is None:
            return None
        if self.claim.kind == "no effect" and self.claim.margin is not None:
            needed = estimate.items_for_equivalence(self.claim.margin)
        else:
            needed = estimate.items_to_detect(estimate.value)
        return max(needed, MIN_BOOTSTRAP_ITEMS) if needed is not None else None

    def to_json(self) -> dict[str, Any]:
        """Plain data: numbers, ``[low, high]`` intervals, counts, units, the rule and the verdict."""
        decision = self.decision
        control = decision.positive_control
        estimate = decision.estimate
        return {
            "key": self.claim.key,
            "claim": self.claim.claim,
            "paper": self.claim.paper,
            "extension": self.claim.extension,
            "cell": self.cell,
            "verdict": decision.verdict,
            "rule_type": self.claim.kind,
            "rule": decision.rule or self.claim.rule(),
            "reason": decision.reason,
            "effect": (
                {"name": self.claim.effect, "unit": self.claim.unit, "items": self.claim.items, **estimate.to_json()}
                if estimate is not None
                else None
            ),
            "n": estimate.n if estimate is not None else None,
            "detectable": _finite(decision.detectable),
            "needed_n": self.needed_items(),
            "expected_sign": self.claim.expected_sign if self.claim.kind == "difference" else None,
            "margin": self.claim.margin,
            "positive_control": (
                {"name": self.control_name, "unit": self.claim.unit, **control.to_json()} if control else None
            ),
            "parts": [part.to_json() for part in self.parts],
            "measurements": [measurement.to_json() for measurement in self.measurements],
            "notes": list(self.notes),
        }


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


@dataclass(frozen=True)
class Settings:
    """How the report's intervals are drawn."""

    resamples: int = RESAMPLES
    """Bootstrap resamples of items behind every bootstrap interval (0: off, and those verdicts are inconclusive)."""
    seed: int = 0
    """Seed of the resampling."""

    @property
    def resampling(self) -> Resampling:
        """The keywords of every bootstrap call of the report."""
        return {"resamples": self.resamples, "seed": self.seed}


def cell_of(cell: Cell, **extra: Any) -> dict[str, Any]:
    """The cell a finding came from, as report.json gives it."""
    return {"model": cell.model, "dataset": cell.dataset, "subset_size": cell.subset_size, "name": cell.name, **extra}


def untested(claim: Claim, cell: dict[str, Any], why: str) -> Finding:
    """The finding when the run lacks what ``claim`` needs."""
    return Finding(claim, Decision("not tested", rule=claim.rule(), reason=why), cell)


def enough_items(estimate: Estimate, items: int | None = None) -> Estimate:
    """A bootstrap estimate as a rule may use it: without its interval when fewer than ``MIN_BOOTSTRAP_ITEMS``.

    ``items`` overrides the count checked (e.g. the smallest group of a slope); the estimate's n otherwise.
    """
    count = estimate.n if items is None else items
    if not estimate.has_interval or count >= MIN_BOOTSTRAP_ITEMS:
        return estimate
    why = f"only {count} matched items: a bootstrap interval over fewer than {MIN_BOOTSTRAP_ITEMS} is not trusted"
    return Estimate(estimate.value, estimate.n, estimate.method, se=estimate.se, note=why)


def difference(claim: Claim, estimate: Estimate, cell: dict[str, Any], **rest: Any) -> Finding:
    """Decide a difference claim from its (bootstrap) estimate."""
    estimate = enough_items(estimate)
    decision = difference_verdict(estimate, claim.expected_sign, effect=claim.effect, fmt=formatter(claim.unit))
    return Finding(claim, decision, cell, **rest)


SIZE_PARTS = {
    "flat": Claim(
        "size_lora_flat", "More data barely changes LoRA's shift",
        "LoRA KL flat from 1K to 326K examples (Fig. 1)",
        "LoRA's KL slope per tenfold more data, over full fine-tuning's mean KL",
        "KL change per tenfold data, as a share of full fine-tuning's mean KL", "prompts", "no effect",
        margin=SIZE_MARGIN,
    ),
    "grows": Claim(
        "size_full_grows", "Full fine-tuning's shift grows with data size",
        "full fine-tuning's KL rises with the training-set size (Fig. 1)",
        "full fine-tuning's KL slope per tenfold more data, over its own mean KL",
        "KL change per tenfold data, as a share of full fine-tuning's mean KL", "prompts", "difference",
    ),
}  # fmt: skip
"""The two parts of the size claim; it is reproduced only when both are."""
CLAIMS: dict[str, Claim] = {
    claim.key: claim
    for claim in (
        Claim(
            "kl", "LoRA shifts the token distribution less than full fine-tuning",
            "mean per-token KL ≈0.05–0.23 for LoRA vs ≈0.36–0.80 for full fine-tuning (Fig. 1, Llama-2)",
            "KL(full) − KL(LoRA), pooled over the tokens of the same prompts' responses", "nats per token",
            "prompts", "difference",
        ),
        Claim(
            "unshifted", "LoRA mostly emits the base model's own top token (more unshifted positions than full)",
            "LoRA base probability ≈0.75–0.90 vs ≈0.61–0.78 for full; URIAL's chat pairs 78–82% unshifted",
            "unshifted share, LoRA − full, pooled over the same prompts' responses", "proportion", "prompts",
            "difference",
        ),
        Claim(
            "initiation", "LoRA's shift concentrates at the start of sentences more than full fine-tuning's",
            "KL of the first 5% of a sentence's tokens is 2.3–3.7× the rest for LoRA, 1.4–1.8× for full (Fig. 4)",
            "(KL first / KL rest) of LoRA − the same ratio of full, over the same prompts", "ratio", "prompts",
            "difference",
        ),
        Claim(
            "knowledge", "LoRA does not learn facts the base model lacks",
            "no probe in the paper (§11); the blog behind this project: LoRA on unseen content ≈ random",
            "LoRA − base multiple-choice accuracy on the taught facts (paraphrased questions)", "proportion",
            "questions", "no effect", margin=KNOWLEDGE_MARGIN, extension=True,
        ),
        Claim(
            "forgetting", "Full fine-tuning moves the model's general language model more than LoRA",
            "indirect in the paper (§11: knowledge degradation); measured here as held-out loss",
            "held-out loss change of full − that of LoRA (both against the base), same passages", "nats per token",
            "passages", "difference", extension=True,
        ),
        Claim(
            "judge", "LoRA's answers score higher than full fine-tuning's",
            "LoRA beats full fine-tuning on helpfulness, clarity and factuality in 70 of 71 matched pairs",
            "five-aspect average, LoRA − full, on the same prompts", "judge score (1-5)", "prompts", "difference",
        ),
        Claim(
            "size", "More data barely changes LoRA's shift; full fine-tuning's grows with data size",
            "LoRA KL flat from 1K to 326K examples; full fine-tuning's rises (Fig. 1)",
            "LoRA's KL slope per tenfold more data, over full fine-tuning's mean KL",
            "KL change per tenfold data, as a share of full fine-tuning's mean KL", "prompts", "two parts",
            margin=SIZE_MARGIN, parts=(SIZE_PARTS["flat"], SIZE_PARTS["grows"]),
        ),
        Claim(
            "style", "LoRA's shifted tokens are style words more than full fine-tuning's",
            "LoRA's shifted tokens are discourse words ('However', 'typically'); full's are content (Fig. 12)",
            "style share of shifted and marginal tokens, LoRA − full, over the same prompts", "proportion",
            "prompts", "difference",
        ),
        Claim(
            "borrowed", "Words at shifted positions come from the training set more than words at unshifted ones",
            "81.2% of words at shifted and 66.7% at marginal positions occur in the training set (§6; no baseline)",
            "share found in the training set, words at shifted/marginal − at unshifted positions, same responses",
            "proportion", "responses", "difference",
        ),
        # Arms compared (needs the arms in the grid: nft, lora rank or learning-rate sweeps, cpt+lora).
        Claim(
            "nft_shift", "NEFTune does not undo full fine-tuning's token shift",
            "NFT is full fine-tuning with noisy embeddings (appendix tables); no shift figure for it, and its judge "
            "scores match full's (below)",
            "(KL(NFT) − KL(full)) / KL(full), pooled over the same prompts' responses",
            "share of full fine-tuning's mean KL", "prompts", "no effect", margin=NFT_SHIFT_MARGIN, extension=True,
        ),
        Claim(
            "nft_judge", "NEFTune's answers score no better than full fine-tuning's",
            "Avg5 2.40 for NFT vs 2.42 for full fine-tuning, Alpaca 52K (Table 13 rows 53 vs 32); LoRA 3.14 (§6)",
            "five-aspect average, NFT − full, on the same prompts", "judge score (1-5)", "prompts", "no effect",
            margin=NFT_JUDGE_MARGIN,
        ),
        Claim(
            "lora_rank", "LoRA's rank makes no substantial change",
            "rank 8 used; ranks 2, 4, 16 and 32 tried with \"no substantial change\" (no numbers given)",
            "(KL(largest rank) − KL(smallest rank)) / KL(full), pooled over the same prompts' responses",
            "share of full fine-tuning's mean KL", "prompts", "no effect", margin=RANK_MARGIN,
        ),
        Claim(
            "lora_lr", "LoRA at full fine-tuning's learning rate shifts less than at its own",
            "the paper tunes LoRA at full fine-tuning's rate, 5e-5, where LoRA usually takes 1e-4 to 2e-4: a "
            "confound of its LoRA-vs-full comparison (no test in the paper)",
            "KL(LoRA at its own rate) − KL(LoRA at full's rate), pooled over the same prompts' responses",
            "nats per token", "prompts", "difference", extension=True,
        ),
        Claim(
            "cpt_knowledge", "Continued pre-training teaches facts that LoRA instruction tuning alone does not",
            "no probe in the paper (§11); the advice behind this project: LoRA on unseen knowledge ≈ chance, teach "
            "it by continued pre-training first",
            "cpt+lora − lora multiple-choice accuracy on the facts cpt+lora was taught (same questions)",
            "proportion", "questions", "difference", extension=True,
        ),
    )
}  # fmt: skip
"""Every claim the report checks, in the order of its findings table."""


# --- shift findings: LoRA against full fine-tuning on the same prompts -------------------------------------


def _shift_pair(cell: Cell) -> tuple[PerItem, PerItem, list[str]] | None:
    """Per-prompt sums of LoRA's and full fine-tuning's responses, on the prompts both answered."""
    runs = [cell.runs.get(method) for method in ("lora", "full")]
    sums = [response_sums(run.shift_dir) if run and run.shift_dir else None for run in runs]
    if sums[0] is None or sums[1] is None:
        return None
    lora, full = matched(sums[0], sums[1])
    notes = []
    unmatched = len(sums[0]) + len(sums[1]) - 2 * len(lora)
    if unmatched:
        notes.append(f"{unmatched} responses to prompts only one model answered are left out")
    return lora, full, notes


def _pooled(name: str, sums: np.ndarray, counts: np.ndarray, unit: str, settings: Settings) -> Measurement:
    estimate = bootstrap_ratio(sums, counts, **settings.resampling)
    return Measurement(name, unit, enough_items(estimate))


def _ratio_difference(
    key: str,
    reference: SumsCounts,
    other: SumsCounts,
    shown: tuple[tuple[str, SumsCounts], ...],
    settings: Settings,
    cell: dict[str, Any],
    notes: tuple[str, ...] = (),
) -> Finding:
    """Claim ``key`` decided on ``other − reference``, ratios of per-item ``(sums, counts)`` paired over items.

    ``shown`` names the pooled ratios printed beside the effect, in the order the page lists them.
    """
    claim = CLAIMS[key]
    effect = paired_ratio_difference(reference, other, **settings.resampling)
    context = tuple(_pooled(name, *sums_counts, claim.unit, settings) for name, sums_counts in shown)
    return difference(claim, effect, cell, measurements=context, notes=notes)


Notes = tuple[str, ...]
RatioCheck = Callable[..., Finding]
"""``check(lora, full, settings, cell, notes=())``: a claim decided on both models' per-prompt (sums, counts)."""


def _lora_against_full(key: str, per_prompt: str, measured: str, subtracted: Literal["lora", "full"]) -> RatioCheck:
    """The check of claim ``key``: the pooled ratio of the other model minus that of the ``subtracted`` one.

    The check takes per-prompt ``per_prompt`` (sums, counts) of both models, same prompts in the same order, and
    shows each model's pooled ratio as ``measured``.
    """

    def check(
        lora: SumsCounts, full: SumsCounts, settings: Settings, cell: dict[str, Any], notes: Notes = ()
    ) -> Finding:
        shown = ((f"{measured}, LoRA", lora), (f"{measured}, full", full))
        reference, other = (lora, full) if subtracted == "lora" else (full, lora)
        return _ratio_difference(key, reference, other, shown, settings, cell, notes)

    check.__doc__ = f"The {key} rule on per-prompt ``{per_prompt}`` of both models (same prompts, same order)."
    return check


def _shift_finding(
    key: str, columns: tuple[str, ...], check: Callable[..., Finding], cell: Cell, settings: Settings
) -> Finding:
    """Claim ``key`` checked by ``check(lora, full, settings, cell, notes)`` on both models' per-prompt ``columns``."""
    where = cell_of(cell, methods=["lora", "full"])
    if not (pair := _shift_pair(cell)):
        return untested(CLAIMS[key], where, "needs shift results (tokens.parquet) for both LoRA and full fine-tuning")
    lora, full, notes = pair
    return check(tuple(lora[c] for c in columns), tuple(full[c] for c in columns), settings, where, tuple(notes))


def kl_finding(cell: Cell, settings: Settings) -> Finding:
    """Full fine-tuning shifts the distribution more than LoRA: pooled KL, paired over prompts."""
    return _shift_finding("kl", ("kl", "tokens"), check_kl, cell, settings)


check_kl = _lora_against_full("kl", "(summed KL, tokens)", "KL", subtracted="lora")


def unshifted_finding(cell: Cell, settings: Settings) -> Finding:
    """LoRA keeps more of the base model's top tokens than full fine-tuning: pooled share, paired over prompts."""
    return _shift_finding("unshifted", ("unshifted", "tokens"), check_unshifted, cell, settings)


check_unshifted = _lora_against_full("unshifted", "(unshifted tokens, tokens)", "unshifted share", subtracted="full")


def _initiation_difference(*arrays: np.ndarray, axis: int = -1) -> np.ndarray:
    return initiation_ratio(*arrays[:4], axis=axis) - initiation_ratio(*arrays[4:], axis=axis)


def initiation_finding(cell: Cell, settings: Settings) -> Finding:
    """LoRA's KL concentrates at sentence starts more than full's: difference of the Fig. 4 ratios, paired over prompts.

    Prompts, not sentences, are the unit: the two models wrote different sentences, so only their
    responses to the same prompt are matched; resampling prompts keeps each response's sentences together.
    """
    columns = ("kl_first", "first_tokens", "kl_rest", "rest_tokens")
    return _shift_finding("initiation", columns, check_initiation, cell, settings)


def check_initiation(
    lora: tuple[np.ndarray, ...],
    full: tuple[np.ndarray, ...],
    settings: Settings,
    cell: dict[str, Any],
    notes: tuple[str, ...] = (),
) -> Finding:
    """The initiation rule on per-prompt (KL first, count first, KL rest, count rest) of both models."""
    claim = CLAIMS["initiation"]
    options = settings.resampling
    label = "difference of (pooled KL first / pooled KL rest), paired bootstrap over prompts"
    effect = paired_bootstrap((*lora, *full), _initiation_difference, label=label, **options)
    ratios = {
        name: paired_bootstrap(arrays, initiation_ratio, label="pooled KL first / pooled KL rest", **options)
        for name, arrays in (("LoRA", lora), ("full", full))
    }
    context = tuple(
        Measurement(f"KL first / KL rest, {name}", claim.unit, enough_items(ratio)) for name, ratio in ratios.items()
    )
    return difference(claim, effect, cell, measurements=context, notes=notes)


# --- the probes ---------------------------------------------------------------------------------------------


def _probe_models(cell: Cell) -> tuple[dict[str, dict[str, Any]], str | None]:
    """The probe's entries by 'base', 'lora', 'full', or why they cannot be used."""
    probe = cell.probe
    if not probe:
        return {}, "no probe in this cell"
    if int(probe.get("schema_version", 1)) < 2:
        return {}, "probe.json predates per-question outcomes (schema 1): rerun `tunescope probe`"
    return probe_results(cell), None


def knowledge_finding(cell: Cell, settings: Settings) -> Finding:
    """LoRA learns no facts: equivalence of LoRA − base on the taught facts, with a positive control."""
    claim, where = CLAIMS["knowledge"], cell_of(cell, methods=["base", "lora", "full"])
    models, why = _probe_models(cell)
    if why:
        return untested(claim, where, why)
    if not cell.probe.get("facts_taught"):
        return untested(claim, where, f"the probed runs were not taught fictional facts: {cell.probe.get('note')}")
    if "base" not in models or "lora" not in models:
        return untested(claim, where, "needs the probe of the base model and of a LoRA run")
    # In a grid with arms the questions cover every arm's taught facts (a cpt+lora arm's articles, say); this claim
    # is about the facts the LoRA run itself was taught (probe.json v3 says which; item i of every set is matched).
    taught = models["lora"].get("taught")
    keep = [index for index, was_taught in enumerate(taught) if was_taught] if taught is not None else None
    if keep is not None and not keep:
        return untested(claim, where, "the LoRA run was taught none of the facts the probe asked about")
    correct = {
        method: {
            name: [values[i] for i in keep] if keep is not None else values
            for name in ("facts", "control", "training_wording")
            for values in [entry["sets"][name]["correct"]]
        }
        for method, entry in models.items()
        if method in ("base", "lora", "full")
    }
    return check_knowledge(correct, float(cell.probe.get("chance", 0.25)), where)


def check_knowledge(correct: dict[str, dict[str, list[bool]]], chance: float, cell: dict[str, Any]) -> Finding:
    """The knowledge rule on per-question outcomes: ``correct[model][set]`` for base, lora (and full).

    The effect is LoRA − base on the taught facts (Newcombe interval, exact McNemar test). The
    positive control, fixed in advance: full fine-tuning − base on the same questions when the run
    has a full model, else LoRA − base on the training wording (memorised sentences show first).
    """
    claim, unit = CLAIMS["knowledge"], CLAIMS["knowledge"].unit
    base, lora = correct["base"], correct["lora"]
    effect = paired_proportions(base["facts"], lora["facts"])
    if "full" in correct:
        control_name = "full − base accuracy on the taught facts"
        control_estimate = paired_proportions(base["facts"], correct["full"]["facts"])
    else:
        control_name = "LoRA − base accuracy on the taught facts in the training wording"
        control_estimate = paired_proportions(base["training_wording"], lora["training_wording"])
    control = difference_verdict(control_estimate, +1, effect=control_name, fmt=formatter(unit))
    decision = no_effect_verdict(effect, KNOWLEDGE_MARGIN, control, effect=claim.effect, fmt=formatter(unit))
    names = {"facts": "taught facts", "control": "untaught control", "training_wording": "training wording"}
    context = tuple(
        Measurement(f"accuracy, {model}, {names[name]}", unit, proportion(sum(values), len(values), chance))
        for model, sets in correct.items()
        for name, values in sets.items()
    )
    base_control = proportion(sum(base["control"]), len(base["control"]), chance)
    notes = [f"chance is {chance:.0%} (four options)"]
    if base_control.ci95:
        low, high = base_control.ci95
        where = "inside" if low <= chance <= high else "outside"
        notes.append(
            f"the base model on the untaught control: {base_control.value:.1%} [{low:.1%}, {high:.1%}], chance "
            f"{where} its 95% interval" + ("" if where == "inside" else ": the probe is biased, read with care")
        )
    return Finding(claim, decision, cell, context, tuple(notes), control_name=control_name)


def forgetting_finding(cell: Cell, settings: Settings) -> Finding:
    """Full fine-tuning raises held-out loss more than LoRA: paired over the same passages."""
    claim, where = CLAIMS["forgetting"], cell_of(cell, methods=["base", "lora", "full"])
    models, why = _probe_models(cell)
    if why:
        return untested(claim, where, why)
    if not {"base", "lora", "full"} <= set(models):
        return untested(claim, where, "needs the probe of the base model, a LoRA run and a full run")

    def losses(method: str) -> SumsCounts:
        heldout = models[method]["heldout"]
        return np.asarray(heldout["nll_sums"], dtype=float), np.asarray(heldout["tokens"], dtype=float)

    retention = {
        method: Estimate.from_json(models[method]["forgetting"]["retained_share"])
        for method in ("lora", "full")
        if "retained_share" in models[method].get("forgetting", {})
    }
    return check_forgetting(losses("base"), losses("lora"), losses("full"), settings, where, retention)


def check_forgetting(
    base: SumsCounts,
    lora: SumsCounts,
    full: SumsCounts,
    settings: Settings,
    cell: dict[str, Any],
    retention: dict[str, Estimate] | None = None,
) -> Finding:
    """The forgetting rule on per-passage ``(summed loss, tokens)`` of the three models (same passages).

    (full − base) − (LoRA − base) is full − LoRA, so the effect pairs the two tuned models directly.
    """
    claim = CLAIMS["forgetting"]
    options = settings.resampling
    effect = paired_ratio_difference(lora, full, **options)
    context = [
        Measurement(
            f"held-out loss change, {name} − base",
            claim.unit,
            enough_items(paired_ratio_difference(base, tuned, **options)),
        )
        for name, tuned in (("LoRA", lora), ("full", full))
    ]
    context += [
        Measurement(f"general knowledge the base knew, still answered by {method}", "proportion", estimate)
        for method, estimate in (retention or {}).items()
    ]
    return difference(claim, effect, cell, measurements=tuple(context))


# --- the judge ----------------------------------------------------------------------------------------------


def judge_finding(cell: Cell, settings: Settings) -> Finding:
    """LoRA's answers score higher than full's: five-aspect averages, paired over prompts."""
    claim, where = CLAIMS["judge"], cell_of(cell, methods=["lora", "full"])
    summary = cell.judge
    if not summary or not cell.judge_dir:
        return untested(claim, where, "no judge in this cell")
    if summary.get("mode") != "score":
        return untested(claim, where, f"the judge ran in {summary.get('mode')} mode; this finding reads score mode")
    aspects = tuple(summary.get("aspects", ()))
    items = judge_items(cell.judge_dir, aspects)
    lora, full = items.scores.get("lora", {}), items.scores.get("full", {})
    shared = [item for item in lora if item in full]
    notes = []
    judged = items.judged.get("lora", 0) + items.judged.get("full", 0)
    dropped = judged - 2 * len(shared)
    if dropped:
        notes.append(
            f"{dropped} of {judged} judgements left out: an aspect failed to parse, or the other model's answer to "
            "the same prompt did (an item counts only with all five aspects, for both models)"
        )
    if summary.get("complete") is False:
        failed = (summary.get("calls") or {}).get("request_errors")
        notes.append(
            "the judge run is incomplete" + (f" ({failed} requests failed)" if failed else "")
            + ": rerun the experiment (or `tunescope judge`) to finish it before reading this finding"
        )  # fmt: skip
    stand_in = "stand-in judge: a small local model whose scores do not measure answer quality, so no verdict"
    if not shared:
        why = "the judge gave no complete five-aspect scores to both runs on the same prompts"
        return untested(claim, where, f"{stand_in} (and {why})" if summary.get("stand_in_judge") else why)
    found = check_judge(
        np.array([lora[item] for item in shared]), np.array([full[item] for item in shared]), settings, where,
        tuple(notes),
    )  # fmt: skip
    if summary.get("stand_in_judge"):
        decision = found.decision
        no_verdict = Decision("not tested", decision.rule, stand_in, decision.estimate)
        return Finding(claim, no_verdict, where, found.measurements, found.notes)
    return found


def check_judge(
    lora: np.ndarray, full: np.ndarray, settings: Settings, cell: dict[str, Any], notes: tuple[str, ...] = ()
) -> Finding:
    """The judge rule on per-prompt five-aspect averages of both models (same prompts, same order)."""
    claim = CLAIMS["judge"]
    options = settings.resampling
    effect = paired_mean_difference(full, lora, **options)
    context = tuple(
        Measurement(f"five-aspect average, {name}", claim.unit, enough_items(bootstrap_mean(values, **options)))
        for name, values in (("LoRA", lora), ("full", full))
    )
    return difference(claim, effect, cell, measurements=context, notes=notes)


# --- borrowing ---------------------------------------------------------------------------------------------


def style_finding(cell: Cell, settings: Settings) -> Finding:
    """LoRA's shifted tokens are style words more than full's: style share, paired over prompts."""
    claim, where = CLAIMS["style"], cell_of(cell, methods=["lora", "full"])
    runs: list[MethodRun | None] = [cell.runs.get("lora"), cell.runs.get("full")]
    if not all(run and run.borrow for run in runs):
        return untested(claim, where, "needs the borrowing analysis of both LoRA and full fine-tuning")
    counts = [borrow_counts(run.borrow.get("style_tokens"), "shifted_or_marginal") for run in runs]  # type: ignore[union-attr]
    if counts[0] is None or counts[1] is None:
        return untested(claim, where, "borrow.json has no per-response counts (an older run): rerun the borrowing")
    lora, full = matched(counts[0], counts[1])
    return check_style((lora["style"], lora["tokens"]), (full["style"], full["tokens"]), settings, where)


check_style = _lora_against_full(
    "style", "(style tokens, tokens)", "style share of shifted/marginal tokens", subtracted="full"
)


def borrowed_finding(cell: Cell, settings: Settings) -> Finding:
    """Words at shifted positions are found in the training set more than words at unshifted ones (full's run)."""
    claim, where = CLAIMS["borrowed"], cell_of(cell, methods=["full"])
    run = cell.runs.get("full")
    if not run or not run.borrow:
        return untested(claim, where, "needs the borrowing analysis of the full fine-tuning run (the paper's §6)")
    words = run.borrow.get("borrowed_words")
    shifted, unshifted = (borrow_counts(words, group) for group in ("shifted_or_marginal", "unshifted"))
    if shifted is None or unshifted is None:
        return untested(claim, where, "borrow.json has no per-response counts (an older run): rerun the borrowing")
    if not shifted["words"].sum() or not unshifted["words"].sum():
        return untested(claim, where, "no words at shifted/marginal or at unshifted positions to compare")
    return check_borrowed(
        (shifted["found"], shifted["words"]), (unshifted["found"], unshifted["words"]), settings, where
    )


def check_borrowed(
    shifted: SumsCounts,
    unshifted: SumsCounts,
    settings: Settings,
    cell: dict[str, Any],
) -> Finding:
    """The borrowed rule on per-response ``(found words, words)`` at shifted/marginal and at unshifted positions."""
    shown = (
        ("found in the training set, words at shifted/marginal positions", shifted),
        ("found in the training set, words at unshifted positions", unshifted),
    )
    return _ratio_difference("borrowed", unshifted, shifted, shown, settings, cell)


# --- data size: one series per model and dataset ------------------------------------------------------------


def size_findings(cells: list[Cell], settings: Settings) -> list[Finding]:
    """The size claim for every (model, dataset) series with at least two training-set sizes."""
    series: dict[tuple[str, str], list[Cell]] = {}
    for cell in cells:
        series.setdefault((cell.model, cell.dataset), []).append(cell)
    found = []
    for (model, dataset), members in series.items():
        where: dict[str, Any] = {"model": model, "dataset": dataset, "methods": ["lora", "full"]}
        groups, sizes = [], []
        for cell in sorted(members, key=lambda c: c.subset_size or 0):
            pair = _shift_pair(cell) if cell.subset_size else None
            if pair:
                lora, full, _ = pair
                groups.append(
                    PairedSlopeGroup(math.log10(cell.subset_size), (lora["kl"], lora["tokens"]),  # type: ignore[arg-type]
                                     (full["kl"], full["tokens"]))
                )  # fmt: skip
                sizes.append(cell.subset_size)
        shown = ", ".join(map(str, sizes)) or "–"
        where |= {"subset_sizes": sizes, "name": f"{display_name(model)} · {dataset} · n={shown}"}
        if len(set(sizes)) < 2:
            found.append(untested(CLAIMS["size"], where, "needs shift results of LoRA and full at two or more sizes"))
        else:
            found.append(check_size(groups, settings, where))
    return found or [untested(CLAIMS["size"], {}, "needs shift results of LoRA and full at two or more sizes")]


def check_size(groups: list[PairedSlopeGroup], settings: Settings, cell: dict[str, Any]) -> Finding:
    """The size rule: LoRA flat (equivalence, full's growth its positive control) and full growing.

    ``groups``: one per training-set size, ``x`` = log10(size), LoRA first and full second, per prompt
    ``(summed KL, tokens)``. Both rates are divided by full fine-tuning's mean KL over the sizes, so
    the margin means the same on every model (docs/method.md#findings).
    """
    claim, unit = CLAIMS["size"], CLAIMS["size"].unit
    options = settings.resampling
    fmt = formatter(unit)
    smallest = min(len(group.first[0]) for group in groups)
    full_rate = enough_items(relative_slope(groups, of="second", **options), smallest)
    lora_rate = enough_items(relative_slope(groups, of="first", **options), smallest)
    grows_claim, flat_claim = SIZE_PARTS["grows"], SIZE_PARTS["flat"]
    grows = difference_verdict(full_rate, +1, effect=grows_claim.effect, fmt=fmt)
    flat = no_effect_verdict(lora_rate, SIZE_MARGIN, grows, effect=flat_claim.effect, fmt=fmt)
    parts = (
        Finding(flat_claim, flat, cell, control_name=grows_claim.effect),
        Finding(grows_claim, grows, cell),
    )
    verdicts = {flat.verdict, grows.verdict}
    if verdicts == {"reproduced"}:
        verdict, reason = "reproduced", "both parts are reproduced"
    elif "not reproduced" in verdicts:
        verdict = "not reproduced"
        reason = "; ".join(
            f"{p.claim.claim}: not reproduced ({p.decision.reason})" for p in parts if p.verdict == verdict
        )
    else:
        verdict = "inconclusive"
        reason = "; ".join(
            f"{p.claim.claim}: {p.verdict} ({p.decision.reason})" for p in parts if p.verdict != "reproduced"
        )
    decision = Decision(verdict, claim.rule(), reason, lora_rate, SIZE_MARGIN, positive_control=grows)
    return Finding(claim, decision, cell, parts=parts, control_name=grows_claim.effect)


# --- arms compared: NEFTune, LoRA's rank and learning rate, continued pre-training -----------------------


def arms_of_kind(cell: Cell, kind: str) -> list[MethodRun]:
    """The cell's arms of one kind (lora, full, nft, cpt+lora, ...), the one named after the kind first."""
    runs = [run for run in cell.runs.values() if run.arm.get("kind", run.method) == kind]
    return sorted(runs, key=lambda run: run.method != kind)


def _first_of_kind(cell: Cell, kind: str) -> MethodRun | None:
    runs = arms_of_kind(cell, kind)
    return runs[0] if runs else None


def _setting(run: MethodRun, key: str) -> Any:
    """A training setting the arm ran with (from its run directory), falling back to the arm's own settings."""
    return (run.config or {}).get(key, run.arm.get("settings", {}).get(key))


def _matched_sums(runs: list[MethodRun]) -> tuple[list[PerItem], list[str]] | None:
    """Per-prompt shift sums of several arms on the prompts all of them answered; None when one has no shift."""
    sums = [response_sums(run.shift_dir) if run.shift_dir else None for run in runs]
    if any(item is None for item in sums):
        return None
    shared = set.intersection(*(set(item.ids) for item in sums))  # type: ignore[union-attr]
    order = [item for item in sums[0].ids if item in shared]  # type: ignore[union-attr]
    notes = []
    if left_out := sum(len(item) for item in sums) - len(runs) * len(order):  # type: ignore[arg-type]
        notes.append(f"{left_out} responses to prompts not every compared arm answered are left out")
    return [item.take(order) for item in sums], notes  # type: ignore[union-attr]


def _relative_kl_difference(*arrays: np.ndarray, axis: int = -1) -> np.ndarray:
    """(pooled KL of the first − of the second) / pooled KL of the third, from (KL sums, token counts) pairs."""
    first, second, reference = (arrays[i].sum(axis) / arrays[i + 1].sum(axis) for i in (0, 2, 4))
    return (first - second) / reference


def relative_kl_difference(
    first: SumsCounts,
    second: SumsCounts,
    reference: SumsCounts,
    settings: Settings,
) -> Estimate:
    """(KL(first) − KL(second)) / KL(reference), pooled per model, paired bootstrap over the same prompts."""
    label = "difference of pooled KL over a reference model's pooled KL, paired bootstrap over prompts"
    return enough_items(
        paired_bootstrap(
            (*first, *second, *reference), _relative_kl_difference, label=label, **settings.resampling,
        )
    )  # fmt: skip


def _full_above_lora_control(
    lora: SumsCounts, full: SumsCounts, settings: Settings, lora_name: str
) -> tuple[Decision, str]:
    """The positive control of the arm equivalences: full fine-tuning shifts more than LoRA, as a share of full's KL."""
    name = f"(KL(full) − KL({lora_name})) / KL(full)"
    estimate = relative_kl_difference(full, lora, full, settings)
    unit = "share of full fine-tuning's mean KL"
    return difference_verdict(estimate, +1, effect=name, fmt=formatter(unit)), name


def _relative_kl_equivalence(
    key: str,
    effect_of: tuple[SumsCounts, SumsCounts, SumsCounts],
    control_lora: tuple[str, SumsCounts],
    shown: tuple[tuple[str, SumsCounts], ...],
    settings: Settings,
    cell: dict[str, Any],
    notes: Notes,
) -> Finding:
    """No-effect claim ``key`` on :func:`relative_kl_difference` of ``effect_of``, full above a LoRA the control.

    ``control_lora`` is the named LoRA arm full fine-tuning must shift more than; ``shown`` names the pooled KL of
    each arm printed beside the effect.
    """
    claim = CLAIMS[key]
    effect = relative_kl_difference(*effect_of, settings)
    full = effect_of[2]
    control, control_name = _full_above_lora_control(control_lora[1], full, settings, control_lora[0])
    decision = no_effect_verdict(effect, claim.margin, control, effect=claim.effect, fmt=formatter(claim.unit))  # type: ignore[arg-type]
    context = tuple(_pooled(f"KL, {name}", *sums, "nats per token", settings) for name, sums in shown)
    return Finding(claim, decision, cell, context, notes, control_name=control_name)


def nft_shift_finding(cell: Cell, settings: Settings) -> Finding:
    """NEFTune leaves full fine-tuning's shift as it is: NFT − full KL within the margin, full − LoRA the control."""
    claim = CLAIMS["nft_shift"]
    nft, full, lora = (_first_of_kind(cell, kind) for kind in ("nft", "full", "lora"))
    where = cell_of(cell, methods=[run.method for run in (nft, full, lora) if run])
    if nft is None or full is None:
        return untested(claim, where, "needs an nft arm and a full arm")
    if lora is None:
        return untested(claim, where, "needs a lora arm too (full fine-tuning's shift above LoRA's is the control)")
    if not (sums := _matched_sums([nft, full, lora])):
        return untested(claim, where, "needs shift results (tokens.parquet) of the nft, full and lora arms")
    (nft_sums, full_sums, lora_sums), notes = sums
    return check_nft_shift(
        *((item["kl"], item["tokens"]) for item in (nft_sums, full_sums, lora_sums)), settings, where, tuple(notes)
    )


def check_nft_shift(
    nft: SumsCounts,
    full: SumsCounts,
    lora: SumsCounts,
    settings: Settings,
    cell: dict[str, Any],
    notes: tuple[str, ...] = (),
) -> Finding:
    """The nft_shift rule on per-prompt ``(summed KL, tokens)`` of the three arms (same prompts, same order)."""
    shown = (("NFT", nft), ("full", full), ("LoRA", lora))
    return _relative_kl_equivalence("nft_shift", (nft, full, full), ("LoRA", lora), shown, settings, cell, notes)


def nft_judge_finding(cell: Cell, settings: Settings) -> Finding:
    """NEFTune's answers score no better than full's: NFT − full within the margin, LoRA above full the control."""
    claim = CLAIMS["nft_judge"]
    nft, full, lora = (_first_of_kind(cell, kind) for kind in ("nft", "full", "lora"))
    where = cell_of(cell, methods=[run.method for run in (nft, full, lora) if run])
    if nft is None or full is None or lora is None:
        return untested(claim, where, "needs an nft, a full and a lora arm (LoRA above full is the control)")
    summary = cell.judge
    if not summary or not cell.judge_dir:
        return untested(claim, where, "no judge in this cell")
    if summary.get("mode") != "score":
        return untested(claim, where, f"the judge ran in {summary.get('mode')} mode; this finding reads score mode")
    if summary.get("stand_in_judge"):
        return untested(claim, where, "stand-in judge: a small local model whose scores do not measure answer quality")
    items = judge_items(cell.judge_dir, tuple(summary.get("aspects", ())))
    scores = [items.scores.get(run.method, {}) for run in (nft, full, lora)]
    shared = [item for item in scores[0] if item in scores[1] and item in scores[2]]
    if not shared:
        return untested(claim, where, "the judge gave no complete five-aspect scores to all three arms on one prompt")
    arrays = [np.array([own[item] for item in shared]) for own in scores]
    notes = () if summary.get("complete") is not False else ("the judge run is incomplete: rerun to finish it",)
    return check_nft_judge(*arrays, settings, where, notes)


def check_nft_judge(
    nft: np.ndarray, full: np.ndarray, lora: np.ndarray, settings: Settings, cell: dict[str, Any],
    notes: tuple[str, ...] = (),
) -> Finding:  # fmt: skip
    """The nft_judge rule on per-prompt five-aspect averages of the three arms (same prompts, same order)."""
    claim = CLAIMS["nft_judge"]
    options = settings.resampling
    effect = enough_items(paired_mean_difference(full, nft, **options))
    control_name = "five-aspect average, LoRA − full"
    control_estimate = enough_items(paired_mean_difference(full, lora, **options))
    control = difference_verdict(control_estimate, +1, effect=control_name, fmt=formatter(claim.unit))
    decision = no_effect_verdict(effect, claim.margin, control, effect=claim.effect, fmt=formatter(claim.unit))  # type: ignore[arg-type]
    context = tuple(
        Measurement(f"five-aspect average, {name}", claim.unit, enough_items(bootstrap_mean(values, **options)))
        for name, values in (("NFT", nft), ("full", full), ("LoRA", lora))
    )
    return Finding(claim, decision, cell, context, notes, control_name=control_name)


def rank_sweep(cell: Cell) -> list[MethodRun]:
    """The LoRA arms that differ only in rank, smallest rank first: the largest such group of the cell."""
    groups: dict[tuple[Any, ...], dict[int, MethodRun]] = {}
    for run in arms_of_kind(cell, "lora"):
        rank = _setting(run, "lora_r")
        if rank is None or not run.config:
            continue
        rest = tuple(
            sorted((k, str(v)) for k, v in run.config.items() if k not in ("lora_r", "lora_alpha", "out", "seed"))
        )
        groups.setdefault(rest, {}).setdefault(int(rank), run)
    largest = max(groups.values(), key=len, default={})
    return [largest[rank] for rank in sorted(largest)] if len(largest) >= 2 else []


def rank_finding(cell: Cell, settings: Settings) -> Finding:
    """LoRA's rank makes no substantial change: largest − smallest rank's KL inside the margin, full above LoRA."""
    claim = CLAIMS["lora_rank"]
    ranks, full = rank_sweep(cell), _first_of_kind(cell, "full")
    where = cell_of(cell, methods=[run.method for run in [*ranks, *([full] if full else [])]])
    if not ranks:
        return untested(claim, where, "needs two or more lora arms that differ only in rank, e.g. lora_r: [2, 32]")
    if full is None:
        return untested(claim, where, "needs a full arm (the margin is a share of its KL, and it is the control)")
    if not (sums := _matched_sums([ranks[0], ranks[-1], full])):
        return untested(claim, where, "needs shift results (tokens.parquet) of the rank arms and the full arm")
    (smallest, largest, full_sums), notes = sums
    ranks_shown = (int(_setting(ranks[0], "lora_r")), int(_setting(ranks[-1], "lora_r")))
    return check_rank(
        (smallest["kl"], smallest["tokens"]), (largest["kl"], largest["tokens"]),
        (full_sums["kl"], full_sums["tokens"]), ranks_shown, settings, where, tuple(notes),
    )  # fmt: skip


def check_rank(
    smallest: SumsCounts,
    largest: SumsCounts,
    full: SumsCounts,
    ranks: tuple[int, int],
    settings: Settings,
    cell: dict[str, Any],
    notes: tuple[str, ...] = (),
) -> Finding:
    """The lora_rank rule on per-prompt ``(summed KL, tokens)`` of the smallest and largest rank and of full."""
    shown = ((f"LoRA r={ranks[0]}", smallest), (f"LoRA r={ranks[1]}", largest), ("full", full))
    control_lora = (f"LoRA r={ranks[1]}", largest)
    return _relative_kl_equivalence("lora_rank", (largest, smallest, full), control_lora, shown, settings, cell, notes)


def learning_rate_pair(cell: Cell) -> tuple[MethodRun, MethodRun, MethodRun] | str:
    """LoRA at its own rate, LoRA at full fine-tuning's rate (same rank) and the full arm; or why there are none."""
    full = _first_of_kind(cell, "full")
    if full is None or learning_rate(full) is None:
        return "needs a trained full arm (its learning rate is the one LoRA is compared at)"
    full_rate = learning_rate(full)
    loras = [run for run in arms_of_kind(cell, "lora") if learning_rate(run) is not None]
    at_full = [run for run in loras if math.isclose(learning_rate(run), full_rate, rel_tol=1e-9)]  # type: ignore[arg-type]
    if not at_full:
        example = f"{{arm: lora, learning_rate: {full_rate:g}}}"
        return f"needs a lora arm at full fine-tuning's rate ({full_rate:g}), e.g. {example}"
    for matched_run in at_full:
        rank = _setting(matched_run, "lora_r")
        own = [run for run in loras if learning_rate(run) > full_rate and _setting(run, "lora_r") == rank]  # type: ignore[operator]
        if own:
            return own[0], matched_run, full
    return f"needs a lora arm above full fine-tuning's rate ({full_rate:g}) with the same rank as the one at it"


def learning_rate_finding(cell: Cell, settings: Settings) -> Finding:
    """LoRA at full's (lower) rate shifts less than at its own: KL difference, paired over prompts."""
    claim = CLAIMS["lora_lr"]
    pair = learning_rate_pair(cell)
    if isinstance(pair, str):
        return untested(claim, cell_of(cell), pair)
    own, at_full, full = pair
    where = cell_of(cell, methods=[own.method, at_full.method, full.method])
    if not (sums := _matched_sums([own, at_full, full])):
        return untested(claim, where, "needs shift results (tokens.parquet) of both lora arms and the full arm")
    (own_sums, at_full_sums, full_sums), notes = sums
    rates = (learning_rate(own), learning_rate(at_full))
    return check_learning_rate(
        *((item["kl"], item["tokens"]) for item in (own_sums, at_full_sums, full_sums)), rates, settings, where,
        tuple(notes),
    )  # fmt: skip


def check_learning_rate(
    own: SumsCounts,
    at_full: SumsCounts,
    full: SumsCounts,
    rates: tuple[float | None, float | None],
    settings: Settings,
    cell: dict[str, Any],
    notes: tuple[str, ...] = (),
) -> Finding:
    """The lora_lr rule on per-prompt ``(summed KL, tokens)`` of LoRA at its own rate, at full's, and of full.

    Beside it, full − LoRA at the same rate: the method gap without the confound.
    """
    claim = CLAIMS["lora_lr"]
    options = settings.resampling
    effect = paired_ratio_difference(at_full, own, **options)
    own_name, at_full_name = (f"LoRA at {rate:g}" if rate else "LoRA" for rate in rates)
    context = (
        _pooled(f"KL, {own_name} (its own rate)", *own, claim.unit, settings),
        _pooled(f"KL, {at_full_name} (full fine-tuning's rate)", *at_full, claim.unit, settings),
        _pooled("KL, full", *full, claim.unit, settings),
        Measurement(
            f"KL(full) − KL({at_full_name}): the method gap at one learning rate", claim.unit,
            enough_items(paired_ratio_difference(at_full, full, **options)),
        ),
    )  # fmt: skip
    return difference(claim, effect, cell, measurements=context, notes=notes)


def cpt_knowledge_finding(cell: Cell, settings: Settings) -> Finding:
    """cpt+lora answers the facts it was taught more often than lora: paired over the same questions."""
    del settings  # score intervals: no resampling
    claim = CLAIMS["cpt_knowledge"]
    cpt, lora = _first_of_kind(cell, "cpt+lora"), _first_of_kind(cell, "lora")
    where = cell_of(cell, methods=["base", *(run.method for run in (lora, cpt) if run)])
    if cpt is None or lora is None:
        return untested(claim, where, "needs a cpt+lora arm and a lora arm")
    models, why = _probe_models(cell)
    if why:
        return untested(claim, where, why)
    if not {"base", lora.method, cpt.method} <= set(models):
        return untested(claim, where, "needs the probe of the base model, the lora arm and the cpt+lora arm")
    if not cell.probe.get("facts_taught"):
        return untested(claim, where, f"the probed runs were not taught fictional facts: {cell.probe.get('note')}")
    if any(models[run.method].get("taught") is None for run in (cpt, lora)):
        return untested(claim, where, "probe.json does not say which questions each run was taught (before schema 3)")
    taught_cpt, taught_lora = (models[run.method]["taught"] for run in (cpt, lora))
    correct = {name: models[name]["sets"]["facts"]["correct"] for name in ("base", lora.method, cpt.method)}
    keep = [index for index, taught in enumerate(taught_cpt) if taught]
    if not keep:
        return untested(claim, where, "cpt+lora was taught none of the facts the probe asked about")
    return check_cpt_knowledge(
        [correct["base"][i] for i in keep], [correct[lora.method][i] for i in keep],
        [correct[cpt.method][i] for i in keep], [bool(taught_lora[i]) for i in keep],
        float(cell.probe.get("chance", 0.25)), where,
    )  # fmt: skip


def check_cpt_knowledge(
    base: list[bool], lora: list[bool], cpt: list[bool], lora_taught: list[bool], chance: float, cell: dict[str, Any]
) -> Finding:
    """The cpt_knowledge rule on per-question outcomes of the questions cpt+lora was taught (same questions).

    ``lora_taught[i]``: whether the lora arm's own data taught question ``i``'s fact too. The effect is
    cpt+lora − lora (Newcombe interval, exact McNemar test) over all of them; the split by what lora was
    taught is shown beside it.
    """
    claim = CLAIMS["cpt_knowledge"]
    effect = paired_proportions(lora, cpt)
    decision = difference_verdict(effect, +1, effect=claim.effect, fmt=formatter(claim.unit))
    context = [
        Measurement(f"accuracy, {name}, facts cpt+lora was taught", claim.unit, proportion(sum(v), len(v), chance))
        for name, v in (("base", base), ("lora", lora), ("cpt+lora", cpt))
    ]
    subsets = {
        "facts only continued pre-training taught": [i for i, taught in enumerate(lora_taught) if not taught],
        "facts lora was taught too": [i for i, taught in enumerate(lora_taught) if taught],
    }
    if all(subsets.values()):  # a split of one part would repeat the effect
        for subset, rows in subsets.items():
            estimate = paired_proportions([lora[i] for i in rows], [cpt[i] for i in rows])
            context.append(Measurement(f"cpt+lora − lora, {subset}", claim.unit, estimate))
    notes = (
        f"chance is {chance:.0%} (four options); lora's own data taught {sum(lora_taught)} of these {len(lora)} facts",
    )
    return Finding(claim, decision, cell, tuple(context), notes)


# --- all of them --------------------------------------------------------------------------------------------


CELL_CHECKS: tuple[Callable[[Cell, Settings], Finding], ...] = (
    kl_finding, unshifted_finding, initiation_finding, knowledge_finding, forgetting_finding, judge_finding,
    style_finding, borrowed_finding,
)  # fmt: skip
"""The findings measured within one cell (one model, dataset and training-set size)."""
ARM_CHECKS: tuple[Callable[[Cell, Settings], Finding], ...] = (
    nft_shift_finding, nft_judge_finding, rank_finding, learning_rate_finding, cpt_knowledge_finding,
)  # fmt: skip
"""The findings that compare arms within one cell; checked when the grid has arms beyond plain lora and full."""
ARM_CLAIMS = ("nft_shift", "nft_judge", "lora_rank", "lora_lr", "cpt_knowledge")
"""The claims :data:`ARM_CHECKS` decide (keys of :data:`CLAIMS`)."""


def has_arms(cells: list[Cell]) -> bool:
    """Whether the grid has arms beyond plain lora and full (nft, cpt+, sweeps, named arms): then they are compared."""
    return any(name not in ("lora", "full") for cell in cells for name in cell.runs)


SERIES_CHECKS: tuple[Callable[[list[Cell], Settings], list[Finding]], ...] = (size_findings,)
"""The findings measured across the cells of a series (one model and dataset, several sizes)."""


@dataclass
class Findings:
    """Every finding of a report."""

    headline: list[Finding]
    """One per claim, in :data:`CLAIMS` order: from the first cell (or series) that can test it, in grid order but
    the largest training set of a model and dataset first (the arm comparisons only when the grid has arms beyond
    plain lora and full)."""
    by_cell: list[list[Finding]]
    """Per cell (in grid order), its own findings."""
    series: list[Finding] = field(default_factory=list)
    """Every series finding (the size claim for each model and dataset)."""


def all_findings(cells: list[Cell], settings: Settings | None = None) -> Findings:
    """Check every claim in every cell; the headline takes, per claim, the first cell that can test it.

    Cells are taken in grid order, except that within one model and dataset the largest training set
    comes first: the paper's comparisons are of models tuned on all their data, and a rule fixed before
    the data are seen keeps the headline from being picked by its verdict.
    """
    settings = settings or Settings()
    # A grid of plain lora and full arms has nothing to compare them with: its report lists the paper's claims only.
    checks = CELL_CHECKS + ARM_CHECKS if has_arms(cells) else CELL_CHECKS
    by_cell = [[check(cell, settings) for check in checks] for cell in cells]
    series = [finding for check in SERIES_CHECKS for finding in check(cells, settings)]
    series_order = list(dict.fromkeys((cell.model, cell.dataset) for cell in cells))
    largest_first = sorted(
        range(len(cells)),
        key=lambda i: (series_order.index((cells[i].model, cells[i].dataset)), -(cells[i].subset_size or math.inf)),
    )
    everything = [finding for i in largest_first for finding in by_cell[i]] + series
    headline = []
    for key in CLAIMS if checks != CELL_CHECKS else [key for key in CLAIMS if key not in ARM_CLAIMS]:
        candidates = [finding for finding in everything if finding.claim.key == key]
        if not candidates:
            candidates = [untested(CLAIMS[key], {}, "no cell in this experiment")]
        headline.append(next((f for f in candidates if f.verdict != "not tested"), candidates[0]))
    return Findings(headline, by_cell, series)
