"""Experiment arms: named methods with their own settings, sweeps, and continued pre-training as a parent stage."""

import json
from pathlib import Path

import pytest

from tunescope.cli import main
from tunescope.config import build_config
from tunescope.errors import UserError
from tunescope.experiment.config import ExperimentConfig, expand_arm
from tunescope.experiment.pipeline import plan
from tunescope.experiment.stages import STAGE_FORMAT, StageRunner

from conftest import PAIRS, build_tiny_llama, build_tiny_tokenizer, rows_in_format, write_jsonl

# Stage directories of a plain grid, as the experiment computed them before arms existed: an experiment
# started then must find its finished stages again.
PLAIN_GRID = {
    "models": ["smollm2", "gemma3-270m"], "methods": ["full", "lora"], "subset_sizes": [100, None],
    "train": {"epochs": 1}, "judge": {"backend": "hf"},
}  # fmt: skip
PLAIN_KEYS = {
    0: {
        "base_generate": "generate-be5b9a80a884",
        "data": "data-eee291531ecd",
        "full/borrow": "borrow-8d3b6f504cf5",
        "full/generate": "generate-8c26406f56ad",
        "full/shift": "shift-97e63d33ae1c",
        "full/train": "train-10c8f20476da",
        "judge": "judge-e0c69cb71244",
        "lora/borrow": "borrow-a2d84cbbb6b5",
        "lora/generate": "generate-6ffb84924c76",
        "lora/shift": "shift-96701eab19bf",
        "lora/train": "train-d6e37c9baaf6",
        "probe": "probe-cc2f4e250f5e",
    },
    3: {
        "base_generate": "generate-d1762bd6984d",
        "data": "data-eee291531ecd",
        "full/borrow": "borrow-81f9eff2e634",
        "full/generate": "generate-fed315a18767",
        "full/shift": "shift-c5f063d93868",
        "full/train": "train-d8e80ac1ab14",
        "judge": "judge-22471d5db1a2",
        "lora/borrow": "borrow-7a7954d78e23",
        "lora/generate": "generate-1e5152e0f90a",
        "lora/shift": "shift-2a9cb3b22592",
        "lora/train": "train-e9ca58308ac4",
        "probe": "probe-092f54ab4b14",
    },
}


def test_a_plain_grid_keeps_its_stage_keys_until_the_stage_format_changes(tmp_path):
    # Stage keys decide what a rerun reuses. They may change only with a deliberate STAGE_FORMAT bump
    # (then these pinned keys are updated with it), never as a side effect of the arms machinery.
    assert STAGE_FORMAT == 3
    cells = plan(ExperimentConfig.model_validate(PLAIN_GRID), StageRunner(tmp_path, 0))
    for index, expected in PLAIN_KEYS.items():
        assert {name: stage.slug for name, stage in cells[index]["stages"].items()} == expected


def test_arms_expand_with_readable_names_and_their_settings():
    config = ExperimentConfig.model_validate(
        {
            "methods": [
                "lora", "full", "nft", "cpt+lora", "cpt+full",
                {"arm": "lora", "lora_r": [2, 8, 32]},
                {"arm": "lora", "learning_rate": 5.0e-5},
                {"arm": "full", "name": "long", "learning_rate": [1.0e-5, 2.0e-4], "train": {"epochs": 5}},
                {"arm": "nft", "neftune_noise_alpha": 15},
            ],
            "train": {"lora_learning_rate": 2e-4, "full_learning_rate": 5e-5},
        }
    )  # fmt: skip
    arms = {arm.name: arm for arm in config.arms()}
    assert list(arms) == [
        "lora", "full", "nft", "cpt+lora", "cpt+full", "lora-r2", "lora-r8", "lora-r32", "lora-lr5e-5",
        "long-lr1e-5", "long-lr2e-4", "nft-noise15",
    ]  # fmt: skip
    assert arms["lora"].settings == {} and arms["full"].settings == {}
    assert arms["nft"].method == "full" and arms["nft"].settings == {"neftune_noise_alpha": 5.0}
    assert arms["nft-noise15"].settings == {"neftune_noise_alpha": 15}
    assert arms["cpt+lora"].continued_pretraining and arms["cpt+lora"].method == "lora"
    assert arms["lora-r32"].settings == {"lora_r": 32}
    # LoRA at full fine-tuning's rate: the arm's rate replaces the grid's LoRA rate.
    assert arms["lora-lr5e-5"].settings == {"lora_learning_rate": 5e-5}
    assert arms["long-lr2e-4"].settings == {"epochs": 5, "full_learning_rate": 2e-4}
    assert arms["cpt+full"].describe() == {
        "name": "cpt+full", "label": "cpt+full", "kind": "cpt+full", "method": "full", "settings": {}, "parent": "cpt"
    }  # fmt: skip
    # The report's labels: the kind and each value set for the arm, or the name given to it.
    labels = {name: arm.label for name, arm in arms.items()}
    assert labels["lora-r2"] == "lora r=2" and labels["lora-lr5e-5"] == "lora lr=5e-5"
    assert labels["long-lr1e-5"] == "long lr=1e-5" and labels["nft"] == "nft"
    assert [arm.name for arm in expand_arm("full")] == ["full"]


