import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

from tunescope.cli import main
from tunescope.models import load_model, load_tokenizer

from conftest import rows_in_format, write_jsonl

FAST = ["--effective-batch-size", "4", "--micro-batch-size", "2", "--warmup-ratio", "0"]


def train_args(model_dir, data, out, *extra):
    return ["train", "--model", str(model_dir), "--data", str(data), "--out", str(out), *FAST, *extra]


def read_metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("method", ["lora", "full"])
@pytest.mark.parametrize("data_format", ["alpaca", "sharegpt", "messages", "prompt_completion"])
def test_train_each_method_on_each_format(tiny_model_dir, tmp_path, method, data_format, capsys):
    data = write_jsonl(tmp_path / "train.jsonl", rows_in_format(data_format))
    out = tmp_path / "run"
    assert main(train_args(tiny_model_dir, data, out, "--method", method, "--epochs", "1")) == 0

    printed = capsys.readouterr().out
    artifact = out / ("adapter" if method == "lora" else "model")
    assert f"{artifact.name}: {artifact}" in printed and "metrics:" in printed and "loss plot:" in printed
    expected = ["adapter_model.safetensors", "adapter_config.json"] if method == "lora" else ["model.safetensors"]
    for name in [*expected, "tokenizer.json", "tokenizer_config.json"]:
        assert (artifact / name).is_file(), name
    assert not list(out.rglob("*.bin")) and not list(out.rglob("*.pt")) and not list(out.rglob("*.pth"))

    summary = json.loads((out / "run.json").read_text())
    assert summary["status"] == "complete" and summary["method"] == method and summary["steps"] == 2
    rows = read_metrics(out)
    assert [row["step"] for row in rows] == [1, 2]
    for key in ("loss", "lr", "grad_norm", "tokens_per_s", "mean_token_entropy", "token_accuracy"):
        assert all(key in row for row in rows), key
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["method"] == method and config["data"] == str(data) and config["effective_batch_size"] == 4
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["seed"] == 42 and len(provenance["data"]["sha256"]) == 64
    assert provenance["data"]["format"] == data_format and provenance["data"]["template"] is None  # its own
    assert provenance["packages"]["torch"] and "git_commit" in provenance
    assert 0 < provenance["trainable_parameters"] <= provenance["total_parameters"]
    assert provenance["loss_path"] == {"logits_at_labels_only": True, "batching": "padding-free"}
    if method == "lora":
        assert provenance["trainable_parameters"] < provenance["total_parameters"] / 2


