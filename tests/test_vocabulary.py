"""One vocabulary across the verbs: every --help walked in-process, one name per setting, old names deprecated."""

import argparse
import re
import warnings

import pytest

from tunescope.cli import build_parser, main
from tunescope.config import build_config, config_from_args
from tunescope.generate.store import read_responses, responses_file
from tunescope.judge import JudgeConfig
from tunescope.models import resolve_precision
from tunescope.shift import ShiftConfig
from tunescope.simplify import SimplifyConfig
from tunescope.train import TrainConfig

from conftest import rows_in_format, write_jsonl

# Each setting that several verbs share: the one flag that names it, and names it must never go by. A verb that
# grew --max-tokens or --base-model again would fail here (hidden, deprecated aliases are allowed).
CONCEPTS = {
    "settings file": ("--config", {"--config-file", "--settings", "--yaml"}),
    "output directory": ("--out", {"--output", "--output-dir", "--out-dir", "--outdir"}),
    "the model a verb runs or tunes": ("--model", {"--model-name", "--model-path", "--model-name-or-path"}),
    "the base model tuned ones are compared with": ("--base", {"--base-model", "--base-model-path"}),
    "the tuned model(s)": ("--tuned", {"--tuned-model", "--tuned-models", "--adapter"}),
    "the judge or rewriter LLM": ("--judge-model", {"--rewriter-model", "--rewriter", "--judge"}),
    "its endpoint": ("--judge-base-url", {"--base-url", "--rewriter-base-url", "--api-base", "--endpoint"}),
    "instruction data": ("--data", {"--train", "--dataset", "--train-data", "--data-path"}),
    "record shape": ("--format", {"--train-format", "--data-format"}),
    "subset of the data": ("--subset-size", {"--train-subset-size", "--n-examples"}),
    "reply length": ("--max-new-tokens", {"--max-tokens", "--max-reply-tokens", "--max-generate-tokens"}),
    "weights' precision": ("--precision", {"--dtype", "--torch-dtype", "--bf16", "--fp16"}),
    "items per forward pass": ("--batch-size", {"--eval-batch-size", "--per-device-batch-size"}),
}

VERBS_WITH_SETTINGS = {"train", "generate", "shift", "borrow", "simplify", "judge", "probe", "preflight", "experiment",
                       "report"}  # fmt: skip
"""Every verb but demo (a fixed grid; --print-config writes it as a file for `experiment --config`), assets, env."""
VERBS_LOADING_MODELS = {"train", "generate", "shift", "borrow", "simplify", "judge", "probe", "preflight"}


def verb_parsers() -> dict[str, argparse.ArgumentParser]:
    """Every verb's parser, and the parsers of verbs that have their own sub-verbs (assets prepare)."""
    found = {}

    def walk(parser: argparse.ArgumentParser, prefix: str) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    found[f"{prefix} {name}".strip()] = sub
                    walk(sub, f"{prefix} {name}")

    walk(build_parser(), "")
    return found


PARSERS = verb_parsers()