@pytest.mark.parametrize(
    ("methods", "message"),
    [
        (["lora", "lora"], "arm names must differ, but lora appears twice"),
        (["lora", {"arm": "lora", "name": "lora"}], "lora appears twice"),
        ([{"arm": "lora", "lora_r": [0, 4]}], "methods\\[0\\]: lora_r: must be positive"),
        ([{"arm": "lora", "train": {"lora_rank": 4}}], "arm lora: lora_rank: Extra inputs are not permitted"),
        (["sft"], "methods\\[0\\]: unknown arm 'sft'"),
        ([{"arm": "lora", "rank": 4}], "methods\\[0\\]: rank: Extra inputs"),
    ],
)
def test_bad_arms_are_one_line_errors(tmp_path, methods, message):
    path = tmp_path / "grid.yaml"
    path.write_text(json.dumps({"methods": methods}))
    with pytest.raises(UserError, match=message):
        build_config(ExperimentConfig, yaml_path=path)


def test_the_shipped_arms_grid_is_valid():
    config = build_config(ExperimentConfig, yaml_path=Path(__file__).parents[1] / "configs" / "experiment_arms.yaml")
    assert [arm.name for arm in config.arms()] == ["lora", "full", "nft", "cpt+lora"]
    assert config.cpt.data == "facts-text" and config.arms()[2].settings == {"neftune_noise_alpha": 5.0}


def test_bad_continued_pretraining_settings_are_caught_only_when_an_arm_uses_them(tmp_path):
    grid = {"methods": ["lora"], "cpt": {"train": {"epochs": -1}}}
    ExperimentConfig.model_validate(grid)
    with pytest.raises(ValueError, match="cpt: epochs"):
        ExperimentConfig.model_validate({**grid, "methods": ["cpt+lora"]})


def write_arms_experiment(root: Path) -> Path:
    tokenizer = build_tiny_tokenizer()
    build_tiny_llama(tokenizer).save_pretrained(root / "model")
    tokenizer.save_pretrained(root / "model")
    write_jsonl(root / "train.jsonl", rows_in_format("messages") * 2)
    (root / "notes.txt").write_text("\n\n".join(f"{q} {a} " * 3 for q, a in PAIRS))
    prompts = [{"id": f"p{i}", "messages": [{"role": "user", "content": q}]} for i, (q, _) in enumerate(PAIRS[:3])]
    write_jsonl(root / "prompts.jsonl", prompts)
    config = {
        "models": [str(root / "model")],
        "methods": ["lora", "cpt+lora", "cpt+full", {"arm": "lora", "lora_r": [2]}],
        # 12 encyclopedia articles: with the 40 facts rows, enough taught values of each attribute for questions.
        "cpt": {"data": "facts-text", "subset_size": 12, "method": "lora", "train": {"epochs": 2, "max_length": 32}},
        "datasets": [
            {"name": "mix", "sources": [{"data": str(root / "train.jsonl")}, {"data": "facts", "subset_size": 40}]}
        ],
        "train": {"epochs": 1, "effective_batch_size": 4, "micro_batch_size": 2, "max_length": 96,
                  "lora_learning_rate": 3e-2, "full_learning_rate": 1e-2, "save_steps": 50},
        "eval": {"prompts": str(root / "prompts.jsonl"), "max_new_tokens": 4},
        "probes": {"max_questions": 4, "passages": 2},
        "borrow": False,
    }  # fmt: skip
    path = root / "arms.yaml"
    path.write_text(json.dumps(config))
    return path


