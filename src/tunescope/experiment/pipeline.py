"""Run an experiment grid: train -> generate -> shift -> borrow -> judge -> probes, for every cell.

A cell is one (model, dataset, subset size); in it each arm is trained, answers the evaluation
prompts, and is compared with the base model, which answers the same prompts once per cell. Arms
that start from continued pre-training (cpt+lora, cpt+full) train on top of one ``cpt`` stage per
model, shared by every cell. The manifest ``experiment.json`` lists every arm (its method, settings
and parent) and every stage with its directory and summary, and is rewritten after each stage, so a
report can be drawn from an unfinished experiment. Every path the manifest and the stages' outputs
record is relative to the file that records it (stage summaries: to the experiment directory), so the
experiment can be moved or copied (:mod:`tunescope.paths`); ``timings.json`` says where the time went,
per stage and per kind of stage.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tunescope.borrow import BorrowConfig, borrow
from tunescope.data import DataSettings, load_examples
from tunescope.data.dataset import check_local_source
from tunescope.display import display_name
from tunescope.errors import IncompleteRun, UserError
from tunescope.experiment.config import Arm, DatasetSpec, ExperimentConfig
from tunescope.experiment.stages import Stage, StageRunner
from tunescope.experiment.timings import write_timings
from tunescope.files import write_json, write_jsonl
from tunescope.generate import GenerateConfig, generate
from tunescope.judge import JudgeConfig, incomplete_message, judge
from tunescope.locks import is_lock_file, output_lock
from tunescope.probe.pipeline import ProbeConfig, run_probes
from tunescope.shift import ShiftConfig, compute_shift
from tunescope.train import TrainConfig, train

MANIFEST = "experiment.json"


def _data_stage(spec: DatasetSpec, runner: StageRunner) -> Stage:
    """Write the dataset's examples (mixed and subset as specified) into one JSONL file."""

    def run(directory: Path) -> dict[str, Any]:
        rows = []
        for source in spec.sources:
            loaded = load_examples(DataSettings(data=source.data, format=source.format, subset_size=source.subset_size))
            rows += [{"id": example.id, "messages": example.messages} for example in loaded.examples]
        write_jsonl(directory / "train.jsonl", rows)
        return {"examples": len(rows), "path": runner.recorded(directory / "train.jsonl")}

    return Stage("data", f"data {spec.name}", spec.model_dump(mode="json"), run)


def _trained(runner: StageRunner, directory: Path, summary: dict[str, Any]) -> dict[str, Any]:
    """A training stage's summary: the run, relative to the experiment, and how it ended."""
    return {"run": runner.recorded(directory), "final_loss": summary["final_loss"], "steps": summary["steps"]}


def _cpt_stage(config: ExperimentConfig, model: str, runner: StageRunner) -> Stage:
    """Continued pre-training of ``model`` on the grid's text (the parent of the cpt+ arms)."""
    cpt = config.cpt
    settings = {
        **config.train, **cpt.train, "model": model, "data": cpt.data, "format": "text", "method": cpt.method,
        "subset_size": cpt.subset_size,
    }  # fmt: skip

    def run(directory: Path) -> dict[str, Any]:
        train_config = TrainConfig.model_validate({**settings, "out": str(directory)})
        result = train(train_config, resume=(directory / "config.yaml").is_file())
        return _trained(runner, directory, result.summary)

    return Stage("train", f"cpt {cpt.method} {display_name(model)} {cpt.data}", settings, run)


def _train_stage(
    config: ExperimentConfig, model: str, data: Stage, size: int | None, arm: Arm, parent: Stage | None,
    runner: StageRunner,
) -> Stage:  # fmt: skip
    # Plain lora and full arms add nothing, so their settings (and stage keys) are those of a grid without arms.
    settings = {**config.train, **arm.settings, "model": model, "subset_size": size, "method": arm.method}

    def run(directory: Path) -> dict[str, Any]:
        start = str(runner.directory(parent)) if parent else model
        train_config = TrainConfig.model_validate(
            {**settings, "model": start, "data": str(runner.directory(data) / "train.jsonl"), "out": str(directory)}
        )
        # An interrupted run left its settings behind: continue it from its last checkpoint.
        resume = (directory / "config.yaml").is_file()
        result = train(train_config, resume=resume)
        return _trained(runner, directory, result.summary)

    label = f"train {arm.name} {display_name(model)} {data.label.removeprefix('data ')} n={size or 'all'}"
    return Stage("train", label, settings, run, [data, *([parent] if parent else [])])