def visible_flags(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """Flags shown in --help (deprecated aliases are hidden), by name."""
    return {
        name: action
        for action in parser._actions
        if action.help != argparse.SUPPRESS
        for name in action.option_strings
        if not name.startswith("--no-")
    }


def help_text(action: argparse.Action) -> str:
    return (action.help or "").replace("%%", "%")


def test_every_verb_is_walked():
    assert {"train", "generate", "shift", "borrow", "simplify", "judge", "probe", "preflight", "experiment",
            "report", "demo", "assets", "assets prepare", "env"} <= set(PARSERS)  # fmt: skip


@pytest.mark.parametrize("verb", sorted(PARSERS))
def test_help_shows_one_real_default_per_flag(verb):
    parser = PARSERS[verb]
    assert "PydanticUndefined" not in parser.format_help()
    for action in parser._actions:
        text = help_text(action)
        assert "PydanticUndefined" not in text, (verb, action.option_strings)
        mentions = re.findall(r"\bdefault", text, flags=re.IGNORECASE)
        assert len(mentions) <= 1, f"{verb} {action.option_strings}: {len(mentions)} defaults in {text!r}"


@pytest.mark.parametrize("verb", sorted(VERBS_WITH_SETTINGS))
def test_required_flags_come_first_and_every_verb_takes_a_config_file(verb):
    parser = PARSERS[verb]
    assert "--config" in visible_flags(parser)
    page = parser.format_help()
    required = [action for action in parser._actions if "(required)" in help_text(action)]
    if required:
        assert page.index("required settings") < page.index("options:"), page
        usage = page[: page.index("\n\n")]
        optional = set(visible_flags(parser)) - {name for action in required for name in action.option_strings}
        first_optional = min(usage.index(f"[{name}") for name in optional if f"[{name}" in usage and name != "-h")
        for action in required:
            assert usage.index(action.option_strings[0]) < first_optional, (verb, action.option_strings)


def test_one_name_per_setting_across_verbs():
    for concept, (name, wrong) in CONCEPTS.items():
        for verb, parser in PARSERS.items():
            shown = set(visible_flags(parser))
            assert not shown & wrong, f"{verb}: {sorted(shown & wrong)} should be {name} ({concept})"
    assert {verb for verb, parser in PARSERS.items() if "--out" in visible_flags(parser)} >= VERBS_WITH_SETTINGS
    # Two flags whose help starts alike name one setting twice (the check that found --rewriter-model).
    names_by_help: dict[str, set[str]] = {}
    for parser in PARSERS.values():
        for name, action in visible_flags(parser).items():
            if isinstance(action, argparse._HelpAction):
                continue
            opening = re.split(r"[.;:(]", help_text(action))[0].strip().lower()
            names_by_help.setdefault(opening, set()).add(name)
    assert {opening: names for opening, names in names_by_help.items() if len(names) > 1} == {}


def test_out_is_a_directory_everywhere():
    for verb, parser in PARSERS.items():
        if out := visible_flags(parser).get("--out"):
            assert "directory" in help_text(out).lower(), (verb, help_text(out))


def test_batch_size_means_one_thing_and_train_names_its_two():
    for verb, parser in PARSERS.items():
        if batch := visible_flags(parser).get("--batch-size"):
            assert re.search(r"together|per forward pass", help_text(batch)), (verb, help_text(batch))
    train = visible_flags(PARSERS["train"])
    assert "--batch-size" not in train and {"--effective-batch-size", "--micro-batch-size"} <= set(train)


def test_every_verb_that_loads_a_model_has_precision_auto_with_one_rule():
    for verb in VERBS_LOADING_MODELS:
        precision = visible_flags(PARSERS[verb]).get("--precision")
        assert precision is not None, verb
        assert "auto" in precision.choices and "(default: 'auto')" in help_text(precision), verb
        assert re.search(r"bf16 .*on a CUDA GPU that supports it, fp32 elsewhere", help_text(precision)), verb
    assert resolve_precision("auto") == ("bf16" if _bf16_gpu() else "fp32")
    assert resolve_precision("fp16") == "fp16"


def _bf16_gpu() -> bool:
    import torch

    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def test_preflight_subset_size_has_its_own_help():
    preflight = help_text(visible_flags(PARSERS["preflight"])["--subset-size"])
    train = help_text(visible_flags(PARSERS["train"])["--subset-size"])
    assert preflight != train and "measure" in preflight


# --- old spellings: one helper, a warning each, and the same settings --------------------------------------------


def parse(verb: str, *argv: str) -> argparse.Namespace:
    return build_parser().parse_args([verb, *argv])


@pytest.mark.parametrize(
    ("verb", "cls", "old", "new", "value", "required"),
    [
        ("train", TrainConfig, "--batch-size", "effective_batch_size", 16, ["--out", "x"]),
        ("judge", JudgeConfig, "--max-tokens", "max_new_tokens", 64, ["--out", "x", "--responses", "r.jsonl"]),
        ("judge", JudgeConfig, "--base-url", "judge_base_url", "http://h:1/v1", ["--out", "x", "--responses", "r"]),
        ("simplify", SimplifyConfig, "--rewriter-model", "judge_model", "m", ["--out", "x", "--data", "d"]),
        ("simplify", SimplifyConfig, "--max-tokens", "max_new_tokens", 64, ["--out", "x", "--data", "d"]),
    ],
)
def test_old_flags_still_work_with_one_warning(verb, cls, old, new, value, required):
    with pytest.warns(FutureWarning, match=f"{old} is deprecated .* use --{new.replace('_', '-')}"):
        args = parse(verb, *required, old, str(value))
    assert getattr(config_from_args(cls, args), new) == value


def test_old_borrow_flags_map_to_the_shared_names():
    with pytest.warns(FutureWarning) as caught:
        args = parse("borrow", "--shift", "s", "--out", "o", "--train", "t.jsonl", "--train-format", "alpaca",
                     "--base-model", "b", "--tuned-model", "u")  # fmt: skip
    assert len(caught) == 4
    assert (args.data, args.format, args.base, args.tuned) == ("t.jsonl", "alpaca", "b", "u")


def test_old_yaml_keys_still_load_with_a_warning(tmp_path):
    old = tmp_path / "judge.yaml"
    old.write_text(
        "out: x\nresponses: [r.jsonl]\nbase_url: http://h:1/v1\nmax_tokens: 99\nbackend: openai\njudge_model: m\n"
    )
    with pytest.warns(FutureWarning, match="setting 'max_tokens' is deprecated"):
        config = build_config(JudgeConfig, yaml_path=old)
    assert (config.judge_base_url, config.max_new_tokens) == ("http://h:1/v1", 99)
    # A new key given beside its old one wins.
    with pytest.warns(FutureWarning):
        both = TrainConfig.model_validate({"out": "x", "batch_size": 8, "effective_batch_size": 16})
    assert both.effective_batch_size == 16


def test_the_configs_and_the_demo_grid_load_without_a_deprecation(tmp_path):
    from pathlib import Path

    from tunescope.experiment.config import ExperimentConfig
    from tunescope.experiment.demo import demo_config

    configs = Path(__file__).parents[1] / "configs"
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        for path in sorted(configs.glob("*.yaml")):
            grid = path.name.startswith("experiment_")
            build_config(ExperimentConfig if grid else TrainConfig, yaml_path=path)
        demo_config(quick=True), demo_config(quick=False)


def test_experiment_takes_config_and_still_its_old_positional(tmp_path, capsys):
    missing = tmp_path / "missing.yaml"
    assert main(["experiment", "--config", str(missing), "--out", str(tmp_path / "o")]) == 2
    assert "missing.yaml: config file not found" in capsys.readouterr().err
    with pytest.warns(FutureWarning, match="tunescope experiment --config"):
        assert main(["experiment", str(missing), "--out", str(tmp_path / "o")]) == 2
    assert "config file not found" in capsys.readouterr().err
    assert main(["experiment", "--out", str(tmp_path / "o")]) == 2
    assert "--config" in capsys.readouterr().err


def test_train_dry_run_needs_no_out(tiny_model_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = write_jsonl(tmp_path / "train.jsonl", rows_in_format("alpaca"))
    assert main(["train", "--model", str(tiny_model_dir), "--data", str(data), "--dry-run"]) == 0
    assert capsys.readouterr().out.count("--- example ") == 3
    assert sorted(path.name for path in tmp_path.iterdir()) == ["train.jsonl"]  # nothing written


def test_generate_writes_into_its_out_directory_and_readers_take_the_directory(tiny_model_dir, tmp_path):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"id": "a", "instruction": "Say hi."}])
    out = tmp_path / "gen"
    assert main(["generate", "--model", str(tiny_model_dir), "--data", str(prompts), "--out", str(out),
                 "--max-new-tokens", "3"]) == 0  # fmt: skip
    assert responses_file(out) == out / "responses.jsonl" and (out / "responses.jsonl").is_file()
    assert [record.id for record in read_responses(out)] == ["a"]  # shift, judge and borrow read it this way
    # The old form, a .jsonl file, still works, with a warning.
    with pytest.warns(FutureWarning, match="--out .*old.jsonl \\(a file\\) is deprecated"):
        assert main(["generate", "--model", str(tiny_model_dir), "--data", str(prompts),
                     "--out", str(tmp_path / "old.jsonl"), "--max-new-tokens", "3"]) == 0  # fmt: skip
    assert [record.id for record in read_responses(tmp_path / "old.jsonl")] == ["a"]


