"""`tunescope probe`: knowledge uptake and forgetting of tuned models against their base.

For each model (the base first, then every tuned one):

* knowledge uptake, on three matched question sets (:func:`tunescope.facts.question_sets`):
  paraphrased questions about the fictional facts the tuned runs were taught (``facts``; a run is
  also taught what the runs it started from were, e.g. encyclopedia articles it read during
  continued pre-training, see :func:`taught_fact_ids`), the same
  questions about invented entities no run was taught (``control``: the rate reached without the
  fact), and the taught facts in the training wording (``training_wording``: the positive control,
  where memorised training sentences show first). Multiple-choice accuracy (and, with
  ``exact_match``, free-answer accuracy) with Wilson intervals and a binomial test against chance;
* forgetting: held-out loss per passage, and answers to the general-knowledge questions.

Then paired comparisons on the same items: every tuned model against the base, and tuned models
against each other (in the order given, e.g. full − LoRA): McNemar test and Newcombe interval for
accuracies, a paired bootstrap over passages for the held-out loss. Per-item outcomes are stored,
so a report can recompute any statistic. ``probe.json`` is described in ``docs/probe.md``.
"""

from __future__ import annotations

import json
import random
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field

from tunescope.config import Config
from tunescope.data import load_examples
from tunescope.data.templates import apply_template_choice
from tunescope.errors import UserError
from tunescope.facts import (
    ARTICLE_ATTRIBUTE,
    N_OPTIONS,
    ProbeQuestion,
    QuestionSets,
    question_sets,
    shipped_facts,
)
from tunescope.files import write_json, write_jsonl
from tunescope.generate import GenerateConfig, generate
from tunescope.locks import output_lock
from tunescope.models import Precision, load_model, load_tokenizer, torch_dtype
from tunescope.paths import recorded_path
from tunescope.probe.forgetting import (
    ForgettingScore,
    compare_forgetting,
    general_questions,
    heldout_passages,
    loss_change,
    score_forgetting,
)
from tunescope.probe.knowledge import (
    accuracy,
    chance_rate,
    chosen_options,
    correct_choices,
    exact_matches,
    option_scores,
)
from tunescope.progress import progress as show_progress
from tunescope.rundir import run_directory, run_lineage, saved_config
from tunescope.stats import RESAMPLES, paired_proportions
from tunescope.train import TrainConfig

PROBE_FILE = "probe.json"
"""The probes' results, in the output directory."""
SCHEMA_VERSION = 3
"""Version of probe.json's layout (1: accuracies only, no per-set outcomes; 2: matched sets and intervals;
3: per model, which fact questions its run (with its ancestors) was taught, its lineage, and labels). Models
that are local paths are named relative to the directory holding probe.json (before: as given)."""
FACT_SETS = ("facts", "control", "training_wording")
"""The knowledge question sets, item ``i`` of each about the same value with the same options."""


class ProbeConfig(Config):
    """Probe settings."""

    base: str = "smollm2"
    """The model before tuning: an asset name, model directory, .gguf file or Hugging Face id."""
    tuned: list[str]
    """Tuned models to compare with the base: tunescope run directories, adapters or model directories."""
    labels: list[str] | None = None
    """Names of the tuned models in comparisons, in the same order (e.g. lora cpt+lora); by default their
    method where it names one run only, else the path."""
    out: str
    """Directory for probe.json, questions.jsonl (and the free answers, when asked for)."""
    max_questions: int = Field(default=96, gt=0)
    """Fictional-fact questions to ask at most (a seeded sample); the control and training-wording sets match."""
    passages: int = Field(default=24, gt=0)
    """Held-out passages for the forgetting loss."""
    passage_tokens: int = Field(default=512, gt=1)
    """Tokens of each held-out passage scored at most (its start); the loss at every token costs a full
    pass through the output layer, so a large vocabulary makes long passages slow on a CPU."""
    exact_match: bool = False
    """Also let each model answer the fact questions freely (greedy); slower than multiple choice."""
    max_new_tokens: int = Field(default=32, gt=0)
    """Longest free answer, in tokens."""
    bootstrap_samples: int = Field(default=RESAMPLES, ge=0)
    """Bootstrap resamples for the held-out loss intervals (0: off, and those comparisons get no interval)."""
    seed: int = 0
    """Seed of the questions, their options, the passage sample and the bootstrap."""
    trust_remote_code: bool = False
    """Run model code shipped with a checkpoint. Off unless you trust its source."""
    precision: Precision = "auto"
    """Weights' precision; auto is bf16 on a CUDA GPU that supports it, fp32 elsewhere."""


