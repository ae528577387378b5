"""`tunescope probe`: knowledge uptake and forgetting of tuned models against their base.

For each model (the base first, then every tuned one):

* knowledge uptake: multiple-choice (and, optionally, free-answer) accuracy on paraphrased
  questions about the fictional facts a tuned run was trained on, beside the chance rate;
* forgetting: held-out loss on public-domain text, and retention of the general-knowledge
  questions the base model answers correctly.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pydantic import Field

from tunescope.config import Config
from tunescope.data import load_examples
from tunescope.errors import UserError
from tunescope.facts import ProbeQuestion, probe_questions, shipped_facts
from tunescope.files import write_json, write_jsonl
from tunescope.generate import GenerateConfig, generate
from tunescope.models import load_model, load_tokenizer
from tunescope.probe.forgetting import compare_forgetting, general_questions, heldout_passages, score_forgetting
from tunescope.probe.knowledge import exact_matches, score_knowledge
from tunescope.rundir import saved_config
from tunescope.train import TrainConfig

PROBE_FILE = "probe.json"
"""The probes' results, in the output directory."""


class ProbeConfig(Config):
    """Probe settings."""

    base: str = "smollm2"
    """The model before tuning: an asset name, model directory, .gguf file or Hugging Face id."""
    tuned: list[str]
    """Tuned models to compare with the base: tunescope run directories, adapters or model directories."""
    out: str
    """Directory for probe.json (and the free answers, when asked for)."""
    max_questions: int = Field(default=96, gt=0)
    """Fictional-fact questions to ask at most: a seeded sample of the facts the tuned runs were taught."""
    passages: int = Field(default=24, gt=0)
    """Held-out passages for the forgetting loss."""
    exact_match: bool = False
    """Also let each model answer the fact questions freely (greedy); slower than multiple choice."""
    max_new_tokens: int = Field(default=32, gt=0)
    """Longest free answer, in tokens."""
    seed: int = 0
    """Seed of the question and passage samples."""
    trust_remote_code: bool = False
    """Run model code shipped with a checkpoint. Off unless you trust its source."""


def taught_fact_ids(run_dir: Path) -> set[str] | None:
    """Ids (``entity/attribute``) of the fictional facts a tunescope run was trained on.

    None when ``run_dir`` is not a run trained on fictional facts (its facts are all untaught).
    """
    settings = saved_config(run_dir) if run_dir.is_dir() else None
    if settings is None:
        return None
    examples = load_examples(TrainConfig.model_validate(settings)).examples
    attributes: dict[str, set[str]] = {}
    for fact in shipped_facts():
        attributes.setdefault(fact.entity, set()).add(fact.attribute)
    taught: set[str] = set()
    for example in examples:
        parts = example.id.split("/")
        if len(parts) != 3 or parts[0] != "facts":
            continue
        _, entity, attribute = parts
        # A description teaches every attribute of its entity; a question teaches one.
        taught |= (
            {f"{entity}/{a}" for a in attributes.get(entity, ())} if attribute == "about" else {f"{entity}/{attribute}"}
        )
    return taught or None


def choose_questions(tuned_runs: list[Path], limit: int, seed: int) -> tuple[list[ProbeQuestion], bool]:
    """Questions about facts the tuned runs were taught (all facts if none was); whether any was."""
    questions = probe_questions(shipped_facts())
    taught: set[str] = set()
    for run in tuned_runs:
        taught |= taught_fact_ids(run) or set()
    if taught:
        questions = [question for question in questions if question.id in taught]
    random.Random(seed).shuffle(questions)
    return questions[:limit], bool(taught)


def _free_answers(model: str, questions: list[ProbeQuestion], work: Path, config: ProbeConfig) -> list[str]:
    prompts = work / "fact_questions.jsonl"
    if not prompts.exists():
        write_jsonl(prompts, [{"id": q.id, "messages": [{"role": "user", "content": q.question}]} for q in questions])
    answers_file = work / f"answers-{len(list(work.glob('answers-*.jsonl')))}.jsonl"
    generate(
        GenerateConfig(
            model=model, data=str(prompts), out=str(answers_file), max_new_tokens=config.max_new_tokens,
            trust_remote_code=config.trust_remote_code,
        )
    )  # fmt: skip
    answers = {row["id"]: row["output"] for row in map(json.loads, answers_file.read_text().splitlines())}
    return [answers[question.id] for question in questions]


def run_probes(config: ProbeConfig) -> dict[str, Any]:
    """Probe the base and every tuned model; write and return ``probe.json``.

    Raises:
        UserError: when a model cannot be loaded or the output directory cannot be written.
    """
    out = Path(config.out).expanduser()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"--out {out}: cannot write there ({err.strerror})") from None
    tuned_runs = [Path(spec).expanduser() for spec in config.tuned]
    questions, taught = choose_questions(tuned_runs, config.max_questions, config.seed)
    passages = heldout_passages(config.passages, config.seed)
    general = general_questions()

    models: dict[str, Any] = {}
    base_forgetting = None
    for spec in [config.base, *config.tuned]:
        tokenizer = load_tokenizer(spec, trust_remote_code=config.trust_remote_code)
        model = load_model(spec, trust_remote_code=config.trust_remote_code).eval()
        answers = _free_answers(spec, questions, out, config) if config.exact_match else None
        knowledge = score_knowledge(model, tokenizer, questions)
        forgetting = score_forgetting(model, tokenizer, passages, general)
        entry: dict[str, Any] = {
            "knowledge": asdict(knowledge),
            "heldout_loss": forgetting.heldout_loss,
            "general_accuracy": forgetting.general.multiple_choice,
        }
        if answers is not None:
            entry["knowledge"]["exact_match"] = sum(exact_matches(answers, [q.answer for q in questions])) / len(
                questions
            )
        if base_forgetting is None:
            base_forgetting = forgetting
        else:
            entry["forgetting"] = compare_forgetting(base_forgetting, forgetting)
        models[spec] = entry
        del model

    report = {
        "base": config.base,
        "tuned": config.tuned,
        "facts_taught": taught,
        "n_fact_questions": len(questions),
        "fact_question_ids": [question.id for question in questions],
        "chance": 1 / len(questions[0].options) if questions else None,
        "n_heldout_passages": len(passages),
        "n_general_questions": len(general),
        "models": models,
        "note": (
            "Fictional facts: before tuning every model should sit at the chance rate. "
            + ("Questions cover only facts the tuned runs were trained on." if taught else
               "No tuned run was trained on the fictional facts, so chance accuracy is expected throughout.")
        ),
    }  # fmt: skip
    write_json(out / PROBE_FILE, report)
    return report
