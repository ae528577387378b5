"""One process per output: two runs racing for one directory or file, and a lock left by `kill -9`.

Each race is made deterministic: the first run is a real `tunescope` process, and the second
starts (in this test process, so without seconds of imports) only once the first has written the
holder file that says it holds the lock. The second must stop at once with one line naming the
output and the first process; the first must finish with whole outputs.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from test_judge_http import ScriptedJudge, closed_port_url, responses_file
from tunescope.cli import main
from tunescope.errors import UserError
from tunescope.locks import OutputBusy, holder_path, lock_path, output_lock, read_holder

from conftest import PAIRS, assert_one_line, cli_run, rows_in_format, write_jsonl

ENV = {**os.environ, "PYTHONWARNINGS": "ignore"}


def start(*argv: str, env: dict | None = None) -> subprocess.Popen:
    """``tunescope ARGV`` as a process of its own."""
    command = [sys.executable, "-m", "tunescope", *map(str, argv)]
    return subprocess.Popen(command, env=env or ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_until_holding(process: subprocess.Popen, target: Path, timeout: float = 300) -> None:
    """Return once ``process`` holds ``target``'s lock (its holder file names it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (read_holder(target) or {}).get("pid") == process.pid:
            return
        if process.poll() is not None:
            out, err = process.communicate()
            pytest.fail(f"the first run ended before taking the lock (exit {process.returncode}): {err[-3000:]}")
        time.sleep(0.01)
    process.kill()
    pytest.fail("the first run never took the lock")


def finish(process: subprocess.Popen, timeout: float = 600) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


def assert_refused(code: int, err: list[str], target: Path, holder: subprocess.Popen) -> None:
    assert_one_line(code, err, str(target), f"pid {holder.pid}", "in use by", "choose another --out")


HOLD_AND_SLEEP = textwrap.dedent(
    """
    import sys, time
    from tunescope.locks import output_lock
    with output_lock(sys.argv[1]):
        print("held", flush=True)
        time.sleep(600)
    """
)