def test_shift_precision_defaults_to_auto():
    assert ShiftConfig(base="b", tuned="t", responses="r", out="o").precision == "auto"


def test_a_run_saved_under_old_names_still_resumes(tmp_path):
    from tunescope.config import config_to_dict
    from tunescope.errors import UserError
    from tunescope.files import write_yaml
    from tunescope.rundir import RunState, check_run_dir

    config = TrainConfig(out=str(tmp_path / "run"), effective_batch_size=16)
    saved = config_to_dict(config)
    saved["batch_size"] = saved.pop("effective_batch_size")  # as the previous version wrote it
    del saved["neftune_noise_alpha"]  # a setting it did not have yet
    write_yaml(tmp_path / "run" / "config.yaml", saved)
    now = config_to_dict(config)
    state = check_run_dir(tmp_path / "run", now, resume=True, overwrite=False, settings_class=TrainConfig)
    assert state is RunState.RESUME
    with pytest.raises(UserError, match="settings differ"):  # the same check without knowing the renames
        check_run_dir(tmp_path / "run", now, resume=True, overwrite=False)
    changed = config_to_dict(TrainConfig(out=str(tmp_path / "run"), effective_batch_size=32))
    with pytest.raises(UserError, match="effective_batch_size"):
        check_run_dir(tmp_path / "run", changed, resume=True, overwrite=False, settings_class=TrainConfig)