def _generate_stage(config: ExperimentConfig, model_stage: Stage | None, model: str, runner: StageRunner) -> Stage:
    settings = {"model": None if model_stage else model, **config.eval.model_dump(mode="json")}

    def run(directory: Path) -> dict[str, Any]:
        source = str(runner.directory(model_stage)) if model_stage else model
        responses = directory / "responses.jsonl"
        generate(
            GenerateConfig(
                model=source, data=config.eval.prompts, split=config.eval.split, subset_size=config.eval.subset_size,
                max_new_tokens=config.eval.max_new_tokens, out=str(responses),
            )
        )  # fmt: skip
        return {"responses": runner.recorded(responses)}

    who = model_stage.label.removeprefix("train ") if model_stage else f"base {display_name(model)}"
    return Stage("generate", f"generate {who}", settings, run, [model_stage] if model_stage else [])


def _shift_stage(
    config: ExperimentConfig, model: str, tuned: Stage, responses: Stage, base_generation: Stage, runner: StageRunner
) -> Stage:
    def run(directory: Path) -> dict[str, Any]:
        shift_config = ShiftConfig.model_validate(
            {
                **config.shift,
                "base": model,
                "tuned": str(runner.directory(tuned)),
                "responses": str(runner.directory(responses) / "responses.jsonl"),
                # Shown beside each tuned answer in the viewer. Not an input of the stage's key: the base
                # generation is fixed by the model and the eval settings, which the key holds already.
                "base_responses": str(runner.directory(base_generation) / "responses.jsonl"),
                "out": str(directory / "shift"),
            }
        )
        result = compute_shift(shift_config, overwrite=True)
        summary = result.summary
        return {"shift": runner.recorded(directory / "shift"), **{key: summary[key] for key in ("kl_mean", "shifted")}}

    label = f"shift {tuned.label.removeprefix('train ')}"
    return Stage("shift", label, {"base": model, **config.shift}, run, [tuned, responses])


def _naming(arms: list[Arm]) -> dict[str, Any]:
    """The arm names, as settings of the stages that label their outputs with them (judge, probe).

    Empty for a grid of plain lora and full arms, whose names are their methods, so that such a grid keeps
    the stage keys it had before arms existed and its finished stages are found again.
    """
    plain = all(arm.name == arm.kind and arm.kind in ("lora", "full") for arm in arms)
    return {} if plain else {"arms": [arm.name for arm in arms]}


def _judge_stage(
    config: ExperimentConfig, generations: dict[str, Stage], runner: StageRunner, cell: str, naming: dict[str, Any]
) -> Stage:
    def run(directory: Path) -> dict[str, Any]:
        judge_config = JudgeConfig.model_validate(
            {
                **(config.judge or {}),
                "responses": [str(runner.directory(stage) / "responses.jsonl") for stage in generations.values()],
                "labels": list(generations),
                "out": str(directory / "judge"),
            }
        )
        result = judge(judge_config)
        if (incomplete := incomplete_message(result.summary, result.out)) is not None:
            raise IncompleteRun(incomplete)  # not marked done: the next run asks only what is missing
        return {"judge": runner.recorded(directory / "judge"), "stand_in": result.summary.get("stand_in_judge")}

    return Stage("judge", f"judge {cell}", {**(config.judge or {}), **naming}, run, list(generations.values()))


def _probe_stage(
    config: ExperimentConfig, model: str, tuned: dict[str, Stage], runner: StageRunner, cell: str,
    naming: dict[str, Any],
) -> Stage:  # fmt: skip
    settings = {"base": model, **config.probes.model_dump(mode="json", exclude={"subset_sizes"}), **naming}

    def run(directory: Path) -> dict[str, Any]:
        probe_config = ProbeConfig(
            base=model, tuned=[str(runner.directory(stage)) for stage in tuned.values()], out=str(directory / "probe"),
            max_questions=config.probes.max_questions, passages=config.probes.passages,
            passage_tokens=config.probes.passage_tokens, labels=list(tuned),
        )  # fmt: skip
        report = run_probes(probe_config)
        return {"probe": runner.recorded(directory / "probe"), "facts_taught": report["facts_taught"]}

    return Stage("probe", f"probe {cell}", settings, run, list(tuned.values()))


def _borrow_stage(tuned: Stage, shift: Stage, base_generation: Stage, runner: StageRunner) -> Stage:
    def run(directory: Path) -> dict[str, Any]:
        result = borrow(
            BorrowConfig(
                shift=str(runner.directory(shift) / "shift"),
                data=str(runner.directory(tuned)),  # the run's own data settings: the subset it trained on
                base_responses=str(runner.directory(base_generation) / "responses.jsonl"),
                generate_base=False,  # the grid's base generation stage already answered
                out=str(directory / "borrow"),
            )
        )
        style_share = result.borrow["style_tokens"]["headline"]["style_share"]
        return {"borrow": runner.recorded(directory / "borrow"), "style_share": style_share}

    return Stage("borrow", f"borrow {tuned.label.removeprefix('train ')}", {}, run, [tuned, shift, base_generation])