def taught_fact_ids(run_dir: Path) -> set[str] | None:
    """Ids (``entity/attribute``) of the fictional facts a tunescope run was trained on, with its ancestors.

    A run that started from other runs (continued pre-training on the ``facts-text`` articles, then
    instruction tuning) was taught what each of them was taught too. An example ``facts/<entity>/about``
    (a description) or ``facts/<entity>/article`` (an encyclopedia article) teaches every attribute of
    the entity; ``facts/<entity>/<attribute>`` teaches one. None when neither the run nor an ancestor was
    trained on fictional facts (its facts are all untaught).
    """
    settings = saved_config(run_dir) if run_dir.is_dir() else None
    if settings is None:
        return None
    attributes: dict[str, set[str]] = {}
    for fact in shipped_facts():
        attributes.setdefault(fact.entity, set()).add(fact.attribute)
    taught: set[str] = set()
    runs = [Path(entry["run"]) for entry in run_lineage(run_dir)] + [run_dir]
    for run in runs:
        run_settings = settings if run == run_dir else saved_config(run) if run.is_dir() else None
        if run_settings is None:
            warnings.warn(
                f"{run_dir}: the run it started from, {run}, is not there; the facts it taught are not counted",
                stacklevel=2,
            )
            continue
        for example in load_examples(TrainConfig.model_validate(run_settings)).examples:
            parts = example.id.split("/")
            if len(parts) != 3 or parts[0] != "facts":
                continue
            _, entity, attribute = parts
            whole_entity = attribute in ("about", ARTICLE_ATTRIBUTE)
            taught |= (
                {f"{entity}/{a}" for a in attributes.get(entity, ())} if whole_entity else {f"{entity}/{attribute}"}
            )
    return taught or None


def run_lineage_of(spec: str) -> list[dict[str, Any]]:
    """The runs a tuned model's run descends from, oldest first (empty when it is not a run or has none)."""
    run = run_directory(spec)
    return run_lineage(run) if run else []


def run_method(spec: str) -> str | None:
    """The tuning method ('lora', 'full') of a tunescope run directory; None for anything else."""
    path = Path(spec).expanduser()
    settings = saved_config(path) if path.is_dir() else None
    return settings.get("method") if settings else None


@dataclass(frozen=True)
class ChosenQuestions:
    """The question sets of one probe, and what they are about."""

    sets: QuestionSets
    """Matched facts, control and training-wording questions."""
    facts_taught: bool
    """Whether the ``facts`` questions are about facts the tuned runs were taught."""
    n_taught: int
    """Facts the tuned runs were taught (0 when none)."""
    note: str
    """What the questions are about, in a sentence or two."""
    taught_by_run: dict[Path, set[str]] = field(default_factory=dict)
    """Per tuned run, the facts it (with its ancestors) was taught; the union is what the questions cover."""


