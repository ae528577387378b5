"""Every bad input: one line on stderr naming the culprit, exit code 2, no traceback, nothing written."""

import subprocess
import sys

import pytest

from tunescope.cli import main

from conftest import rows_in_format, write_jsonl


def run_cli(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.err.strip()


def assert_one_line_error(code, err, *fragments):
    assert code == 2, err
    lines = [line for line in err.splitlines() if not line.startswith("warning:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture
def good_data(tmp_path):
    return write_jsonl(tmp_path / "train.jsonl", rows_in_format("alpaca"))


def train(model, data, out, *extra):
    return ("train", "--model", str(model), "--data", str(data), "--out", str(out), "--max-steps", "1", *extra)


def test_missing_data_file(capsys, tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    code, err = run_cli(capsys, *train(tiny_model_dir, tmp_path / "nope.jsonl", out))
    assert_one_line_error(code, err, "nope.jsonl", "not found")
    assert not out.exists()


def test_unreadable_data_file(capsys, tiny_model_dir, tmp_path):
    data = tmp_path / "latin1.jsonl"
    data.write_bytes(b'{"prompt": "caf\xe9", "completion": "x"}\n')
    code, err = run_cli(capsys, *train(tiny_model_dir, data, tmp_path / "run"))
    assert_one_line_error(code, err, "latin1.jsonl", "not UTF-8")


def test_malformed_json_line(capsys, tiny_model_dir, tmp_path):
    data = tmp_path / "bad.jsonl"
    data.write_text('{"prompt": "q", "completion": "a"}\n{"prompt": "q" "completion": "a"}\n')
    code, err = run_cli(capsys, *train(tiny_model_dir, data, tmp_path / "run"))
    assert_one_line_error(code, err, "bad.jsonl line 2", "invalid JSON")


def test_record_missing_field(capsys, tiny_model_dir, tmp_path):
    rows = rows_in_format("alpaca")
    del rows[3]["output"]
    data = write_jsonl(tmp_path / "train.jsonl", rows)
    code, err = run_cli(capsys, *train(tiny_model_dir, data, tmp_path / "run"))
    assert_one_line_error(code, err, "train.jsonl line 4", "missing field 'output'")


def test_empty_dataset(capsys, tiny_model_dir, tmp_path):
    data = tmp_path / "empty.jsonl"
    data.write_text("")
    code, err = run_cli(capsys, *train(tiny_model_dir, data, tmp_path / "run"))
    assert_one_line_error(code, err, "empty.jsonl", "empty")


def test_dataset_emptied_by_filtering(capsys, tiny_model_dir, tmp_path):
    data = write_jsonl(tmp_path / "blank.jsonl", [{"instruction": "q", "output": ""}] * 3)
    code, err = run_cli(capsys, *train(tiny_model_dir, data, tmp_path / "run"))
    assert_one_line_error(code, err, "blank.jsonl", "no examples left after filtering")


def test_unknown_format(capsys, tiny_model_dir, good_data, tmp_path):
    with pytest.raises(SystemExit) as info:
        main(list(train(tiny_model_dir, good_data, tmp_path / "run", "--format", "yaml")))
    err = capsys.readouterr().err.strip()
    assert info.value.code == 2 and len(err.splitlines()) == 1 and "invalid choice: 'yaml'" in err
    odd = write_jsonl(tmp_path / "odd.jsonl", [{"question": "q", "answer": "a"}])
    code, err = run_cli(capsys, *train(tiny_model_dir, odd, tmp_path / "run"))
    assert_one_line_error(code, err, "odd.jsonl line 1", "cannot detect the data format", "--format")


def test_forced_format_that_does_not_fit(capsys, tiny_model_dir, good_data, tmp_path):
    code, err = run_cli(capsys, *train(tiny_model_dir, good_data, tmp_path / "run", "--format", "sharegpt"))
    assert_one_line_error(code, err, "train.jsonl line 1", "missing field 'conversations'")


def test_model_path_not_found(capsys, good_data, tmp_path):
    code, err = run_cli(capsys, *train(tmp_path / "no-such-model", good_data, tmp_path / "run"))
    assert_one_line_error(code, err, "no-such-model", "not found")


def test_model_id_not_found_offline(capsys, good_data, tmp_path):
    code, err = run_cli(capsys, *train("example-org/no-such-model", good_data, tmp_path / "run"))
    assert_one_line_error(code, err, "example-org/no-such-model", "not found", "hub")


def test_sequence_length_too_small(capsys, tiny_model_dir, good_data, tmp_path):
    out = tmp_path / "run"
    code, err = run_cli(capsys, *train(tiny_model_dir, good_data, out, "--max-length", "8"))
    assert_one_line_error(code, err, "--max-length 8 is too small for any example", "shortest prompt")
    assert not out.exists()


def test_unwritable_output_directory(capsys, tiny_model_dir, good_data, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    code, err = run_cli(capsys, *train(tiny_model_dir, good_data, blocker / "run"))
    assert_one_line_error(code, err, "--out", "cannot write there")
    code, err = run_cli(capsys, *train(tiny_model_dir, good_data, blocker))
    assert_one_line_error(code, err, "--out", "not a directory")


def test_output_directory_with_a_different_run(capsys, tiny_model_dir, good_data, tmp_path):
    out = tmp_path / "run"
    assert main(list(train(tiny_model_dir, good_data, out))) == 0
    capsys.readouterr()
    before = (out / "adapter" / "adapter_model.safetensors").read_bytes()

    code, err = run_cli(capsys, *train(tiny_model_dir, good_data, out, "--lora-r", "4"))
    assert_one_line_error(code, err, "already holds a different run", "lora_r (8 -> 4)", "--overwrite")
    code, err = run_cli(capsys, *train(tiny_model_dir, good_data, out))
    assert_one_line_error(code, err, "already holds this run, finished", "--overwrite")
    code, err = run_cli(capsys, *train(tiny_model_dir, good_data, out, "--lora-r", "4", "--resume"))
    assert_one_line_error(code, err, "--resume: settings differ", "lora_r (8 -> 4)")
    assert (out / "adapter" / "adapter_model.safetensors").read_bytes() == before  # nothing was touched

    assert main(list(train(tiny_model_dir, good_data, out, "--lora-r", "4", "--overwrite"))) == 0
    assert "lora_r: 4" in (out / "config.yaml").read_text()


def test_output_directory_that_is_not_a_run(capsys, tiny_model_dir, good_data, tmp_path):
    out = tmp_path / "precious"
    out.mkdir()
    (out / "thesis.tex").write_text("years of work")
    code, err = run_cli(capsys, *train(tiny_model_dir, good_data, out, "--overwrite"))
    assert_one_line_error(code, err, "not empty and is not a tunescope run")
    assert (out / "thesis.tex").read_text() == "years of work"


def test_resume_without_a_run(capsys, tmp_path):
    code, err = run_cli(capsys, "train", "--out", str(tmp_path / "nothing"), "--resume")
    assert_one_line_error(code, err, "--resume", "holds no run to resume")


def test_bad_config_file_and_values(capsys, tiny_model_dir, good_data, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("lora_r: [unclosed\n")
    code, err = run_cli(capsys, *train(tiny_model_dir, good_data, tmp_path / "run"), "--config", str(config))
    assert_one_line_error(code, err, "run.yaml:", "invalid YAML")
    code, err = run_cli(capsys, *train(tiny_model_dir, good_data, tmp_path / "run"), "--epochs", "-1")
    assert_one_line_error(code, err, "--epochs", "greater than 0")
    missing = str(tmp_path / "x.yaml")
    code, err = run_cli(capsys, *train(tiny_model_dir, good_data, tmp_path / "run"), "--config", missing)
    assert_one_line_error(code, err, "x.yaml", "config file not found")


def test_console_script_prints_no_traceback(tmp_path):
    argv = ["train", "--data", str(tmp_path / "missing.csv"), "--out", str(tmp_path / "r")]
    done = subprocess.run([sys.executable, "-m", "tunescope", *argv], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert done.stderr.strip().endswith("missing.csv: data file not found")
    assert "Traceback" not in done.stderr
