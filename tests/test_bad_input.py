"""Bad input for every verb: one line naming the file, line or field, exit code 2, no traceback.

tests/test_cli_errors.py covers `tunescope train` in depth; here every other verb meets the same
kinds of mistakes: missing and empty files, wrong formats, a directory given where a file is
expected, an output that holds another run, token ids outside the vocabulary, two tokenizers that
disagree, and settings files with unknown keys.
"""

import json
from pathlib import Path

import pytest

from tunescope.cli import main

from conftest import PAIRS, assert_one_line, build_tiny_llama, build_tiny_tokenizer, cli_run, write_jsonl


@pytest.fixture(scope="module")
def files(tmp_path_factory, tiny_model_dir) -> dict[str, Path]:
    """Good inputs (to break one at a time) and a few bad ones, shared by the cases below."""
    root = tmp_path_factory.mktemp("bad-input")
    tokenizer = build_tiny_tokenizer(vocab_size=300)  # a different vocabulary from the tiny model's 320
    build_tiny_llama(tokenizer).save_pretrained(root / "other-vocab")
    tokenizer.save_pretrained(root / "other-vocab")
    paths = {
        "model": tiny_model_dir,
        "other_vocab": root / "other-vocab",
        "train": write_jsonl(root / "train.jsonl", [{"instruction": q, "output": a} for q, a in PAIRS]),
        "prompts": write_jsonl(root / "prompts.jsonl", [{"instruction": q} for q, _ in PAIRS[:2]]),
        "responses": write_jsonl(
            root / "responses.jsonl",
            [{"id": f"r{i}", "messages": [{"role": "user", "content": q}], "output": a} for i, (q, a) in
             enumerate(PAIRS[:3])],
        ),  # fmt: skip
        "empty": root / "empty.jsonl",
        "blank": root / "blank.jsonl",
        "odd": write_jsonl(root / "odd.jsonl", [{"question": "q", "answer": "a"}]),
        "no_output": write_jsonl(root / "no-output.jsonl", [{"id": "x", "instruction": "q"}]),
        "oov": write_jsonl(root / "oov.jsonl", [{"id": "x", "prompt_token_ids": [5], "output_token_ids": [7, 99999]}]),
        "text": root / "notes.txt",
        "word": root / "notes.docx",
        "a_file": root / "a-file",
        "dir": root / "a-directory",
        "unknown_key": root / "unknown.yaml",
        "not_mapping": root / "list.yaml",
    }  # fmt: skip
    paths["empty"].write_text("")
    paths["blank"].write_text("\n\n")
    paths["text"].write_text("just some notes\n")
    paths["word"].write_text("not a format tunescope reads\n")
    paths["a_file"].write_text("not a directory")
    paths["dir"].mkdir()
    paths["unknown_key"].write_text("no_such_setting: 1\n")
    paths["not_mapping"].write_text("- a\n- b\n")
    return paths


def f(name: str):
    """A placeholder for the path of ``files[name]``, filled in per test."""
    return ("file", name)


def resolve(argv, files, tmp_path):
    out = []
    for arg in argv:
        if isinstance(arg, tuple) and arg[0] == "file":
            out.append(str(files[arg[1]]))
        elif isinstance(arg, str) and arg.startswith("OUT"):
            out.append(str(tmp_path / ("out" + arg[3:])))
        else:
            out.append(str(arg))
    return out


