"""Several processes under `accelerate launch`: training, generation, shift and judging give one process's results.

Each launched test starts two real CPU processes that talk over gloo, with the launcher users run:
``accelerate launch --cpu --num_processes 2``. With accelerate 1.15 that starts two processes only
through MPI (``--mpirun_hostfile``; ``make test`` installs Open MPI where it can, see the Makefile);
without it, ``--cpu`` quietly starts a single process (accelerate issue #2741), so the tests then
use the torchrun path, ``--multi_gpu`` with ``ACCELERATE_USE_CPU=1`` telling accelerate they are CPU
processes. A launch costs several seconds of imports per process, so each command is launched once.
"""

import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import load_file

from tunescope.cli import main
from tunescope.distributed import busy_part_files, process_state, require_parts_visible, require_visible
from tunescope.errors import UserError
from tunescope.generate import GenerateConfig, generate
from tunescope.generate.vllm_backend import finished_output
from tunescope.models import load_model
from tunescope.shift import ShiftConfig, compute_shift
from tunescope.shift.pipeline import parts_dir as shift_parts_dir
from tunescope.train.pipeline import parameter_sharding

from conftest import rows_in_format, write_jsonl

COMMON = ["--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
MPIRUN = shutil.which("mpirun")


def launcher(tmp_dir: Path) -> tuple[list[str], dict[str, str]]:
    """The ``accelerate launch`` command line for two CPU processes, and its environment."""
    accelerate = [sys.executable, "-m", "accelerate.commands.launch"]
    if MPIRUN:
        hostfile = tmp_dir / "hostfile"
        hostfile.write_text("localhost slots=2\n")
        command = [*accelerate, "--cpu", *COMMON, "--mpirun_hostfile", str(hostfile), "-m", "tunescope"]
        return command, {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}  # CI runs as root
    command = [*accelerate, "--multi_gpu", *COMMON, "--main_process_port", "0", "-m", "tunescope"]
    return command, {"ACCELERATE_USE_CPU": "1"}


RTOL, ATOL = 1e-5, 1e-7  # float32 sums in a different order (thread counts differ) stay far inside this


def launch(*args) -> str:
    """Run ``tunescope ARGS`` as two CPU processes; their combined stdout."""
    command, extra_env = launcher(Path(tempfile.mkdtemp()))
    env = {**os.environ, **extra_env, "PYTHONWARNINGS": "ignore"}
    done = subprocess.run([*command, *map(str, args)], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-6000:]
    return done.stdout


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def assert_close(a, b, where="") -> None:
    """Equal structures; floats within RTOL/ATOL."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for key in a:
            assert_close(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list | tuple):
        assert isinstance(b, list | tuple) and len(a) == len(b), where
        for index, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_close(x, y, f"{where}[{index}]")
    elif isinstance(a, float) and not isinstance(b, bool):
        assert math.isclose(a, b, rel_tol=RTOL, abs_tol=ATOL) or (math.isnan(a) and math.isnan(b)), (where, a, b)
    else:
        assert a == b, (where, a, b)


@pytest.fixture(scope="module")
def tuned(tmp_path_factory, tiny_model_dir, tiny_tokenizer):
    """A LoRA adapter on the tiny model (non-zero, so it shifts), the prompts, and its greedy responses."""
    from peft import LoraConfig, get_peft_model

    root = tmp_path_factory.mktemp("sharded")
    torch.manual_seed(11)
    config = LoraConfig(r=4, lora_alpha=8, init_lora_weights=False, target_modules="all-linear")
    get_peft_model(load_model(str(tiny_model_dir)), config).save_pretrained(root / "adapter")
    tiny_tokenizer.save_pretrained(root / "adapter")
    prompts = write_jsonl(root / "prompts.jsonl", rows_in_format("messages"))
    responses = root / "responses.jsonl"
    generate(GenerateConfig(model=str(root / "adapter"), data=str(prompts), out=str(responses), batch_size=3,
                            max_new_tokens=16))  # fmt: skip
    return root


# ------------------------------------------------------------------------------------------
# Training: DDP on two processes against one process with the same effective batch


def train_args(model, data, out, micro_batch, *extra):
    return [
        "train", "--model", str(model), "--data", str(data), "--out", str(out), "--epochs", "1",
        "--effective-batch-size", "4", "--micro-batch-size", str(micro_batch), "--warmup-ratio", "0",
        "--learning-rate", "1e-2", *extra,
    ]  # fmt: skip


@pytest.mark.parametrize("method", ["lora", "full"])
def test_ddp_training_follows_the_single_process_run(tmp_path, tiny_model_dir, method, capsys):
    data = write_jsonl(tmp_path / "train.jsonl", rows_in_format("messages") * 2)  # 16 examples, 4 steps
    extra = ["--method", method]
    if method == "lora":  # the live monitor runs on the main process only, which DDP allows
        extra += ["--monitor-every", "2", "--monitor-prompts", str(data), "--monitor-examples", "2",
                  "--monitor-tokens", "4"]  # fmt: skip
    # Why the data order matches: the Trainer's shuffle is accelerate's SeedableRandomSampler with the
    # same data seed in every process, so both runs draw the same permutation. One process takes
    # micro-batches of 2 (positions 0-1, 2-3, ...); under DDP the micro-batches of 1 are dealt out
    # round-robin (BatchSamplerShard), process 0 taking positions 0, 2, ... and process 1 positions
    # 1, 3, ... So with 2 accumulation steps in both, optimizer step k sees the same 4 examples, and
    # DDP's averaged gradient is the single process's gradient up to float rounding.
    assert main(train_args(tiny_model_dir, data, tmp_path / "single", 2, *extra)) == 0
    assert main(train_args(tiny_model_dir, data, tmp_path / "reshuffled", 2, *extra, "--seed", "7")) == 0
    capsys.readouterr()
    printed = launch(*train_args(tiny_model_dir, data, tmp_path / "ddp", 1, *extra))

    artifact = "adapter" if method == "lora" else "model"
    assert printed.count(f"{artifact}: ") == 1 and printed.count("metrics: ") == 1  # the main process reports
    single, ddp, reshuffled = (
        read_jsonl(tmp_path / name / "metrics.jsonl") for name in ("single", "ddp", "reshuffled")
    )
    assert [row["step"] for row in ddp] == [row["step"] for row in single]
    # Non-padding tokens seen after each step: the same examples in the same steps.
    assert [row.get("tokens_seen") for row in ddp] == [row.get("tokens_seen") for row in single]
    for ours, theirs in zip(ddp, single, strict=True):
        for key in ("loss", "grad_norm", "monitor_kl", "monitor_shifted"):
            if key in theirs:
                assert math.isclose(ours[key], theirs[key], rel_tol=1e-4, abs_tol=1e-6), (ours["step"], key)
    assert sum("monitor_kl" in row for row in ddp) == (3 if method == "lora" else 0)
    # The comparison can fail: another shuffle changes both the examples per step and the losses.
    assert [row.get("tokens_seen") for row in reshuffled] != [row.get("tokens_seen") for row in single]
    assert max(abs(a["loss"] - b["loss"]) for a, b in zip(reshuffled, single, strict=True) if "loss" in b) > 1e-2

    summary = json.loads((tmp_path / "ddp" / "run.json").read_text())
    assert summary["processes"] == 2 and summary["steps"] == 4
    provenance = json.loads((tmp_path / "ddp" / "provenance.json").read_text())
    assert provenance["processes"] == {"count": 2, "engine": "DistributedType.MULTI_CPU"}
    weights = "adapter_model.safetensors" if method == "lora" else "model.safetensors"
    ours, theirs = (load_file(str(tmp_path / name / artifact / weights)) for name in ("ddp", "single"))
    assert ours.keys() == theirs.keys()
    for name, tensor in theirs.items():
        assert torch.allclose(ours[name], tensor, rtol=1e-4, atol=1e-6), name
    assert not list((tmp_path / "ddp").glob(".*.tmp"))  # the temporary artifact was renamed away


def test_the_monitor_is_refused_where_parameters_are_sharded(tmp_path, tiny_model_dir, monkeypatch, capsys):
    data = write_jsonl(tmp_path / "train.jsonl", rows_in_format("messages"))
    args = train_args(tiny_model_dir, data, tmp_path / "run", 2, "--monitor-every", "2", "--monitor-prompts", str(data))
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "2")
    assert parameter_sharding() is None  # ZeRO-2 keeps whole parameters on every process
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "3")
    assert parameter_sharding() == "DeepSpeed ZeRO-3"
    assert main(args) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "DeepSpeed ZeRO-3" in error and "--monitor-every 0" in error
    monkeypatch.delenv("ACCELERATE_USE_DEEPSPEED")
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    assert main(args) == 2
    assert "FSDP shards it" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # refused before the run directory was touched


def test_processes_that_did_not_join_a_group_are_refused(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(UserError, match="ACCELERATE_USE_CPU=1"):
        process_state()


def test_a_part_the_main_process_cannot_see_is_an_error(tmp_path):
    """On several machines without a shared filesystem, a missing part must not be joined as if complete."""
    state = SimpleNamespace(num_processes=4)
    assert [p.name for p in busy_part_files(tmp_path, state, 2)] == ["rank-00000.jsonl", "rank-00001.jsonl"]
    assert len(busy_part_files(tmp_path, state, 9)) == 4
    (tmp_path / "rank-00000.jsonl").write_text("")
    require_visible(busy_part_files(tmp_path, state, 1))
    require_parts_visible(tmp_path, state, 1)
    with pytest.raises(UserError, match="rank-00001.jsonl: written by another process but not visible here"):
        require_visible(busy_part_files(tmp_path, state, 2))
    with pytest.raises(UserError, match="rank-00001.jsonl: written by another process but not visible here"):
        require_parts_visible(tmp_path, state, 2)


# ------------------------------------------------------------------------------------------
# Generation


def test_sharded_generation_resumes_and_writes_the_single_process_file(tmp_path, tuned):
    reference = read_jsonl(tuned / "responses.jsonl")
    out = tmp_path / "responses.jsonl"
    # What an interrupted two-process run leaves: process 1 had finished the first batch (the three
    # longest prompts) into its part file; one record is marked to show it is kept, not redone.
    parts = out.with_name(out.name + ".parts")
    parts.mkdir()
    write_jsonl(parts / "rank-00001.jsonl", [{**reference[0], "output": "KEPT"}, *reference[1:3]])

    printed = launch("generate", "--model", tuned / "adapter", "--data", tuned / "prompts.jsonl", "--out", out,
                     "--batch-size", "3", "--max-new-tokens", "16")  # fmt: skip
    assert printed.count("responses: ") == 1 and "(5 generated, 3 already there, 2 processes)" in printed
    records = read_jsonl(out)
    assert [r["id"] for r in records] == [r["id"] for r in reference]  # the single-process order
    assert records[0]["output"] == "KEPT"
    assert records[1:] == reference[1:]  # ids, token ids, text, settings: identical
    assert not parts.exists()


def test_part_files_of_any_process_count_are_joined_in_generation_order(tmp_path, tuned):
    """One process finishing what three processes left, in the file order one process writes."""
    reference = read_jsonl(tuned / "responses.jsonl")
    out = tmp_path / "responses.jsonl"
    parts = out.with_name(out.name + ".parts")
    parts.mkdir()
    write_jsonl(parts / "rank-00002.jsonl", [reference[6], reference[7]])
    # A part whose last append was cut off by the crash: the torn record is generated again.
    (parts / "rank-00000.jsonl").write_text(json.dumps(reference[3]) + "\n" + json.dumps(reference[4])[:30])
    config = GenerateConfig(model=str(tuned / "adapter"), data=str(tuned / "prompts.jsonl"), out=str(out),
                            batch_size=3, max_new_tokens=16)  # fmt: skip
    with pytest.warns(UserWarning, match="incomplete last line"):
        result = generate(config)
    assert (result.n_new, result.n_existing) == (5, 3)
    assert read_jsonl(out) == reference and not parts.exists()
    assert generate(config).n_new == 0


# ------------------------------------------------------------------------------------------
# Token shift


def shift_config(tuned, base, out):
    return ShiftConfig(base=str(base), tuned=str(tuned / "adapter"), responses=str(tuned / "responses.jsonl"),
                       out=str(out), batch_size=3, bootstrap_samples=50)  # fmt: skip


def assert_same_tokens(path_a, path_b) -> None:
    a, b = pq.read_table(path_a).to_pandas(), pq.read_table(path_b).to_pandas()
    assert list(a.columns) == list(b.columns) and len(a) == len(b) > 0
    for column in a.columns:
        x, y = a[column].to_numpy(), b[column].to_numpy()
        if x.dtype.kind == "f":
            assert np.allclose(x, y, rtol=RTOL, atol=ATOL, equal_nan=True), column
        elif x.dtype == object and x[0] is not None and not isinstance(x[0], str):  # top-k lists
            assert np.allclose(np.stack(x), np.stack(y), rtol=RTOL, atol=ATOL), column
        else:
            assert (x == y).all() or all(p == q for p, q in zip(x, y, strict=True)), column


def test_sharded_shift_equals_the_single_process_run(tmp_path, tuned, tiny_model_dir):
    single = compute_shift(shift_config(tuned, tiny_model_dir, tmp_path / "single"))
    printed = launch("shift", "--base", tiny_model_dir, "--tuned", tuned / "adapter", "--responses",
                     tuned / "responses.jsonl", "--out", tmp_path / "sharded", "--batch-size", "3",
                     "--bootstrap-samples", "50")  # fmt: skip
    assert printed.count("summary: ") == 1 and "on 2 processes" in printed
    sharded = tmp_path / "sharded"
    assert_same_tokens(single.tokens, sharded / "tokens.parquet")  # same rows, same order, same numbers
    assert (sharded / "examples.jsonl").read_text() == single.examples.read_text()
    ours = json.loads((sharded / "summary.json").read_text())
    assert ours["throughput"]["processes"] == 2 and single.summary["throughput"]["processes"] == 1
    assert ours["models"]["pairing"] == single.summary["models"]["pairing"] == "disable_adapter"
    different = {"throughput", "models", "settings"}  # timing, the device name ("cpu:0") and --out
    assert_close({k: v for k, v in ours.items() if k not in different},
                 {k: v for k, v in single.summary.items() if k not in different})  # fmt: skip
    assert (sharded / "viewer.html").is_file() and (sharded / "run.json").is_file()
    assert not shift_parts_dir(sharded).exists()


def test_an_interrupted_shift_rescores_only_the_missing_batches(tmp_path, tuned, tiny_model_dir):
    reference = compute_shift(shift_config(tuned, tiny_model_dir, tmp_path / "reference"))
    calls = []

    def stop_in_the_second_batch(positions):
        calls.append(positions)
        if len(calls) == 2:
            raise KeyboardInterrupt

    config = shift_config(tuned, tiny_model_dir, tmp_path / "shift")
    with pytest.raises(KeyboardInterrupt):
        compute_shift(config, progress=stop_in_the_second_batch)
    parts = shift_parts_dir(tmp_path / "shift")
    assert sorted(p.name for p in parts.glob("batch-*")) == ["batch-000000.jsonl", "batch-000000.parquet"]
    assert not (tmp_path / "shift").exists()

    scored = []
    result = compute_shift(config, progress=scored.append)
    assert sum(scored) == reference.summary["n_tokens"] - calls[0]  # the first batch was not scored again
    assert result.summary["throughput"]["tokens_scored"] == sum(scored)
    assert_same_tokens(reference.tokens, result.tokens)
    assert result.examples.read_text() == reference.examples.read_text()
    assert not parts.exists()

    # Leftover batches from other settings are not mixed in.
    with pytest.raises(KeyboardInterrupt):
        calls.clear()
        compute_shift(config.model_copy(update={"out": str(tmp_path / "other")}), progress=stop_in_the_second_batch)
    other = config.model_copy(update={"out": str(tmp_path / "other"), "top_k": 5})
    with pytest.warns(UserWarning, match="other inputs or settings"):
        fresh = compute_shift(other, progress=scored.append)
    assert fresh.summary["throughput"]["tokens_scored"] == reference.summary["n_tokens"]


# ------------------------------------------------------------------------------------------
# Judging with a local judge model on each process


def judge_args(tuned, out):
    return ["judge", "--responses", tuned / "responses.jsonl", "--judge-model", tuned / "adapter", "--max-new-tokens",
            "320", "--no-cache", "--bootstrap-samples", "50", "--no-plots", "--out", out]  # fmt: skip


def judgements(out):
    volatile = {"time", "latency_s"}
    return [{k: v for k, v in record.items() if k not in volatile} for record in read_jsonl(out / "judgements.jsonl")]


@pytest.mark.filterwarnings("ignore:Scores come from a small stand-in judge")
def test_sharded_judging_equals_the_single_process_run(tmp_path, tuned, capsys):
    assert main([str(a) for a in judge_args(tuned, tmp_path / "single")]) == 0
    capsys.readouterr()
    printed = launch(*judge_args(tuned, tmp_path / "sharded"))
    assert printed.count("summary: ") == 1
    single, sharded = judgements(tmp_path / "single"), judgements(tmp_path / "sharded")
    assert len(single) == 8 and sharded == single  # same replies, parsed the same, in task order
    ours, theirs = (json.loads((tmp_path / name / "judge_summary.json").read_text()) for name in ("sharded", "single"))
    assert ours["this_run"] == theirs["this_run"] == {"resumed": 0, "from_cache": 0, "sent": 8, "request_errors": 0}
    assert_close(ours, theirs)
    assert not (tmp_path / "sharded" / "judgements.parts").exists()


@pytest.mark.filterwarnings("ignore:Scores come from a small stand-in judge")
def test_judging_resumes_from_the_part_logs_of_a_crashed_run(tmp_path, tuned, capsys):
    reference = tmp_path / "reference"
    assert main([str(a) for a in judge_args(tuned, reference)]) == 0
    crashed = tmp_path / "crashed"
    shutil.copytree(reference, crashed)
    lines = (crashed / "judgements.jsonl").read_text().splitlines(keepends=True)
    (crashed / "judgements.jsonl").write_text("".join(lines[:3]))
    (crashed / "judgements.parts").mkdir()
    (crashed / "judgements.parts" / "rank-00001.jsonl").write_text("".join(lines[5:7]))
    (crashed / "judge_summary.json").unlink()
    capsys.readouterr()
    assert main([str(a) for a in judge_args(tuned, crashed)]) == 0
    summary = json.loads((crashed / "judge_summary.json").read_text())
    assert summary["this_run"] == {"resumed": 5, "from_cache": 0, "sent": 3, "request_errors": 0}
    by_key = {record["key"]: record for record in judgements(crashed)}
    assert by_key == {record["key"]: record for record in judgements(reference)}
    assert not (crashed / "judgements.parts").exists()


# ------------------------------------------------------------------------------------------
# One lock per launch


HOLD_AND_SLEEP = """
import sys, time
from tunescope.locks import output_lock
with output_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(600)
"""


def test_a_launch_refused_by_the_lock_stops_every_process_and_says_so_once(tmp_path, tuned):
    out = tmp_path / "shift"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    holder = subprocess.Popen([sys.executable, "-c", HOLD_AND_SLEEP, str(out)], env=env, stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == b"held"
        command, extra_env = launcher(tmp_path)
        argv = ["shift", "--base", tuned / "adapter", "--tuned", tuned / "adapter",
                "--responses", tuned / "responses.jsonl", "--out", out]  # fmt: skip
        # Both processes must end (a process left waiting for the other would hit the timeout).
        done = subprocess.run(
            [*command, *map(str, argv)], capture_output=True, text=True, timeout=600,
            env={**os.environ, **extra_env, "PYTHONWARNINGS": "ignore"},
        )  # fmt: skip
    finally:
        holder.kill()
        holder.wait()
    assert done.returncode != 0
    said = [line for line in (done.stdout + done.stderr).splitlines() if line.startswith("tunescope shift:")]
    # The main process speaks for both. (MPI may stop the other process before it could print a
    # second line, so a regression does not always show here; the line is never missing.)
    assert len(said) == 1, done.stderr[-4000:]
    assert said[0].startswith(f"tunescope shift: error: --out {out}: in use by pid {holder.pid} ")
    assert not out.exists()  # no process went on to write


# ------------------------------------------------------------------------------------------
# The optional vLLM backend


def test_vllm_backend_is_a_clear_error_without_vllm(tmp_path, tuned, capsys, monkeypatch):
    from tunescope.generate import vllm_backend

    monkeypatch.setattr(vllm_backend, "vllm_available", lambda: False)
    code = main(["generate", "--model", str(tuned / "adapter"), "--data", str(tuned / "prompts.jsonl"),
                 "--out", str(tmp_path / "r.jsonl"), "--backend", "vllm"])  # fmt: skip
    errors = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("warning:")]
    assert code == 2 and len(errors) == 1 and "vLLM is not installed" in errors[0] and "--backend hf" in errors[0]
    assert not (tmp_path / "r.jsonl").exists()
    settings = GenerateConfig(model="m", out="r.jsonl", backend="vllm")
    assert settings.decoding("bf16")["backend"] == "vllm"
    assert "backend" not in GenerateConfig(model="m", out="r.jsonl").decoding("bf16")  # old files still resume


@pytest.mark.parametrize(
    ("token_ids", "finish_reason", "stop_reason", "expected"),
    [
        ([5, 6, 2, 9], "stop", None, ([5, 6, 2], "stop")),  # the stop token kept, anything after it cut
        ([5, 6], "stop", None, ([5, 6, 2], "stop")),  # EOS left out of the ids: put back
        ([5, 6], "stop", 3, ([5, 6, 3], "stop")),  # another stop id left out: named by stop_reason
        ([5, 6, 7], "length", None, ([5, 6, 7], "length")),
    ],
)
def test_vllm_outputs_are_recorded_like_transformers_outputs(token_ids, finish_reason, stop_reason, expected):
    assert finished_output(token_ids, finish_reason, stop_reason, [2, 3], eos_id=2) == expected
