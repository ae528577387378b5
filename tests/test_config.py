import argparse
from pathlib import Path

import pytest

from tunescope.config import add_config_arguments, build_config, config_from_args, flag
from tunescope.errors import UserError
from tunescope.train import TrainConfig


def test_every_field_is_documented_and_has_a_flag():
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, TrainConfig)
    option_strings = {opt for action in parser._actions for opt in action.option_strings}
    for name, field in TrainConfig.model_fields.items():
        assert field.description, f"{name} has no docstring"
        assert flag(name) in option_strings


def test_yaml_then_flags_override(tmp_path):
    config_file = tmp_path / "run.yaml"
    config_file.write_text("out: runs/a\nmethod: full\nlora_r: 4\nlearning_rate: 1.0e-4\n")
    config = build_config(TrainConfig, yaml_path=config_file, overrides={"lora_r": "16"})
    assert config.method == "full"
    assert config.lora_r == 16  # the flag wins, and the string is converted
    assert config.learning_rate == pytest.approx(1e-4)


def test_cli_and_yaml_round_trip(tmp_path):
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, TrainConfig)
    args = parser.parse_args(["--out", "x", "--lora-target-modules", "q_proj", "v_proj", "--no-gradient-checkpointing"])
    config = config_from_args(TrainConfig, args)
    assert config.lora_target_modules == ["q_proj", "v_proj"]
    again = build_config(TrainConfig, base=config.model_dump(mode="json"))
    assert again == config


@pytest.mark.parametrize(
    ("yaml_text", "overrides", "expected"),
    [
        ("out: x\nlora_r: -1\n", {}, "lora_r"),
        ("out: x\n", {"lora_r": "many"}, "--lora-r"),
        ("out: x\nbogus: 1\n", {}, "unknown setting 'bogus'"),
        ("out: x\neffective_batch_size: 10\nmicro_batch_size: 4\n", {}, "not a multiple"),
        ("", {}, "missing required setting --out"),
        ("out: x\nformat: yaml\n", {}, "format"),
    ],
)
def test_bad_settings_are_one_line_errors(tmp_path, yaml_text, overrides, expected):
    config_file = tmp_path / "run.yaml"
    config_file.write_text(yaml_text)
    with pytest.raises(UserError) as info:
        build_config(TrainConfig, yaml_path=config_file, overrides=overrides)
    assert expected in str(info.value)
    assert "\n" not in str(info.value)


def test_invalid_yaml_names_the_line(tmp_path):
    config_file = tmp_path / "run.yaml"
    config_file.write_text("out: x\nmethod: [lora\n")
    with pytest.raises(UserError, match=r"run.yaml:\d+: invalid YAML"):
        build_config(TrainConfig, yaml_path=config_file)


def test_method_specific_learning_rate():
    config = TrainConfig(out="x", method="lora", lora_learning_rate=2e-4)
    assert config.effective_learning_rate == pytest.approx(2e-4)
    assert config.learning_rate_for("full") == pytest.approx(5e-5)


_TRAIN_CONFIGS = [
    path
    for path in sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))
    if not path.name.startswith("experiment_")  # validated as ExperimentConfig in test_experiment.py
]


@pytest.mark.parametrize("path", _TRAIN_CONFIGS, ids=lambda path: path.name)
def test_shipped_train_configs_are_valid(path):
    config = build_config(TrainConfig, yaml_path=path)
    assert config.out
