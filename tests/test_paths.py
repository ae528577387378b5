"""Recorded paths: relative to the file that records them, so a run or experiment can be moved."""

import json
import shutil
from pathlib import Path

import yaml

from tunescope.cli import main
from tunescope.paths import recorded_path, resolved_path
from tunescope.rundir import recorded_settings, saved_config

from conftest import rows_in_format, write_jsonl


def test_a_relative_path_is_recorded_relative_to_its_holder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    write_jsonl(tmp_path / "data" / "train.jsonl", [{"x": 1}])
    assert recorded_path("data/train.jsonl", "runs/lora") == "../../data/train.jsonl"
    assert resolved_path("../../data/train.jsonl", "runs/lora") == "data/train.jsonl"
    # Absolute paths, home paths and names that are not local paths are kept as given.
    absolute = str(tmp_path / "data" / "train.jsonl")
    for kept in (absolute, "~/data.jsonl", "smollm2", "HuggingFaceTB/SmolLM2-135M", "data/missing.jsonl"):
        assert recorded_path(kept, "runs/lora") == kept
    # Read from elsewhere, a recorded path that is not there is returned as recorded (the old layout).
    assert resolved_path("runs/old/train.jsonl", "runs/lora") == "runs/old/train.jsonl"


def test_settings_record_their_paths_and_out_as_the_directory_itself(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_jsonl(tmp_path / "train.jsonl", [{"x": 1}])
    settings = {"data": "train.jsonl", "model": "smollm2", "responses": ["train.jsonl"], "out": "runs/a", "lr": 1.0}
    recorded = recorded_settings(settings, Path("runs/a"))
    assert recorded == {**settings, "data": "../../train.jsonl", "responses": ["../../train.jsonl"], "out": "."}


def test_a_moved_run_reads_the_same_and_resumes_from_anywhere(tiny_model_dir, tmp_path, monkeypatch):
    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    write_jsonl(project / "data" / "train.jsonl", rows_in_format("alpaca"))
    monkeypatch.chdir(project)
    argv = ["train", "--model", str(tiny_model_dir), "--data", "data/train.jsonl", "--out", "runs/lora"]
    assert main([*argv, "--batch-size", "4", "--micro-batch-size", "2", "--max-steps", "2"]) == 0
    config = yaml.safe_load((project / "runs" / "lora" / "config.yaml").read_text())
    assert config["data"] == "../../data/train.jsonl" and config["out"] == "."
    assert config["model"] == str(tiny_model_dir)  # absolute, as given
    provenance = json.loads((project / "runs" / "lora" / "provenance.json").read_text())
    assert provenance["data"]["source"] == "../../data/train.jsonl"

    moved = tmp_path / "laptop" / "project"
    shutil.move(project, moved)
    monkeypatch.chdir(tmp_path)
    settings = saved_config(moved / "runs" / "lora")
    assert Path(settings["data"]).resolve() == (moved / "data" / "train.jsonl").resolve()
    # The same settings from another directory: --resume finds the finished run, nothing differs.
    assert main(["train", "--out", str(moved / "runs" / "lora"), "--resume"]) == 0


def test_the_report_names_absolute_paths_that_are_not_here(tmp_path):
    from tunescope.report.pipeline import missing_paths

    here = tmp_path / "model"
    here.mkdir()
    config = {
        "models": [str(here), "/nowhere/llama", "smollm2"],
        "datasets": [{"sources": [{"data": "/nowhere/alpaca.json"}, {"data": "facts"}]}],
        "eval": {"prompts": "relative/prompts.jsonl"},
        "judge": {"judge_model": "/nowhere/llama"},
    }
    assert missing_paths(config) == ["/nowhere/llama", "/nowhere/alpaca.json"]