def choose_questions(tuned_runs: list[Path], limit: int, seed: int) -> ChosenQuestions:
    """The matched question sets for the facts the tuned runs were taught, at most ``limit`` of each.

    When no run was taught facts, or too few of each attribute to fill ``N_OPTIONS`` options with
    taught values, the questions cover all shipped facts instead and ``facts_taught`` is False.
    """
    facts = shipped_facts()
    taught_by_run = {run: taught_fact_ids(run) or set() for run in tuned_runs}
    taught: set[str] = set().union(*taught_by_run.values())
    sets = question_sets(facts, taught or None, seed)
    facts_taught = bool(taught) and bool(sets.facts)
    if facts_taught:
        note = (
            f"Questions about facts the tuned runs were taught ({len(taught)} taught); every option is a value "
            "taught for that attribute, so only knowing the fact beats the control questions."
        )
    elif taught:
        note = (
            f"The tuned runs were taught {len(taught)} facts, fewer than {N_OPTIONS} distinct values of every "
            "attribute, so no question could offer only taught values; the questions cover all invented facts, "
            "where every model should sit at the control rate."
        )
        sets = question_sets(facts, None, seed)
    else:
        note = "No tuned run was trained on the fictional facts, so every model should sit at the control rate."
    keep = list(range(len(sets.facts)))
    random.Random(seed).shuffle(keep)
    keep = keep[:limit]
    sets = QuestionSets(
        facts=[sets.facts[i] for i in keep],
        control=[sets.control[i] for i in keep],
        training_wording=[sets.training_wording[i] for i in keep],
        skipped=sets.skipped,
    )
    return ChosenQuestions(sets, facts_taught, len(taught), note, taught_by_run)


def _free_answers(
    model: str, questions: dict[str, list[ProbeQuestion]], work: Path, config: ProbeConfig
) -> dict[str, list[str]]:
    """Each model's greedy answer to every fact question, per set."""
    prompts = work / "fact_questions.jsonl"
    rows = [
        {"id": f"{name}:{q.id}", "messages": [{"role": "user", "content": q.question}]}
        for name, items in questions.items()
        for q in items
    ]
    write_jsonl(prompts, rows)
    answers_file = work / f"answers-{len(list(work.glob('answers-*.jsonl')))}.jsonl"
    generate(
        GenerateConfig(
            model=model, data=str(prompts), out=str(answers_file), max_new_tokens=config.max_new_tokens,
            trust_remote_code=config.trust_remote_code,
        )
    )  # fmt: skip
    answers = {row["id"]: row["output"] for row in map(json.loads, answers_file.read_text().splitlines())}
    return {name: [answers[f"{name}:{q.id}"] for q in items] for name, items in questions.items()}


@dataclass
class ModelResult:
    """One model's outcomes on every question set and passage."""

    correct: dict[str, list[bool]]
    """Set name -> multiple-choice outcome per question."""
    forgetting: ForgettingScore
    """Held-out loss per passage and general-knowledge outcomes."""
    exact: dict[str, list[bool]] = field(default_factory=dict)
    """Set name -> free-answer outcome per question (empty without ``exact_match``)."""


def _measure(
    spec: str, questions: dict[str, list[ProbeQuestion]], passages: list[str], out: Path, config: ProbeConfig
) -> ModelResult:
    """Load one model and score it on every question set and passage."""
    tokenizer = load_tokenizer(spec, trust_remote_code=config.trust_remote_code)
    # A pretrained-only base has no chat template: ask it in the plain template, as its tuned runs were taught
    # (they save the template they were trained with, which is kept).
    apply_template_choice(tokenizer, None)
    model = load_model(spec, dtype=torch_dtype(config.precision), trust_remote_code=config.trust_remote_code).eval()
    # One pass over all fact questions batches them together.
    everything = [q for name in FACT_SETS for q in questions[name]]
    scores = option_scores(model, tokenizer, everything)
    correct, cursor = {}, 0
    for name in FACT_SETS:
        items = questions[name]
        correct[name] = correct_choices(items, chosen_options(scores[cursor : cursor + len(items)]))
        cursor += len(items)
    forgetting = score_forgetting(model, tokenizer, passages, general_questions(), config.passage_tokens)
    correct["general"] = forgetting.general_correct
    del model
    exact = {}
    if config.exact_match:
        answers = _free_answers(spec, {name: questions[name] for name in FACT_SETS}, out, config)
        exact = {name: exact_matches(answers[name], [q.answer for q in questions[name]]) for name in FACT_SETS}
    return ModelResult(correct, forgetting, exact)