def test_an_experiment_runs_every_arm_with_every_stage_and_resumes(tmp_path, capsys):
    config = write_arms_experiment(tmp_path)
    out = tmp_path / "run"
    assert main(["experiment", "--config", str(config), "--out", str(out), "--no-report"]) == 0
    manifest = json.loads((out / "experiment.json").read_text())
    assert manifest["complete"] is True
    names = [arm["name"] for arm in manifest["arms"]]
    assert names == ["lora", "cpt+lora", "cpt+full", "lora-r2"]
    assert {arm["name"]: arm["parent"] for arm in manifest["arms"]}["cpt+full"] == "cpt"
    [cell] = manifest["cells"]
    stages = cell["stages"]
    for name in names:
        for stage in ("train", "generate", "shift"):
            assert stages[f"{name}/{stage}"] is not None, f"{name}/{stage}"
    assert stages["probe"] is not None and stages["cpt"] is not None

    def run_dir(name):
        return out / stages[f"{name}/train"]["dir"]

    cpt = out / stages["cpt"]["dir"]
    assert json.loads((cpt / "provenance.json").read_text())["data"]["format"] == "text"
    for name in ("cpt+lora", "cpt+full"):  # one continued pre-training run, parent of both
        lineage = json.loads((run_dir(name) / "provenance.json").read_text())["lineage"]
        # Recorded relative to the run (tunescope.paths), so the chain can be moved together.
        assert not Path(lineage[0]["run"]).is_absolute()
        assert [(run_dir(name) / entry["run"]).resolve() for entry in lineage] == [cpt.resolve()]
    adapter = json.loads((run_dir("lora-r2") / "adapter" / "adapter_config.json").read_text())
    assert adapter["r"] == 2

    probe = json.loads((out / stages["probe"]["dir"] / "probe" / "probe.json").read_text())
    assert set(probe["labels"].values()) == set(names)
    labels = {c["label"] for c in probe["comparisons"]}
    assert "cpt+lora − lora" in labels and "lora-r2 − cpt+full" in labels
    assert probe["facts_taught"] is True

    # A rerun finds every stage finished.
    capsys.readouterr()
    assert main(["experiment", "--config", str(config), "--out", str(out), "--no-report"]) == 0
    progress = capsys.readouterr().err
    assert "..." not in progress and progress.count("finished earlier, skipped") == len(stages)

    # The report: every arm in its tables, by its label, with the settings it trained with, and the findings that
    # compare arms decided where the grid has them, named as not tested (with why) where it does not.
    assert main(["report", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    [cell] = report["cells"]
    arms = {arm["arm"]: arm for arm in cell["arms"]}
    assert [arm["label"] for arm in cell["arms"]] == ["lora", "cpt+lora", "cpt+full", "lora r=2"]
    assert arms["lora-r2"]["lora_r"] == 2 and arms["lora"]["lora_r"] == 8 and arms["cpt+full"]["lora_r"] is None
    assert arms["cpt+lora"]["parent"] == "cpt" and arms["cpt+full"]["method"] == "full"
    assert arms["lora"]["learning_rate"] == 3e-2 and arms["cpt+full"]["learning_rate"] == 1e-2
    assert {row["arm"] for row in cell["shift"]} == {row["arm"] for row in cell["training"]} == set(names)
    assert cell["labels"]["lora-r2"] == "lora r=2" and set(cell["probe"]["models"]) == {"base", *names}
    findings = {finding["key"]: finding for finding in cell["findings"]}
    cpt = findings["cpt_knowledge"]
    assert cpt["verdict"] != "not tested" and cpt["cell"]["methods"] == ["base", "lora", "cpt+lora"]
    assert cpt["n"] == len(probe["sets"]["facts"]["ids"]) and cpt["effect"]["ci95"] is not None
    assert findings["lora_rank"]["verdict"] == "not tested" and "needs a full arm" in findings["lora_rank"]["reason"]
    assert findings["nft_shift"]["reason"] == "needs an nft arm and a full arm"
    html = (out / "report.html").read_text()
    assert "lora r=2" in html and "<h3>Arms</h3>" in html and "continued pre-training (cpt stage)" in html


def test_probes_run_only_at_the_training_set_sizes_named(tmp_path):
    grid = {**PLAIN_GRID, "models": ["smollm2"], "probes": {"subset_sizes": [None]}}
    cells = plan(ExperimentConfig.model_validate(grid), StageRunner(tmp_path, 0))
    assert [cell["subset_size"] for cell in cells if "probe" in cell["stages"]] == [None]
    everywhere = plan(ExperimentConfig.model_validate({**grid, "probes": {}}), StageRunner(tmp_path, 0))
    assert all("probe" in cell["stages"] for cell in everywhere)
    with pytest.raises(ValueError, match=r"probes.subset_sizes: \[50\] not among"):
        ExperimentConfig.model_validate({**grid, "probes": {"subset_sizes": [50]}})