M = f("model")
CASES = {
    # generate
    "generate: missing prompts": (
        ["generate", "--model", M, "--data", "nope.jsonl", "--out", "OUT.jsonl"], ["nope.jsonl", "not found"]),
    "generate: empty prompts": (
        ["generate", "--model", M, "--data", f("empty"), "--out", "OUT.jsonl"], ["empty.jsonl", "empty"]),
    "generate: blank prompts": (
        ["generate", "--model", M, "--data", f("blank"), "--out", "OUT.jsonl"], ["blank.jsonl", "empty"]),
    "generate: unknown record shape": (
        ["generate", "--model", M, "--data", f("odd"), "--out", "OUT.jsonl"],
        ["odd.jsonl line 1", "cannot detect the data format", "--format"]),
    "generate: unknown file type": (
        ["generate", "--model", M, "--data", f("word"), "--out", "OUT.jsonl"], ["notes.docx", "unknown data file type"]),
    "generate: documents are not prompts": (
        ["generate", "--model", M, "--data", f("text"), "--out", "OUT.jsonl"], ["notes.txt", "not prompts"]),
    "generate: a directory that is no dataset": (
        ["generate", "--model", M, "--data", f("dir"), "--out", "OUT.jsonl"], ["a-directory", "cannot load"]),
    "generate: output is not jsonl": (
        ["generate", "--model", M, "--data", f("prompts"), "--out", "OUT.txt"], ["--out", "must end in .jsonl"]),
    "generate: output under a file": (
        ["generate", "--model", M, "--data", f("prompts"), "--out", ("file", "a_file_child")],
        ["--out", "cannot write there"]),
    "generate: output is not a responses file": (
        ["generate", "--model", M, "--data", f("prompts"), "--out", f("text_jsonl")],
        ["notes.jsonl line 1", "not a responses file"]),
    "generate: unknown setting": (
        ["generate", "--model", M, "--data", f("prompts"), "--out", "OUT.jsonl", "--config", f("unknown_key")],
        ["unknown.yaml", "unknown setting 'no_such_setting'"]),
    "generate: model not found": (
        ["generate", "--model", "no-such-model-dir/", "--data", f("prompts"), "--out", "OUT.jsonl"],
        ["no-such-model-dir", "not found"]),
    # shift
    "shift: missing responses": (
        ["shift", "--base", M, "--tuned", M, "--responses", "nope.jsonl", "--out", "OUT"], ["nope.jsonl", "not found"]),
    "shift: empty responses": (
        ["shift", "--base", M, "--tuned", M, "--responses", f("empty"), "--out", "OUT"],
        ["empty.jsonl", "no responses"]),
    "shift: a record without a response": (
        ["shift", "--base", M, "--tuned", M, "--responses", f("no_output"), "--out", "OUT"],
        ["no-output.jsonl line 1", "no response"]),
    "shift: token ids outside the vocabulary": (
        ["shift", "--base", M, "--tuned", M, "--responses", f("oov"), "--out", "OUT"],
        ["oov.jsonl line 1", "token id 99999 is outside the vocabulary"]),
    "shift: tokenizers that disagree": (
        ["shift", "--base", f("other_vocab"), "--tuned", M, "--responses", f("responses"), "--out", "OUT"],
        ["other-vocab", "different tokenizers (300 vs 320 tokens)"]),
    "shift: responses is a directory": (
        ["shift", "--base", M, "--tuned", M, "--responses", f("dir"), "--out", "OUT"], ["a-directory", "not found"]),
    "shift: output holds something else": (
        ["shift", "--base", M, "--tuned", M, "--responses", f("responses"), "--out", f("occupied")],
        ["occupied", "not a tunescope run"]),
    "shift: unknown setting": (
        ["shift", "--base", M, "--tuned", M, "--responses", f("responses"), "--out", "OUT",
         "--config", f("unknown_key")],
        ["unknown.yaml", "unknown setting 'no_such_setting'"]),
    # borrow
    "borrow: missing shift run": (
        ["borrow", "--shift", "no-shift-run", "--train", f("train"), "--out", "OUT"], ["no-shift-run"]),
    "borrow: shift run is not one": (
        ["borrow", "--shift", f("dir"), "--train", f("train"), "--out", "OUT"], ["a-directory"]),
    "borrow: unknown setting": (
        ["borrow", "--shift", f("dir"), "--train", f("train"), "--out", "OUT", "--config", f("unknown_key")],
        ["unknown.yaml", "unknown setting 'no_such_setting'"]),
    # simplify
    "simplify: missing data": (
        ["simplify", "--data", "nope.jsonl", "--out", "OUT.jsonl"], ["nope.jsonl", "not found"]),
    "simplify: empty data": (["simplify", "--data", f("empty"), "--out", "OUT.jsonl"], ["empty.jsonl", "empty"]),
    "simplify: prompts without answers": (
        ["simplify", "--data", f("prompts"), "--out", "OUT.jsonl"], ["prompts.jsonl line 1", "missing field 'output'"]),
    "simplify: unknown record shape": (
        ["simplify", "--data", f("odd"), "--out", "OUT.jsonl"], ["odd.jsonl line 1", "cannot detect the data format"]),
    "simplify: output is not jsonl": (
        ["simplify", "--data", f("train"), "--out", "OUT.txt"], ["--out", "JSONL"]),
    "simplify: output under a file": (
        ["simplify", "--data", f("train"), "--out", ("file", "a_file_child_jsonl")], ["--out", "cannot write there"]),
    "simplify: unknown setting": (
        ["simplify", "--data", f("train"), "--out", "OUT.jsonl", "--config", f("unknown_key")],
        ["unknown.yaml", "unknown setting 'no_such_setting'"]),
    # judge
    "judge: missing responses": (["judge", "--responses", "nope.jsonl", "--out", "OUT"], ["nope.jsonl", "not found"]),
    "judge: empty responses": (["judge", "--responses", f("empty"), "--out", "OUT"], ["empty.jsonl", "no responses"]),
    "judge: a record without an answer": (
        ["judge", "--responses", f("no_output"), "--out", "OUT"], ["no-output.jsonl line 1", "'output'"]),
    "judge: a file of another type": (["judge", "--responses", f("text"), "--out", "OUT"], ["notes.txt", "unknown"]),
    "judge: pairwise with one file": (
        ["judge", "--mode", "pairwise", "--responses", f("responses"), "--out", "OUT"], ["pairwise", "two"]),
    "judge: missing just-eval file": (
        ["judge", "--import-justeval", "nope.json", "--out", "OUT"], ["nope.json", "not found"]),
    "judge: output under a file": (
        ["judge", "--responses", f("responses"), "--out", ("file", "a_file_child")], ["--out", "cannot write there"]),
    "judge: output holds something else": (
        ["judge", "--responses", f("responses"), "--out", f("occupied")], ["occupied", "not a tunescope run"]),
    "judge: unknown setting": (
        ["judge", "--responses", f("responses"), "--out", "OUT", "--config", f("unknown_key")],
        ["unknown.yaml", "unknown setting 'no_such_setting'"]),
    # probe
    "probe: tuned run not found": (
        ["probe", "--base", M, "--tuned", "no-such-run/", "--out", "OUT"], ["no-such-run", "not found"]),
    "probe: output under a file": (
        ["probe", "--base", M, "--tuned", M, "--out", ("file", "a_file_child")], ["--out", "cannot write there"]),
    "probe: unknown setting": (
        ["probe", "--tuned", M, "--out", "OUT", "--config", f("unknown_key")],
        ["unknown.yaml", "unknown setting 'no_such_setting'"]),
    # preflight
    "preflight: missing data": (["preflight", "--model", M, "--data", "nope.jsonl"], ["nope.jsonl", "not found"]),
    "preflight: empty data": (["preflight", "--model", M, "--data", f("empty")], ["empty.jsonl", "empty"]),
    "preflight: unknown record shape": (
        ["preflight", "--model", M, "--data", f("odd")], ["odd.jsonl line 1", "cannot detect the data format"]),
    "preflight: unknown setting": (
        ["preflight", "--model", M, "--data", f("train"), "--config", f("unknown_key")],
        ["unknown.yaml", "unknown setting 'no_such_setting'"]),
    # experiment
    "experiment: missing grid": (["experiment", "nope.yaml", "--out", "OUT"], ["nope.yaml", "not found"]),
    "experiment: grid is not a mapping": (["experiment", f("not_mapping"), "--out", "OUT"], ["list.yaml", "mapping"]),
    "experiment: unknown setting": (
        ["experiment", f("unknown_key"), "--out", "OUT"], ["unknown.yaml", "unknown setting 'no_such_setting'"]),
    "experiment: missing training data": (
        ["experiment", f("grid_missing_data"), "--out", "OUT"], ["nope-train.jsonl", "not found"]),
    "experiment: output under a file": (
        ["experiment", f("grid_missing_data"), "--out", ("file", "a_file_child")], ["--out", "cannot write there"]),
    "experiment: output holds something else": (
        ["experiment", f("grid_missing_data"), "--out", f("occupied")], ["occupied", "not a tunescope experiment"]),
    # report
    "report: missing directory": (["report", "no-such-experiment"], ["no-such-experiment", "no experiment.json"]),
    "report: not an experiment": (["report", f("dir")], ["a-directory", "no experiment.json"]),
    "report: output under a file": (
        ["report", f("dir"), "--out", ("file", "a_file_child")], ["--out", "report.html", "cannot write there"]),
}  # fmt: skip