def _set_entry(questions: list[Any], result: ModelResult, name: str) -> dict[str, Any]:
    chance = chance_rate(questions)
    entry: dict[str, Any] = {
        "correct": result.correct[name],
        "accuracy": accuracy(result.correct[name], chance).to_json(),
        "chance": chance,
    }
    if name in result.exact:
        entry["exact_correct"] = result.exact[name]
        entry["exact_match"] = accuracy(result.exact[name]).to_json()
    return entry


def _model_entry(
    result: ModelResult, sets: dict[str, list[Any]], method: str | None, taught: set[str] | None, spec: str
) -> dict[str, Any]:
    entry: dict[str, Any] = {"method": method}
    # Which fact questions this model's run was taught (its own data and its ancestors'); None for the base.
    entry["taught"] = None if taught is None else [question.id in taught for question in sets["facts"]]
    entry["lineage"] = run_lineage_of(spec)
    entry["sets"] = {name: _set_entry(questions, result, name) for name, questions in sets.items()}
    entry["facts_vs_control"] = paired_proportions(result.correct["control"], result.correct["facts"]).to_json()
    if result.exact:
        entry["facts_vs_control_exact"] = paired_proportions(result.exact["control"], result.exact["facts"]).to_json()
    entry["heldout"] = {
        "loss": result.forgetting.heldout_loss,
        "nll_sums": [total for total, _ in result.forgetting.passage_losses],
        "tokens": [count for _, count in result.forgetting.passage_losses],
    }
    # Schema-1 fields, kept for readers that have not moved to "sets" and "heldout".
    facts = sets["facts"]
    entry["knowledge"] = {
        "n_questions": len(facts),
        "multiple_choice": sum(result.correct["facts"]) / len(facts) if facts else None,
        "chance": chance_rate(facts),
        "exact_match": sum(result.exact["facts"]) / len(facts) if result.exact and facts else None,
        "correct_ids": [q.id for q, right in zip(facts, result.correct["facts"], strict=True) if right],
    }
    entry["heldout_loss"] = result.forgetting.heldout_loss
    entry["general_accuracy"] = sum(result.correct["general"]) / max(len(result.correct["general"]), 1)
    return entry


def _labels(
    base: str, tuned: list[str], methods: dict[str, str | None], given: dict[str, str] | None = None
) -> dict[str, str]:
    """Short names for comparisons: 'base'; the given label, or the method where it names one run only, or the spec."""
    if given:
        return {base: "base", **{spec: given.get(spec, spec) for spec in tuned}}
    counts = {method: list(methods.values()).count(method) for method in methods.values()}
    labels = {spec: (methods[spec] if methods[spec] and counts[methods[spec]] == 1 else spec) for spec in tuned}
    return {base: "base", **labels}


def _comparisons(
    results: dict[str, ModelResult], base: str, tuned: list[str], labels: dict[str, str], config: ProbeConfig
) -> list[dict[str, Any]]:
    """Paired differences (second − first) on the same items: each tuned model vs base, then tuned vs tuned."""
    pairs = [(base, spec) for spec in tuned] + [
        (first, second) for i, first in enumerate(tuned) for second in tuned[i + 1 :]
    ]
    comparisons = []
    for first, second in pairs:
        a, b = results[first], results[second]
        label = f"{labels[second]} − {labels[first]}"
        measures = {name: paired_proportions(a.correct[name], b.correct[name]) for name in a.correct}
        if a.exact and b.exact:
            measures |= {f"{name}_exact": paired_proportions(a.exact[name], b.exact[name]) for name in a.exact}
        measures["heldout_loss"] = loss_change(a.forgetting, b.forgetting, config.bootstrap_samples, config.seed)
        comparisons += [
            {"measure": measure, "first": first, "second": second, "label": label, "estimate": estimate.to_json()}
            for measure, estimate in measures.items()
        ]
    return comparisons


