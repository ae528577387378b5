"""`tunescope generate` on tiny random models: records, batching, resume after a crash, errors."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from tunescope.cli import main
from tunescope.data.templates import render_prompt
from tunescope.generate import GenerateConfig, generate
from tunescope.models import load_model

from conftest import PAIRS, assert_one_line, cli_run, rows_in_format, write_jsonl


@pytest.fixture
def prompts(tmp_path):
    return write_jsonl(tmp_path / "prompts.jsonl", rows_in_format("messages"))


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory, tiny_model_dir, tiny_tokenizer):
    from peft import LoraConfig, get_peft_model

    out = tmp_path_factory.mktemp("adapter")
    torch.manual_seed(5)
    config = LoraConfig(r=4, init_lora_weights=False, target_modules="all-linear")
    get_peft_model(load_model(str(tiny_model_dir)), config).save_pretrained(out)
    tiny_tokenizer.save_pretrained(out)
    return out


def read(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def run(model, prompts, out, **settings):
    config = GenerateConfig(model=str(model), data=str(prompts), out=str(out), **{"max_new_tokens": 12, **settings})
    return generate(config)


def test_records_carry_exact_ids_text_and_settings(capsys, tmp_path, prompts, adapter_dir, tiny_tokenizer):
    out = tmp_path / "responses.jsonl"
    args = ["generate", "--model", str(adapter_dir), "--data", str(prompts), "--out", str(out),
            "--max-new-tokens", "12", "--batch-size", "3"]  # fmt: skip
    assert main(args) == 0
    assert f"responses: {out} (8 generated, 0 already there)" in capsys.readouterr().out
    records = read(out)
    assert sorted(r["id"] for r in records) == sorted(f"ex-{i}" for i in range(len(PAIRS)))
    questions = dict(PAIRS)
    for record in records:
        assert record["messages"][-1]["role"] == "user" and record["instruction"] in questions
        assert record["reference"] == questions[record["instruction"]]  # the data's own answer, kept apart
        prompt = render_prompt(tiny_tokenizer, record["messages"])
        assert record["prompt"] == prompt
        assert record["prompt_token_ids"] == tiny_tokenizer(prompt, add_special_tokens=False)["input_ids"]
        ids = record["output_token_ids"]
        assert 1 <= len(ids) <= 12
        assert record["output"] == tiny_tokenizer.decode(ids, skip_special_tokens=True)
        stopped = ids[-1] == tiny_tokenizer.eos_token_id
        assert record["finish_reason"] == ("stop" if stopped else "length")
        assert tiny_tokenizer.eos_token_id not in ids[:-1]
        assert record["model"] == str(adapter_dir)
        assert record["generation"] == {"do_sample": False, "max_new_tokens": 12, "repetition_penalty": 1.0,
                                        "template": None, "precision": "fp32", "adapter": "merged"}  # fmt: skip


def test_a_model_without_a_chat_template_answers_through_the_plain_one(tmp_path, prompts, tiny_base_model_dir):
    out = tmp_path / "responses.jsonl"
    run(tiny_base_model_dir, prompts, out, max_new_tokens=4)
    records = read(out)
    assert {record["generation"]["template"] for record in records} == {"plain"}
    # Recorded with every answer, and no answer goes on past the next turn's header.
    assert {tuple(record["generation"]["stop_strings"]) for record in records} == {("\nUser:\n", "\nAssistant:\n")}
    assert not any("\nUser:\n" in record["output"] or "\nAssistant:\n" in record["output"] for record in records)
    record = next(record for record in records if record["id"] == "ex-0")
    assert record["prompt"] == "<|im_start|>User:\nWhat is the capital of France?\n\nAssistant:\n"


def test_a_run_directory_generates_like_its_adapter(tmp_path, prompts, adapter_dir):
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(adapter_dir, run_dir / "adapter")
    (run_dir / "run.json").write_text(json.dumps({"status": "complete", "artifact": "adapter"}))
    run(run_dir, prompts, tmp_path / "from-run.jsonl", batch_size=8)
    run(adapter_dir, prompts, tmp_path / "from-adapter.jsonl", batch_size=8)
    from_run = {r["id"]: r["output_token_ids"] for r in read(tmp_path / "from-run.jsonl")}
    assert from_run == {r["id"]: r["output_token_ids"] for r in read(tmp_path / "from-adapter.jsonl")}


def test_a_merged_adapter_decodes_like_the_separate_one(tmp_path, prompts, adapter_dir):
    run(adapter_dir, prompts, tmp_path / "merged.jsonl", batch_size=8)
    run(adapter_dir, prompts, tmp_path / "separate.jsonl", batch_size=8, merge_adapter=False)
    merged, separate = read(tmp_path / "merged.jsonl"), read(tmp_path / "separate.jsonl")
    assert {r["generation"]["adapter"] for r in merged} == {"merged"}
    assert {r["generation"]["adapter"] for r in separate} == {"separate"}
    by_id = {r["id"]: r["output_token_ids"] for r in separate}
    assert {r["id"]: r["output_token_ids"] for r in merged} == by_id


def test_batched_decoding_equals_one_prompt_at_a_time(tmp_path, prompts, tiny_model_dir):
    run(tiny_model_dir, prompts, tmp_path / "batched.jsonl", batch_size=8, max_new_tokens=16)
    run(tiny_model_dir, prompts, tmp_path / "single.jsonl", batch_size=1, max_new_tokens=16)
    batched = {r["id"]: r["output_token_ids"] for r in read(tmp_path / "batched.jsonl")}
    single = {r["id"]: r["output_token_ids"] for r in read(tmp_path / "single.jsonl")}
    assert batched == single
    assert len({len(record["prompt_token_ids"]) for record in read(tmp_path / "batched.jsonl")}) > 1  # padded


def test_greedy_output_is_the_argmax_continuation(tmp_path, prompts, tiny_model_dir):
    run(tiny_model_dir, prompts, tmp_path / "r.jsonl", batch_size=4)
    model = load_model(str(tiny_model_dir)).eval()
    record = read(tmp_path / "r.jsonl")[0]
    ids = list(record["prompt_token_ids"])
    for token in record["output_token_ids"]:
        with torch.no_grad():
            assert int(model(torch.tensor([ids])).logits[0, -1].argmax()) == token
        ids.append(token)


def test_a_rerun_skips_finished_records_and_redoes_a_partial_line(tmp_path, prompts, tiny_model_dir):
    out = tmp_path / "r.jsonl"
    run(tiny_model_dir, prompts, out, batch_size=3)
    complete = read(out)
    # Simulate a crash in the middle of writing the fourth record; mark the first to prove it is kept.
    kept = [{**complete[0], "output": "KEPT"}, *complete[1:3]]
    out.write_text("".join(json.dumps(r) + "\n" for r in kept) + json.dumps(complete[3])[:40])
    with pytest.warns(UserWarning, match="incomplete last line"):
        result = run(tiny_model_dir, prompts, out, batch_size=3)
    assert (result.n_new, result.n_existing) == (len(PAIRS) - 3, 3)
    records = read(out)
    assert records[:3] == kept and records[0]["output"] == "KEPT"
    assert sorted(r["id"] for r in records) == sorted(r["id"] for r in complete)
    redone = {r["id"]: r["output_token_ids"] for r in records}
    assert redone == {r["id"]: r["output_token_ids"] for r in complete}
    assert run(tiny_model_dir, prompts, out).n_new == 0  # nothing left to do


def test_a_killed_run_resumes_without_redoing_records(tmp_path, tiny_model_dir):
    many = write_jsonl(tmp_path / "many.jsonl", [{"id": f"q{i}", "instruction": q, "output": a}
                                                   for i, (q, a) in enumerate(PAIRS * 2)])  # fmt: skip
    out = tmp_path / "r.jsonl"
    command = [sys.executable, "-m", "tunescope", "generate", "--model", str(tiny_model_dir), "--data", str(many),
               "--out", str(out), "--batch-size", "1", "--max-new-tokens", "60"]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy())
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if out.exists() and out.read_text().count("\n") >= 2:
            break
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    before = out.read_text().splitlines(keepends=True)
    finished = [line for line in before if line.endswith("\n")]
    assert 2 <= len(finished) < len(PAIRS) * 2
    # A larger batch on resume is fine: batching does not change greedy outputs.
    result = generate(GenerateConfig(model=str(tiny_model_dir), data=str(many), out=str(out), batch_size=8,
                                     max_new_tokens=60))  # fmt: skip
    after = out.read_text().splitlines(keepends=True)
    assert after[: len(finished)] == finished  # earlier records untouched
    assert result.n_existing == len(finished) and result.n_new == len(PAIRS) * 2 - len(finished)
    ids = [json.loads(line)["id"] for line in after]
    assert len(ids) == len(set(ids)) == len(PAIRS) * 2


def test_sampling_is_recorded_and_seeded(tmp_path, prompts, tiny_model_dir):
    settings = {"do_sample": True, "temperature": 1.5, "top_k": 20, "seed": 7, "batch_size": 4}
    run(tiny_model_dir, prompts, tmp_path / "a.jsonl", **settings)
    run(tiny_model_dir, prompts, tmp_path / "b.jsonl", **settings)
    run(tiny_model_dir, prompts, tmp_path / "greedy.jsonl", batch_size=4)
    a, b = read(tmp_path / "a.jsonl"), read(tmp_path / "b.jsonl")
    assert [r["output_token_ids"] for r in a] == [r["output_token_ids"] for r in b]
    expected = {"do_sample": True, "max_new_tokens": 12, "repetition_penalty": 1.0, "template": None,
                "precision": "fp32", "temperature": 1.5, "top_p": 1.0, "top_k": 20, "seed": 7}  # fmt: skip
    assert a[0]["generation"] == expected
    greedy = {r["id"]: r["output_token_ids"] for r in read(tmp_path / "greedy.jsonl")}
    assert any(greedy[r["id"]] != r["output_token_ids"] for r in a)


def generate_cli(capsys, *argv):
    return cli_run(capsys, "generate", *argv)


def test_bad_inputs_give_one_line_errors(capsys, tmp_path, prompts, tiny_model_dir):
    common = ["--model", tiny_model_dir, "--data", prompts, "--max-new-tokens", "4"]
    (tmp_path / "r.txt").write_text("a file, where --out names a directory\n")
    assert_one_line(*generate_cli(capsys, *common, "--out", tmp_path / "r.txt"), "r.txt", "is a file")
    assert_one_line(*generate_cli(capsys, *common, "--out", tmp_path / "r.jsonl", "--max-new-tokens", "0"),
                    "--max-new-tokens")  # fmt: skip
    assert_one_line(*generate_cli(capsys, *common, "--out", tmp_path / "r.jsonl", "--top-p", "2"), "--top-p")
    twice = write_jsonl(tmp_path / "twice.jsonl", [{"id": "a", "instruction": "q", "output": "x"}] * 2)
    assert_one_line(*generate_cli(capsys, "--model", tiny_model_dir, "--data", twice, "--out", tmp_path / "t.jsonl"),
                    "twice.jsonl line 2", "repeats id 'a'")  # fmt: skip
    assert_one_line(*generate_cli(capsys, "--model", tmp_path / "nope", "--out", tmp_path / "n.jsonl"), "nope")

    out = tmp_path / "r.jsonl"
    assert generate_cli(capsys, *common, "--out", out) == (0, [])
    code, err = generate_cli(capsys, *common, "--out", out, "--max-new-tokens", "6")
    assert_one_line(code, err, "generated differently", "max_new_tokens (4 -> 6)", "--overwrite")
    assert generate_cli(capsys, *common, "--out", out, "--max-new-tokens", "6", "--overwrite") == (0, [])
    assert {r["generation"]["max_new_tokens"] for r in read(out)} == {6}
    out.write_text("not json\n")
    assert_one_line(*generate_cli(capsys, *common, "--out", out), "r.jsonl line 1", "invalid JSON")