def plan(config: ExperimentConfig, runner: StageRunner) -> list[dict[str, Any]]:
    """The grid's cells, each with its stages in the order they run."""
    arms = config.arms()
    naming = _naming(arms)
    cells = []
    for spec in config.dataset_specs():
        data = _data_stage(spec, runner)
        for model in config.models:
            base_generation = _generate_stage(config, None, model, runner)
            cpt = _cpt_stage(config, model, runner) if any(arm.continued_pretraining for arm in arms) else None
            for size in config.subset_sizes:
                name = f"{display_name(model)} {spec.name} n={size or 'all'}"
                trained = {
                    arm.name: _train_stage(
                        config, model, data, size, arm, cpt if arm.continued_pretraining else None, runner
                    )
                    for arm in arms
                }
                generations = {a: _generate_stage(config, stage, model, runner) for a, stage in trained.items()}
                shifts = {
                    a: _shift_stage(config, model, trained[a], generations[a], base_generation, runner) for a in trained
                }
                stages: dict[str, Any] = {"data": data, "base_generate": base_generation}
                if cpt is not None:
                    stages["cpt"] = cpt
                for arm in trained:
                    stages[f"{arm}/train"] = trained[arm]
                    stages[f"{arm}/generate"] = generations[arm]
                    stages[f"{arm}/shift"] = shifts[arm]
                    if config.borrow:
                        stages[f"{arm}/borrow"] = _borrow_stage(trained[arm], shifts[arm], base_generation, runner)
                if config.judge is not None:
                    stages["judge"] = _judge_stage(
                        config, {"base": base_generation, **generations}, runner, name, naming
                    )
                if config.probes.enabled and (config.probes.subset_sizes is None or size in config.probes.subset_sizes):
                    stages["probe"] = _probe_stage(config, model, trained, runner, name, naming)
                cells.append({"model": model, "dataset": spec.name, "subset_size": size, "stages": stages})
    return cells


def run_experiment(config: ExperimentConfig, out: str | Path) -> Path:
    """Run every stage of the grid into ``out`` (skipping finished ones) and return the manifest path.

    Raises:
        UserError: when ``out`` cannot be written, or a stage rejects its input.
        OutputBusy: when another process is running an experiment into ``out``.
        IncompleteRun: after every other stage ran, when a stage is left incomplete (a judge
            endpoint that did not answer every request); the manifest says which, and rerunning
            completes it.
    """
    with output_lock(out):
        return _run_experiment(config, Path(out).expanduser())


def check_inputs(config: ExperimentConfig, root: Path) -> None:
    """Refuse, before any stage runs, a grid whose local data files are missing or an ``out`` that holds something else.

    Raises:
        UserError: naming the missing file, or the occupied directory.
    """
    occupied = root.is_dir() and any(not is_lock_file(path) for path in root.iterdir())
    if occupied and not (root / "experiment_config.json").is_file():
        raise UserError(f"--out {root}: directory is not empty and is not a tunescope experiment; choose another --out")
    for spec in config.dataset_specs():
        for source in spec.sources:
            check_local_source(source.data, f"dataset {spec.name}:")
    check_local_source(config.eval.prompts, "eval.prompts:")


def _run_experiment(config: ExperimentConfig, root: Path) -> Path:
    check_inputs(config, root)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"--out {root}: cannot write there ({err.strerror})") from None
    runner = StageRunner(root, total=0)
    cells = plan(config, runner)
    unique = {stage.slug: stage for cell in cells for stage in cell["stages"].values()}
    runner.total = len(unique)
    write_json(root / "experiment_config.json", config.model_dump(mode="json"))
    summaries: dict[str, dict[str, Any]] = {}
    manifest = root / MANIFEST
    for cell in cells:
        for stage in cell["stages"].values():
            if stage.slug not in summaries:
                summaries[stage.slug] = runner.execute(stage)
                write_json(manifest, _manifest(config, cells, summaries))
    write_timings(root, [{**summary, "ran_now": slug in runner.ran} for slug, summary in summaries.items()])
    if incomplete := [summary["label"] for summary in summaries.values() if "incomplete" in summary]:
        raise IncompleteRun(
            f"{len(incomplete)} stage(s) left incomplete ({', '.join(incomplete)}); the others are done and {manifest} "
            "lists them: rerun the same command to complete the rest"
        )
    return manifest


def _manifest(config: ExperimentConfig, cells: list[dict[str, Any]], summaries: dict[str, dict[str, Any]]):
    return {
        "config": config.model_dump(mode="json"),
        # Each arm's stages are "<name>/train", "<name>/generate", ... in every cell; "parent": "cpt" names the
        # cell's continued pre-training stage an arm starts from.
        "arms": [arm.describe() for arm in config.arms()],
        "complete": all(
            "incomplete" not in summaries.get(stage.slug, {"incomplete": "not run"})
            for cell in cells
            for stage in cell["stages"].values()
        ),
        "cells": [
            {
                "model": cell["model"],
                "dataset": cell["dataset"],
                "subset_size": cell["subset_size"],
                "stages": {name: summaries.get(stage.slug) for name, stage in cell["stages"].items()},
            }
            for cell in cells
        ],
    }