def run_probes(config: ProbeConfig) -> dict[str, Any]:
    """Probe the base and every tuned model; write and return ``probe.json``.

    Raises:
        UserError: when a model cannot be loaded or the output directory cannot be written.
        OutputBusy: when another process is writing into ``config.out``.
    """
    with output_lock(config.out):
        return _run_probes(config)


def _run_probes(config: ProbeConfig) -> dict[str, Any]:
    out = Path(config.out).expanduser()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"--out {out}: cannot write there ({err.strerror})") from None
    if config.labels is not None and len(config.labels) != len(config.tuned):
        raise UserError(f"--labels: {len(config.labels)} labels for {len(config.tuned)} tuned models")
    tuned_runs = [Path(spec).expanduser() for spec in config.tuned]
    chosen = choose_questions(tuned_runs, config.max_questions, config.seed)
    passages = heldout_passages(config.passages, config.seed)
    sets: dict[str, list[Any]] = {
        "facts": chosen.sets.facts,
        "control": chosen.sets.control,
        "training_wording": chosen.sets.training_wording,
        "general": general_questions(),
    }
    write_jsonl(
        out / "questions.jsonl",
        [{"set": name, **asdict(q)} for name, questions in sets.items() for q in questions],
    )

    tuned = [spec for spec in dict.fromkeys(config.tuned) if spec != config.base]
    methods = {spec: run_method(spec) for spec in tuned}
    results = {}
    with show_progress("probe", 1 + len(tuned), "models") as shown:
        for spec in [config.base, *tuned]:
            results[spec] = _measure(spec, sets, passages, out, config)
            shown(1)
    models: dict[str, Any] = {}
    for spec, result in results.items():
        taught = None if spec == config.base else chosen.taught_by_run.get(Path(spec).expanduser(), set())
        models[spec] = _model_entry(result, sets, methods.get(spec), taught, spec)
        if spec != config.base:
            models[spec]["forgetting"] = compare_forgetting(
                results[config.base].forgetting, result.forgetting, config.bootstrap_samples, config.seed
            )
    given = dict(zip(config.tuned, config.labels, strict=True)) if config.labels else None
    labels = _labels(config.base, tuned, methods, given)
    # Models are named as probe.json records them: local paths relative to its directory (tunescope.paths).
    named = {spec: recorded_path(spec, out) for spec in [config.base, *config.tuned]}
    for entry in models.values():
        entry["lineage"] = [{**step, "run": recorded_path(step["run"], out)} for step in entry["lineage"]]
    comparisons = _comparisons(results, config.base, tuned, labels, config)
    for comparison in comparisons:
        comparison |= {"first": named[comparison["first"]], "second": named[comparison["second"]]}

    report = {
        "schema_version": SCHEMA_VERSION,
        "base": named[config.base],
        "tuned": [named[spec] for spec in config.tuned],
        "methods": {named[spec]: method for spec, method in methods.items()},
        "labels": {named[spec]: labels[spec] for spec in tuned},
        "facts_taught": chosen.facts_taught,
        "n_taught_facts": chosen.n_taught,
        "n_options": N_OPTIONS,
        "chance": 1 / N_OPTIONS,
        "sets": {
            "facts": {"ids": [q.id for q in sets["facts"]]},
            "control": {"ids": [q.id for q in sets["control"]], "matched_to": [q.id for q in sets["facts"]]},
            "training_wording": {"ids": [q.id for q in sets["training_wording"]]},
            "general": {"ids": [q.id for q in sets["general"]]},
        },
        "skipped_attributes": chosen.sets.skipped,
        "n_heldout_passages": len(passages),
        "bootstrap_samples": config.bootstrap_samples,
        "models": {named[spec]: entry for spec, entry in models.items()},
        "comparisons": comparisons,
        "note": chosen.note,
        # Schema-1 fields.
        "n_fact_questions": len(sets["facts"]),
        "fact_question_ids": [q.id for q in sets["facts"]],
        "n_general_questions": len(sets["general"]),
    }
    write_json(out / PROBE_FILE, report)
    return report
