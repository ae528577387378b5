"""Files of prompts without answers: AlpacaEval's and just-eval's ``instruction``, ``prompt``, a lone user turn.

Wherever prompts are read they are accepted, and an answer that is there is kept as the reference;
training, which needs answers, names the record that has none.
"""

import json

import pytest

from tunescope.data import DataSettings, load_examples
from tunescope.generate.store import ResponseRecord

from conftest import assert_one_line, cli_run, write_jsonl

PROMPT_ONLY = {
    "instruction": ({"instruction": "Name three colours."}, "Name three colours."),
    "instruction+input": ({"instruction": "Translate.", "input": "bonjour"}, "Translate.\n\nbonjour"),
    "prompt": ({"prompt": "Say hello."}, "Say hello."),
    "messages": ({"messages": [{"role": "user", "content": "Is a tomato a fruit?"}]}, "Is a tomato a fruit?"),
    "conversations": ({"conversations": [{"from": "human", "value": "Why is the sky blue?"}]}, "Why is the sky blue?"),
}  # fmt: skip


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("shape", list(PROMPT_ONLY))
def test_generate_answers_each_prompt_only_format(tmp_path, tiny_model_dir, capsys, shape):
    record, user_turn = PROMPT_ONLY[shape]
    data = write_jsonl(tmp_path / "prompts.jsonl", [record, record])
    out = tmp_path / "responses.jsonl"
    code, err = cli_run(capsys, "generate", "--model", tiny_model_dir, "--data", data, "--out", out,
                        "--max-new-tokens", "3")  # fmt: skip
    assert code == 0, err
    rows = read_jsonl(out)
    assert [row["id"] for row in sorted(rows, key=lambda row: row["id"])] == ["0", "1"]
    for row in rows:
        assert row["messages"] == [{"role": "user", "content": user_turn}] and row["instruction"] == user_turn
        assert row["reference"] is None and row["output_token_ids"]


def test_answers_that_are_there_are_kept_as_references(tmp_path, tiny_model_dir, capsys):
    rows = [
        {"id": "a", "instruction": "Name three colours.", "output": "Red, green and blue."},
        {"id": "b", "instruction": "Say hello."},
        {"id": "c", "instruction": "Count to three.", "input": "in French", "output": "un, deux, trois"},
    ]
    data = write_jsonl(tmp_path / "prompts.jsonl", rows)
    out = tmp_path / "responses.jsonl"
    code, err = cli_run(capsys, "generate", "--model", tiny_model_dir, "--data", data, "--out", out,
                        "--max-new-tokens", "3", "--format", "alpaca")  # fmt: skip
    assert code == 0, err
    by_id = {row["id"]: row for row in read_jsonl(out)}
    assert by_id["a"]["reference"] == "Red, green and blue." and by_id["b"]["reference"] is None
    assert by_id["c"]["reference"] == "un, deux, trois"
    assert by_id["c"]["messages"] == [{"role": "user", "content": "Count to three.\n\nin French"}]


def test_prompt_completion_files_without_completions(tmp_path):
    rows = [{"prompt": "Say hello."}, {"prompt": [{"role": "user", "content": "Hi"}], "completion": "Hello!"}]
    data = write_jsonl(tmp_path / "prompts.jsonl", rows)
    examples = load_examples(DataSettings(data=str(data)), require_response=False).examples
    assert [example.messages for example in examples] == [
        [{"role": "user", "content": "Say hello."}],
        [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}],
    ]


@pytest.mark.parametrize("shape", list(PROMPT_ONLY))
def test_training_names_the_record_without_an_answer(tmp_path, tiny_model_dir, capsys, shape):
    answered = {"instruction": "Say hi.", "output": "Hi."} if "instruction" in shape else None
    record, _ = PROMPT_ONLY[shape]
    rows = [record] if answered is None else [answered, record]
    data = write_jsonl(tmp_path / "train.jsonl", rows)
    code, err = cli_run(capsys, "train", "--model", tiny_model_dir, "--data", data, "--out", tmp_path / "run",
                        "--max-steps", "1")  # fmt: skip
    line = f"train.jsonl line {len(rows)}"
    assert_one_line(code, err, line, "answer", "prompts alone are for `tunescope generate`")
    assert not (tmp_path / "run").exists()


def test_judged_records_read_every_prompt_shape_with_their_metadata():
    prompt = ResponseRecord.from_fields({"prompt": "Say hello.", "output": "Hi.", "category": "chat"}, 0, "f line 1")
    assert prompt.messages == [{"role": "user", "content": "Say hello."}] and prompt.tags == ("chat",)
    alpaca = ResponseRecord.from_fields(
        {"id": 7, "instruction": "Count.", "input": "to 3", "output": "1 2 3", "generator": "m"}, 1, "f line 2"
    )
    assert alpaca.messages == [{"role": "user", "content": "Count.\n\nto 3"}] and alpaca.instruction == "Count."
    assert (alpaca.id, alpaca.model, alpaca.output) == ("7", "m", "1 2 3")


def test_preflight_needs_answers_and_says_which_record_lacks_one(tmp_path, capsys):
    data = write_jsonl(tmp_path / "prompts.jsonl", [{"instruction": "Name three colours."}])
    code, err = cli_run(capsys, "preflight", "--data", data)
    assert_one_line(code, err, "prompts.jsonl line 1", "missing field 'output'")