@pytest.fixture
def case_files(files, tmp_path) -> dict[str, Path]:
    """The shared files plus the ones a case may change (each test gets its own)."""
    extra = dict(files)
    extra["a_file_child"] = files["a_file"] / "run"
    extra["a_file_child_jsonl"] = files["a_file"] / "out.jsonl"
    extra["text_jsonl"] = tmp_path / "notes.jsonl"
    extra["text_jsonl"].write_text("just some notes\n")
    extra["occupied"] = tmp_path / "occupied"
    extra["occupied"].mkdir()
    (extra["occupied"] / "thesis.tex").write_text("years of work")
    grid = {"models": [str(files["model"])], "datasets": [str(tmp_path / "nope-train.jsonl")]}
    extra["grid_missing_data"] = tmp_path / "grid.yaml"
    extra["grid_missing_data"].write_text(json.dumps(grid))
    return extra


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_and_exit_code_2(case, case_files, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative paths ("nope.jsonl") are missing in an empty directory
    argv, fragments = CASES[case]
    code, err = cli_run(capsys, *resolve(argv, case_files, tmp_path))
    assert_one_line(code, err, *fragments)
    if "occupied" in case_files and (case_files["occupied"] / "thesis.tex").exists():
        assert (case_files["occupied"] / "thesis.tex").read_text() == "years of work"


# ------------------------------------------------------------------------------------------
# An output that holds another run of the same verb


def test_generate_into_a_file_of_other_responses(files, tmp_path, capsys):
    out = tmp_path / "responses.jsonl"
    argv = ["generate", "--model", files["model"], "--data", files["prompts"], "--out", out, "--max-new-tokens", "2"]
    assert main(list(map(str, argv))) == 0
    capsys.readouterr()
    code, err = cli_run(capsys, *argv[:-1], "3")
    assert_one_line(code, err, str(out), "generated differently", "max_new_tokens", "--overwrite")


def test_shift_into_a_directory_of_another_shift_run(files, tmp_path, capsys):
    out = tmp_path / "shift"
    argv = ["shift", "--base", files["model"], "--tuned", files["model"], "--responses", files["responses"],
            "--out", out, "--bootstrap-samples", "10"]  # fmt: skip
    assert main(list(map(str, argv))) == 0
    capsys.readouterr()
    code, err = cli_run(capsys, *argv, "--mode", "aligntds")
    assert_one_line(code, err, str(out), "already holds a different run", "mode", "--overwrite")


def test_judge_into_a_directory_of_another_judge_run(files, tmp_path, capsys):
    out = tmp_path / "judge"
    (out).mkdir()
    (out / "config.yaml").write_text("mode: safety\nout: x\n")
    code, err = cli_run(capsys, "judge", "--responses", files["responses"], "--out", out)
    assert_one_line(code, err, str(out), "holds a run with other settings", "mode", "--overwrite")


def test_simplify_onto_an_existing_dataset(files, tmp_path, capsys):
    out = tmp_path / "simple.jsonl"
    out.write_text("{}\n")
    code, err = cli_run(capsys, "simplify", "--data", files["train"], "--out", out)
    assert_one_line(code, err, str(out), "already exists", "--overwrite")
