"""Run an experiment grid: train -> generate -> shift -> borrow -> judge -> probes, for every cell.

A cell is one (model, dataset, subset size); in it each method is trained, answers the evaluation
prompts, and is compared with the base model, which answers the same prompts once per cell. The
manifest ``experiment.json`` lists every stage with its directory and summary, and is rewritten
after each stage, so a report can be drawn from an unfinished experiment; ``timings.json`` says
where the time went, per stage and per kind of stage.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tunescope.borrow import BorrowConfig, borrow
from tunescope.data import DataSettings, load_examples
from tunescope.display import display_name
from tunescope.errors import UserError
from tunescope.experiment.config import DatasetSpec, ExperimentConfig
from tunescope.experiment.stages import Stage, StageRunner
from tunescope.experiment.timings import write_timings
from tunescope.files import write_json, write_jsonl
from tunescope.generate import GenerateConfig, generate
from tunescope.judge import JudgeConfig, judge
from tunescope.probe.pipeline import ProbeConfig, run_probes
from tunescope.shift import ShiftConfig, compute_shift
from tunescope.train import TrainConfig, train

MANIFEST = "experiment.json"


def _data_stage(spec: DatasetSpec) -> Stage:
    """Write the dataset's examples (mixed and subset as specified) into one JSONL file."""

    def run(directory: Path) -> dict[str, Any]:
        rows = []
        for source in spec.sources:
            loaded = load_examples(DataSettings(data=source.data, format=source.format, subset_size=source.subset_size))
            rows += [{"id": example.id, "messages": example.messages} for example in loaded.examples]
        write_jsonl(directory / "train.jsonl", rows)
        return {"examples": len(rows), "path": str(directory / "train.jsonl")}

    return Stage("data", f"data {spec.name}", spec.model_dump(mode="json"), run)


def _train_stage(config: ExperimentConfig, model: str, data: Stage, size: int | None, method: str, runner: StageRunner):
    settings = {**config.train, "model": model, "subset_size": size, "method": method}

    def run(directory: Path) -> dict[str, Any]:
        train_config = TrainConfig.model_validate(
            {**settings, "data": str(runner.directory(data) / "train.jsonl"), "out": str(directory)}
        )
        # An interrupted run left its settings behind: continue it from its last checkpoint.
        resume = (directory / "config.yaml").is_file()
        result = train(train_config, resume=resume)
        return {"run": str(directory), "final_loss": result.summary["final_loss"], "steps": result.summary["steps"]}

    label = f"train {method} {display_name(model)} {data.label.removeprefix('data ')} n={size or 'all'}"
    return Stage("train", label, settings, run, [data])


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
        return {"responses": str(responses)}

    who = model_stage.label.removeprefix("train ") if model_stage else f"base {display_name(model)}"
    return Stage("generate", f"generate {who}", settings, run, [model_stage] if model_stage else [])


def _shift_stage(config: ExperimentConfig, model: str, tuned: Stage, responses: Stage, runner: StageRunner) -> Stage:
    def run(directory: Path) -> dict[str, Any]:
        shift_config = ShiftConfig.model_validate(
            {
                **config.shift,
                "base": model,
                "tuned": str(runner.directory(tuned)),
                "responses": str(runner.directory(responses) / "responses.jsonl"),
                "out": str(directory / "shift"),
            }
        )
        result = compute_shift(shift_config, overwrite=True)
        summary = result.summary
        return {"shift": str(directory / "shift"), "kl_mean": summary["kl_mean"], "shifted": summary["shifted"]}

    label = f"shift {tuned.label.removeprefix('train ')}"
    return Stage("shift", label, {"base": model, **config.shift}, run, [tuned, responses])


def _judge_stage(config: ExperimentConfig, generations: dict[str, Stage], runner: StageRunner, cell: str) -> Stage:
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
        return {"judge": str(directory / "judge"), "stand_in": result.summary.get("stand_in_judge")}

    return Stage("judge", f"judge {cell}", dict(config.judge or {}), run, list(generations.values()))


def _probe_stage(config: ExperimentConfig, model: str, tuned: dict[str, Stage], runner: StageRunner, cell: str):
    settings = {"base": model, **config.probes.model_dump(mode="json")}

    def run(directory: Path) -> dict[str, Any]:
        probe_config = ProbeConfig(
            base=model, tuned=[str(runner.directory(stage)) for stage in tuned.values()], out=str(directory / "probe"),
            max_questions=config.probes.max_questions, passages=config.probes.passages,
        )  # fmt: skip
        report = run_probes(probe_config)
        return {"probe": str(directory / "probe"), "facts_taught": report["facts_taught"]}

    return Stage("probe", f"probe {cell}", settings, run, list(tuned.values()))


def _borrow_stage(tuned: Stage, shift: Stage, base_generation: Stage, runner: StageRunner) -> Stage:
    def run(directory: Path) -> dict[str, Any]:
        result = borrow(
            BorrowConfig(
                shift=str(runner.directory(shift) / "shift"),
                train=str(runner.directory(tuned)),  # the run's own data settings: the subset it trained on
                base_responses=str(runner.directory(base_generation) / "responses.jsonl"),
                generate_base=False,  # the grid's base generation stage already answered
                out=str(directory / "borrow"),
            )
        )
        style_share = result.borrow["style_tokens"]["headline"]["style_share"]
        return {"borrow": str(directory / "borrow"), "style_share": style_share}

    return Stage("borrow", f"borrow {tuned.label.removeprefix('train ')}", {}, run, [tuned, shift, base_generation])


def plan(config: ExperimentConfig, runner: StageRunner) -> list[dict[str, Any]]:
    """The grid's cells, each with its stages in the order they run."""
    cells = []
    for spec in config.dataset_specs():
        data = _data_stage(spec)
        for model in config.models:
            base_generation = _generate_stage(config, None, model, runner)
            for size in config.subset_sizes:
                name = f"{display_name(model)} {spec.name} n={size or 'all'}"
                trained = {m: _train_stage(config, model, data, size, m, runner) for m in config.methods}
                generations = {m: _generate_stage(config, stage, model, runner) for m, stage in trained.items()}
                shifts = {m: _shift_stage(config, model, trained[m], generations[m], runner) for m in trained}
                stages: dict[str, Any] = {"data": data, "base_generate": base_generation}
                for method in trained:
                    stages[f"{method}/train"] = trained[method]
                    stages[f"{method}/generate"] = generations[method]
                    stages[f"{method}/shift"] = shifts[method]
                    if config.borrow:
                        borrow = _borrow_stage(trained[method], shifts[method], base_generation, runner)
                        stages[f"{method}/borrow"] = borrow
                if config.judge is not None:
                    stages["judge"] = _judge_stage(config, {"base": base_generation, **generations}, runner, name)
                if config.probes.enabled:
                    stages["probe"] = _probe_stage(config, model, trained, runner, name)
                cells.append({"model": model, "dataset": spec.name, "subset_size": size, "stages": stages})
    return cells


def run_experiment(config: ExperimentConfig, out: str | Path) -> Path:
    """Run every stage of the grid into ``out`` (skipping finished ones) and return the manifest path.

    Raises:
        UserError: when ``out`` cannot be written, or a stage rejects its input.
    """
    root = Path(out).expanduser()
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
    return manifest


def _manifest(config: ExperimentConfig, cells: list[dict[str, Any]], summaries: dict[str, dict[str, Any]]):
    return {
        "config": config.model_dump(mode="json"),
        "complete": all(stage.slug in summaries for cell in cells for stage in cell["stages"].values()),
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