@pytest.mark.parametrize("method", ["lora", "full"])
def test_training_changes_the_model_and_lowers_the_loss(tiny_model_dir, tmp_path, method):
    data = write_jsonl(tmp_path / "train.jsonl", rows_in_format("messages"))
    out = tmp_path / "run"
    args = train_args(tiny_model_dir, data, out, "--method", method, "--epochs", "8", "--learning-rate", "3e-2")
    assert main(args) == 0
    losses = [row["loss"] for row in read_metrics(out)]
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4 - 0.5

    tokenizer = load_tokenizer(str(out))
    ids = tokenizer("What is the capital of France?", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        base_logits = load_model(str(tiny_model_dir))(ids).logits
        tuned_logits = load_model(str(out)).eval()(ids).logits
    assert (base_logits - tuned_logits).abs().max() > 1e-3


def test_a_base_model_without_a_chat_template_trains_with_the_plain_one(tiny_base_model_dir, tmp_path, capsys):
    data = write_jsonl(tmp_path / "train.jsonl", rows_in_format("messages"))
    assert main(train_args(tiny_base_model_dir, data, tmp_path / "dry", "--dry-run")) == 0
    shown = capsys.readouterr().out
    assert "template plain" in shown and "<|im_start|>User:\nWhat is the capital of France?" in shown
    out = tmp_path / "run"
    assert main(train_args(tiny_base_model_dir, data, out, "--max-steps", "1")) == 0
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["data"]["template"] == "plain"
    assert "license" not in provenance["model"]  # known only for embedded models


def test_lora_with_listed_target_modules(tiny_model_dir, tmp_path):
    data = write_jsonl(tmp_path / "train.jsonl", rows_in_format("alpaca"))
    out = tmp_path / "run"
    args = train_args(tiny_model_dir, data, out, "--max-steps", "1", "--lora-target-modules", "q_proj", "v_proj")
    assert main(args) == 0
    adapter_config = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert sorted(adapter_config["target_modules"]) == ["q_proj", "v_proj"]
    assert adapter_config["r"] == 8 and adapter_config["lora_alpha"] == 16


def test_shared_learning_rate_is_flagged(tiny_model_dir, tmp_path):
    data = write_jsonl(tmp_path / "train.jsonl", rows_in_format("alpaca"))
    with pytest.warns(UserWarning, match="both use learning rate 5e-05"):
        main(train_args(tiny_model_dir, data, tmp_path / "a", "--max-steps", "1"))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        warnings.filterwarnings("ignore", message=".*pin_memory.*")
        args = ["--max-steps", "1", "--lora-learning-rate", "2e-4", "--full-learning-rate", "2e-5"]
        assert main(train_args(tiny_model_dir, data, tmp_path / "b", *args)) == 0


def test_nan_loss_aborts_with_a_clear_message(tiny_model_dir, tmp_path, capsys):
    data = write_jsonl(tmp_path / "train.jsonl", rows_in_format("messages") * 4)
    out = tmp_path / "run"
    args = train_args(tiny_model_dir, data, out, "--method", "full", "--learning-rate", "1e30", "--max-steps", "20")
    assert main(args) == 1
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "the loss became nan" in error or "the loss became inf" in error
    assert "Traceback" not in capsys.readouterr().err
    assert not (out / "run.json").exists() and not (out / "model").exists()


def test_resume_continues_the_same_curve(tiny_model_dir, tmp_path):
    """A run cut off after a checkpoint, then resumed, logs exactly the uninterrupted run's losses."""
    import shutil

    data = write_jsonl(tmp_path / "train.jsonl", rows_in_format("messages") * 2)
    extra = [
        "--epochs",
        "3",
        "--save-steps",
        "4",
        "--save-total-limit",
        "5",
        "--lora-dropout",
        "0.1",
        "--keep-checkpoints",
    ]
    reference = tmp_path / "reference"
    assert main(train_args(tiny_model_dir, data, reference, *extra)) == 0

    crashed = tmp_path / "crashed"
    shutil.copytree(reference, crashed)
    # What a crash right after step 5 leaves: checkpoint-4 complete, no final outputs, extra log lines.
    for name in ("adapter", "run.json", "loss.png", "checkpoints/checkpoint-8", "checkpoints/checkpoint-12"):
        path = crashed / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    lines = (crashed / "metrics.jsonl").read_text().splitlines()[:5]
    (crashed / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    config = yaml.safe_load((crashed / "config.yaml").read_text())
    config["out"] = str(crashed)
    (crashed / "config.yaml").write_text(yaml.safe_dump(config))

    assert main(["train", "--out", str(crashed), "--resume"]) == 0
    assert json.loads((crashed / "run.json").read_text())["resumed_from"] == "checkpoint-4"
    assert [r["loss"] for r in read_metrics(crashed)] == [r["loss"] for r in read_metrics(reference)]
    assert [r["step"] for r in read_metrics(crashed)] == list(range(1, 13))


def test_resume_after_kill(tiny_model_dir, tmp_path):
    """Kill a real training process after its first checkpoint; --resume finishes the run."""
    data = write_jsonl(tmp_path / "train.jsonl", rows_in_format("messages") * 8)
    out = tmp_path / "run"
    args = train_args(tiny_model_dir, data, out, "--epochs", "6", "--save-steps", "5")
    process = subprocess.Popen(
        [sys.executable, "-m", "tunescope", *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    first_checkpoint = out / "checkpoints" / "checkpoint-5" / "trainer_state.json"
    deadline = time.monotonic() + 120
    while not first_checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert first_checkpoint.exists(), "the run never reached its first checkpoint"
    assert not (out / "run.json").exists(), "the run finished before it could be killed"

    assert main(["train", "--out", str(out), "--resume"]) == 0
    summary = json.loads((out / "run.json").read_text())
    assert summary["steps"] == 6 * (64 // 4) and summary["resumed_from"].startswith("checkpoint-")
    # The checkpoints served the resume; the finished run keeps its weights and metrics only.
    assert not (out / "checkpoints").exists()
    assert (out / "adapter" / "adapter_model.safetensors").is_file() and (out / "metrics.jsonl").is_file()
    steps = [row["step"] for row in read_metrics(out)]
    assert steps == list(range(1, summary["steps"] + 1))  # no gaps, no duplicates
    # A second resume of a finished run does nothing and says where the outputs are.
    assert main(["train", "--out", str(out), "--resume"]) == 0


def test_dry_run_shows_masked_examples_and_statistics(tiny_model_dir, tmp_path, capsys):
    data = write_jsonl(tmp_path / "train.jsonl", rows_in_format("alpaca"))
    out = tmp_path / "run"
    assert main(train_args(tiny_model_dir, data, out, "--dry-run")) == 0
    printed = capsys.readouterr().out
    assert printed.count("--- example ") == 3
    assert "⟦<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n⟧" in printed
    assert "The capital of France is Paris.<|im_end|>" in printed
    assert "trained_tokens:" in printed and "optimizer steps:" in printed
    assert not out.exists()


def test_progress_lines_when_not_a_terminal(tiny_model_dir, tmp_path):
    data = write_jsonl(tmp_path / "train.jsonl", rows_in_format("alpaca"))
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(
        [sys.executable, "-m", "tunescope", *train_args(tiny_model_dir, data, tmp_path / "run", "--max-steps", "2")],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "step 2/2  loss" in done.stderr
    assert "\r" not in done.stderr  # no progress bar redraws in a log file


def test_progress_bar_on_a_terminal(tiny_model_dir, tmp_path):
    import fcntl
    import pty
    import struct
    import termios

    data = write_jsonl(tmp_path / "train.jsonl", rows_in_format("alpaca"))
    argv = train_args(tiny_model_dir, data, tmp_path / "run", "--max-steps", "3")
    leader, follower = pty.openpty()
    # A fresh pty is 0 columns wide, where a progress bar draws nothing; size it like a terminal.
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    process = subprocess.Popen(
        [sys.executable, "-m", "tunescope", *argv], stdout=subprocess.DEVNULL, stderr=follower, env=os.environ
    )
    os.close(follower)
    output = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the pty closes when the process exits
            break
        if not chunk:
            break
        output += chunk
    assert process.wait(timeout=300) == 0
    text = output.decode(errors="replace")
    assert "train: 100%" in text and "3/3" in text and "loss=" in text
    assert "step 3/3  loss" not in text  # the bar replaces the plain lines


def test_shift_monitor_tracks_drift_from_the_base(tiny_model_dir, tmp_path):
    from tunescope.train.monitor import read_monitor

    data = write_jsonl(tmp_path / "train.jsonl", rows_in_format("messages"))
    monitor = [
        "--monitor-every",
        "2",
        "--monitor-prompts",
        str(data),
        "--monitor-examples",
        "3",
        "--monitor-tokens",
        "8",
    ]
    curves = {}
    for method in ("lora", "full"):
        out = tmp_path / method
        args = train_args(tiny_model_dir, data, out, "--method", method, "--epochs", "3", "--learning-rate", "3e-2")
        assert main([*args, *monitor]) == 0
        rows = read_monitor(out / "metrics.jsonl")
        assert [row["step"] for row in rows] == [0, 2, 4, 6]  # before training, every 2 steps, and the last
        assert rows[0]["monitor_kl"] < 1e-3 and rows[0]["monitor_unshifted"] == 1.0  # the base against itself
        assert rows[-1]["monitor_kl"] > rows[0]["monitor_kl"]
        assert (out / "monitor.png").read_bytes()[:4] == b"\x89PNG"
        curves[method] = rows
    assert curves["full"][-1]["monitor_kl"] > curves["lora"][-1]["monitor_kl"]


def test_shift_monitor_survives_a_resume(tiny_model_dir, tmp_path):
    import shutil

    data = write_jsonl(tmp_path / "train.jsonl", rows_in_format("messages") * 2)
    extra = [
        "--method",
        "full",
        "--epochs",
        "2",
        "--save-steps",
        "4",
        "--save-total-limit",
        "5",
        "--monitor-every",
        "2",
        "--keep-checkpoints",
    ]
    extra += ["--monitor-prompts", str(data), "--monitor-examples", "2", "--monitor-tokens", "6"]
    reference = tmp_path / "reference"
    assert main(train_args(tiny_model_dir, data, reference, *extra)) == 0
    crashed = tmp_path / "crashed"
    shutil.copytree(reference, crashed)
    for name in ("model", "run.json", "checkpoints/checkpoint-8"):
        path = crashed / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    config = yaml.safe_load((crashed / "config.yaml").read_text())
    (crashed / "config.yaml").write_text(yaml.safe_dump({**config, "out": str(crashed)}))
    assert main(["train", "--out", str(crashed), "--resume"]) == 0

    # The resumed run measures against the stored base, so its curve is the uninterrupted one.
    def curve(run):
        keep = ("step", "loss", "monitor_kl", "monitor_shifted", "monitor_unshifted")
        return [{key: row[key] for key in keep if key in row} for row in read_metrics(run)]

    assert curve(crashed) == curve(reference)
    assert sum("monitor_kl" in row for row in curve(reference)) == 5  # steps 0, 2, 4, 6, 8


def test_the_final_step_is_not_checkpointed_when_checkpoints_are_removed_anyway():
    from types import SimpleNamespace

    from tunescope.train.callbacks import NoCheckpointAtTheEnd

    callback = NoCheckpointAtTheEnd()
    for step, saved in ((4, True), (11, True), (12, False)):
        control = SimpleNamespace(should_save=True)
        state = SimpleNamespace(global_step=step, max_steps=12)
        assert callback.on_step_end(None, state, control).should_save is saved