def test_a_lock_names_its_holder_and_dies_with_it(tmp_path):
    target = tmp_path / "run"
    env = {**ENV, "PYTHONPATH": os.pathsep.join(sys.path)}
    holder = subprocess.Popen([sys.executable, "-c", HOLD_AND_SLEEP, str(target)], env=env, stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == b"held"
        with pytest.raises(OutputBusy) as refused:
            with output_lock(target):
                pytest.fail("a second holder got the lock")
        message = str(refused.value)
        assert message.startswith(f"--out {target}: in use by pid {holder.pid} on ") and "\n" not in message
        assert refused.value.exit_code == 2

        holder.send_signal(signal.SIGKILL)  # no chance to release anything: the kernel drops the flock
        holder.wait()
        assert (read_holder(target) or {}).get("pid") == holder.pid  # its description is left behind ...
        with output_lock(target):  # ... but does not block the next run, which takes the lock at once
            assert read_holder(target)["pid"] == os.getpid()
    finally:
        holder.kill()
        holder.wait()
    assert not target.exists()  # the lock is beside the output, never in it
    assert lock_path(target) == tmp_path / ".run.lock" and lock_path(target).is_file()
    assert not holder_path(target).exists()  # released: nobody is named


def test_locks_are_reentrant_within_a_process(tmp_path):
    target = tmp_path / "experiment"
    with output_lock(target):
        with output_lock(target):  # an experiment's stage locking what the experiment holds
            assert read_holder(target)["pid"] == os.getpid()
        assert read_holder(target)["pid"] == os.getpid()  # still held by the outer block
    assert read_holder(target) is None


def test_an_output_whose_parent_cannot_be_created_is_a_one_line_error(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(UserError, match=r"--out .*a-file/run: cannot write there"):
        with output_lock(blocker / "run"):
            pass


# ------------------------------------------------------------------------------------------
# Races of real commands


def test_two_trainings_into_one_directory(tmp_path, tiny_model_dir, capsys):
    data = write_jsonl(tmp_path / "train.jsonl", rows_in_format("messages") * 4)
    out = tmp_path / "run"
    argv = ["train", "--model", tiny_model_dir, "--data", data, "--out", out, "--max-steps", "20",
            "--batch-size", "2", "--micro-batch-size", "2", "--save-steps", "1000"]  # fmt: skip
    first = start(*argv)
    wait_until_holding(first, out)
    code, err = cli_run(capsys, *argv)
    assert_refused(code, err, out, first)
    code, _, stderr = finish(first)
    assert code == 0, stderr[-3000:]
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in metrics] == list(range(1, 21))  # one run's 20 steps, nothing interleaved
    assert json.loads((out / "run.json").read_text())["steps"] == 20


def test_two_generations_into_one_file(tmp_path, tiny_model_dir, capsys):
    prompts = [{"id": f"p{i}", "messages": [{"role": "user", "content": f"{q} ({i})"}]} for i, (q, _) in
               enumerate(PAIRS * 5)]  # fmt: skip
    data = write_jsonl(tmp_path / "prompts.jsonl", prompts)
    out = tmp_path / "responses.jsonl"
    argv = ["generate", "--model", tiny_model_dir, "--data", data, "--out", out, "--batch-size", "1",
            "--max-new-tokens", "24"]  # fmt: skip
    first = start(*argv)
    wait_until_holding(first, out)
    code, err = cli_run(capsys, *argv)
    assert_refused(code, err, out, first)
    code, _, stderr = finish(first)
    assert code == 0, stderr[-3000:]
    ids = [json.loads(line)["id"] for line in out.read_text().splitlines()]
    assert sorted(ids) == sorted(p["id"] for p in prompts)  # every prompt answered once


def test_two_judge_runs_into_one_directory(tmp_path, capsys):
    server = ScriptedJudge(latency=0.15)
    try:
        data = responses_file(tmp_path / "answers.jsonl", {f"i{n}": f"Answer {n}." for n in range(12)})
        out = tmp_path / "judge"
        argv = ["judge", "--responses", data, "--out", out, "--backend", "openai", "--base-url", server.url,
                "--judge-model", "m", "--concurrency", "1", "--no-cache", "--bootstrap-samples", "50"]  # fmt: skip
        first = start(*argv)
        wait_until_holding(first, out)
        code, err = cli_run(capsys, *argv)
        assert_refused(code, err, out, first)
        code, _, stderr = finish(first)
        assert code == 0, stderr[-3000:]
        assert server.count() == 12  # the refused run asked nothing
        summary = json.loads((out / "judge_summary.json").read_text())
        assert summary["complete"] and summary["models"]["answers"]["complete"] == 12
        assert len((out / "judgements.jsonl").read_text().splitlines()) == 12
    finally:
        server.close()


def test_a_judge_run_killed_with_sigkill_does_not_block_the_rerun(tmp_path, capsys):
    server = ScriptedJudge(latency=0.2)
    try:
        data = responses_file(tmp_path / "answers.jsonl", {f"i{n}": f"Answer {n}." for n in range(6)})
        out = tmp_path / "judge"
        argv = ["judge", "--responses", data, "--out", out, "--backend", "openai", "--base-url", server.url,
                "--judge-model", "m", "--concurrency", "1", "--no-cache", "--no-plots"]  # fmt: skip
        first = start(*argv)
        wait_until_holding(first, out)
        first.send_signal(signal.SIGKILL)
        first.wait()
        code, err = cli_run(capsys, *argv)
        assert code == 0, err
        assert json.loads((out / "judge_summary.json").read_text())["complete"] is True
    finally:
        server.close()


def tiny_grid(root: Path, model_dir: Path, judge: dict | None = None) -> Path:
    prompts = [{"id": f"p{i}", "messages": [{"role": "user", "content": q}]} for i, (q, _) in enumerate(PAIRS[:3])]
    write_jsonl(root / "prompts.jsonl", prompts)
    write_jsonl(root / "train.jsonl", rows_in_format("messages"))
    config = {
        "models": [str(model_dir)], "methods": ["lora"], "datasets": [str(root / "train.jsonl")],
        "train": {"epochs": 1, "batch_size": 4, "micro_batch_size": 4, "max_length": 64, "save_steps": 100},
        "eval": {"prompts": str(root / "prompts.jsonl"), "max_new_tokens": 6},
        "borrow": False, "probes": {"enabled": False}, "judge": judge,
    }  # fmt: skip
    path = root / ("grid-judged.yaml" if judge else "grid.yaml")
    path.write_text(json.dumps(config))
    return path


def test_two_experiments_into_one_directory_then_a_judge_that_does_not_answer(tmp_path, tiny_model_dir, capsys):
    out = tmp_path / "run"
    grid = tiny_grid(tmp_path, tiny_model_dir)
    first = start("experiment", grid, "--out", out, "--no-report")
    wait_until_holding(first, out)
    code, err = cli_run(capsys, "experiment", grid, "--out", out, "--no-report")
    assert_refused(code, err, out, first)
    code, _, stderr = finish(first)
    assert code == 0, stderr[-3000:]
    manifest = json.loads((out / "experiment.json").read_text())
    assert manifest["complete"] is True and len(list((out / "done").glob("*.json"))) == 5

    # The same grid with a judge whose endpoint is down: everything else is reused, the judge stage
    # is left incomplete (not marked done), the command says so (exit 3) and the report too.
    url = closed_port_url()
    server = None
    try:
        judge = {"backend": "openai", "base_url": url, "judge_model": "m", "max_retries": 0, "concurrency": 1,
                 "bootstrap_samples": 50, "cache_dir": str(tmp_path / "cache")}  # fmt: skip
        judged = tiny_grid(tmp_path, tiny_model_dir, judge)
        code = main(["experiment", str(judged), "--out", str(out)])
        captured = capsys.readouterr()
        assert code == 3, captured.err
        last = [line for line in captured.err.splitlines() if line.startswith("tunescope experiment:")]
        assert len(last) == 1 and last[0].startswith("tunescope experiment: incomplete: 1 stage(s) left incomplete")
        assert "n=all: incomplete: 6 of 6 judge requests got no reply (connection refused: 6)" in captured.err
        assert "finished earlier, skipped" in captured.err  # training, generation and shift were not redone
        manifest = json.loads((out / "experiment.json").read_text())
        assert manifest["complete"] is False
        assert "incomplete" in manifest["cells"][0]["stages"]["judge"]
        assert not any(path.name.startswith("judge-") for path in (out / "done").glob("*.json"))
        report = json.loads((out / "report.json").read_text())
        assert any("A judge run is incomplete" in note for note in report["notes"])

        # The endpoint is up now, at the same address: rerunning the same command completes the judge stage.
        server = ScriptedJudge(port=int(url.rsplit(":", 1)[1].split("/")[0]))
        assert main(["experiment", str(judged), "--out", str(out)]) == 0
        manifest = json.loads((out / "experiment.json").read_text())
        assert manifest["complete"] is True
        summary = json.loads(
            (out / manifest["cells"][0]["stages"]["judge"]["dir"] / "judge/judge_summary.json").read_text()
        )
        assert summary["complete"] and [m["complete"] for m in summary["models"].values()] == [3, 3]
        # Each distinct request asked once (the tiny models may give identical answers, asked once for both).
        assert 3 <= server.count() == len({request["digest"] for request in server.requests}) <= 6
        report = json.loads((out / "report.json").read_text())
        assert not any("A judge run is incomplete" in note for note in report["notes"])
    finally:
        if server is not None:
            server.close()
