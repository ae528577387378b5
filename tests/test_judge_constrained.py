"""A local judge whose decoding is constrained to the reply schema: a random tiny model still replies in it."""

import json

import pytest

from tunescope.judge import ASPECTS, JudgeConfig, judge
from tunescope.judge.parsing import parse_reply
from tunescope.judge.prompts import pairwise_messages, reply_schema, score_messages
from tunescope.llm import BackendError
from tunescope.llm.constrained import bounded_schema, free_strings, skeleton_tokens, string_budget, tokens_needed
from tunescope.llm.local import HFBackend

from conftest import PAIRS, write_jsonl


def test_the_budget_leaves_room_for_the_skeleton_and_bounded_strings(tiny_tokenizer):
    schema = reply_schema("score")
    assert len(free_strings(schema)) == len(ASPECTS)  # one reason per aspect; scores are not free text
    skeleton = skeleton_tokens(tiny_tokenizer, schema)
    budget = string_budget(tiny_tokenizer, schema, 400)
    assert budget > 0 and tokens_needed(tiny_tokenizer, schema, budget) <= 400 < tokens_needed(
        tiny_tokenizer, schema, budget + 1
    )
    assert tokens_needed(tiny_tokenizer, schema, 0) > skeleton
    bounded = bounded_schema(schema, 12)
    reason = bounded["properties"]["depth"]["properties"]["reason"]
    assert reason["maxLength"] == 12 and reason["pattern"].startswith("^[")
    assert "maxLength" not in schema["properties"]["depth"]["properties"]["reason"]  # the original is untouched


@pytest.mark.parametrize("mode", ["score", "safety", "pairwise"])
def test_a_random_model_replies_in_the_schema(tiny_model_dir, mode):
    backend = HFBackend(str(tiny_model_dir), max_tokens=400)
    for question, answer in PAIRS[:3]:
        conversation = [{"role": "user", "content": question}]
        messages = (
            pairwise_messages(conversation, answer, "No idea.")
            if mode == "pairwise"
            else score_messages(mode, conversation, answer)
        )
        reply = backend.complete(messages, reply_schema(mode))
        assert reply.finish_reason == "stop" and reply.usage["completion_tokens"] <= 400
        data = json.loads(reply.text)  # strict JSON, no repair needed
        aspects = ("safety",) if mode == "safety" else ASPECTS
        parsed = parse_reply(mode, reply.text, aspects)
        assert parsed.status == "ok" and parsed.repairs == [], reply.text
        if mode == "pairwise":
            assert set(parsed.choices) == set(aspects) and set(data) == {"reason", *aspects}
        else:
            assert all(1 <= score <= 5 for score in parsed.scores.values()) and set(parsed.scores) == set(aspects)


def test_a_budget_too_small_for_the_schema_is_refused(tiny_model_dir):
    backend = HFBackend(str(tiny_model_dir), max_tokens=20)
    messages = score_messages("score", [{"role": "user", "content": "Hi"}], "Hello")
    with pytest.raises(BackendError, match="--max-tokens 20 is too small .* needs at least"):
        backend.complete(messages, reply_schema("score"))


def test_unconstrained_backend_ignores_the_schema(tiny_model_dir):
    backend = HFBackend(str(tiny_model_dir), max_tokens=6, constrained=False)
    assert backend.identity()["constrained"] is None
    reply = backend.complete(score_messages("score", [{"role": "user", "content": "Hi"}], "Hello"))
    assert reply.usage["completion_tokens"] <= 6
    assert HFBackend(str(tiny_model_dir)).identity()["constrained"].startswith("llguidance ")


def test_judge_with_a_random_local_model_scores_every_item(tiny_model_dir, tmp_path):
    data = write_jsonl(
        tmp_path / "answers.jsonl",
        [{"id": f"q{i}", "instruction": question, "output": answer} for i, (question, answer) in enumerate(PAIRS)],
    )
    settings = JudgeConfig(
        responses=[str(data)], out=str(tmp_path / "judge"), backend="hf", judge_model=str(tiny_model_dir),
        max_tokens=400, cache_dir=str(tmp_path / "cache"), bootstrap_samples=50,
    )  # fmt: skip
    with pytest.warns(UserWarning, match="stand-in"):
        result = judge(settings)
    records = list(result.stats.records.values())
    assert len(records) == len(PAIRS)
    for record in records:
        assert record["failures"] == {} and set(record["scores"]) == set(ASPECTS), record["raw"]
        assert all(1 <= score <= 5 for score in record["scores"].values())
    summary = result.summary
    assert summary["stand_in_judge"] is True
    assert summary["models"]["answers"]["failures"]["aspect_failures"] == 0
