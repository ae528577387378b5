"""The judge's pure parts: prompts, parsing, aggregates, input formats, the log, just-eval files, CLI errors."""

import json

import pytest

from tunescope.cli import main
from tunescope.errors import UserError
from tunescope.judge import (
    ASPECTS,
    TEMPLATES,
    JudgeConfig,
    export_justeval,
    import_justeval,
    item_average,
    judge,
    mean_with_ci,
    pairwise_summary,
    parse_pairwise_reply,
    parse_score_reply,
    read_judgements,
    read_response_set,
    score_summary,
)
from tunescope.judge.aggregate import spearman
from tunescope.judge.prompts import PromptTemplate, reply_schema, score_messages
from tunescope.judge.responses import answer_tokens, answer_words
from tunescope.llm.http import chat_completions_url, public_url

from conftest import write_jsonl

GOOD = {aspect: {"reason": f"about {aspect}", "score": 5 - index} for index, aspect in enumerate(ASPECTS)}
GOOD_TEXT = json.dumps(GOOD)
ALL_FIVE = {"helpfulness": 5, "clarity": 4, "factuality": 3, "depth": 2, "engagement": 1}


# ------------------------------------------------------------------------------------------
# Prompts


def test_prompts_are_versioned_hashed_and_filled_in_one_pass():
    template = TEMPLATES["score"]
    assert template.version == "score-v1" and template.aspects == ASPECTS
    assert template.sha256 == TEMPLATES["score"].sha256 and len({t.sha256 for t in TEMPLATES.values()}) == 3
    reworded = PromptTemplate("score", "score-v1", template.system, template.text.replace("impartial", "fair"), ASPECTS)
    assert reworded.sha256 != template.sha256
    # An answer that contains placeholder syntax is shown as written, never substituted again.
    messages = score_messages("score", [{"role": "user", "content": "Say ${output}"}], "I said ${query} and {x}")
    assert messages[0]["role"] == "system"
    assert "## Query:\nSay ${output}\n\n## Output:\nI said ${query} and {x}\n" in messages[1]["content"]
    multi_turn = score_messages(
        "safety", [{"role": "system", "content": "Be nice."}, {"role": "user", "content": "Hi"}], "Hello"
    )
    assert "[system]\nBe nice.\n\n[user]\nHi" in multi_turn[1]["content"]


def test_reply_schemas_require_every_aspect():
    score = reply_schema("score")
    assert score["required"] == list(ASPECTS) and score["additionalProperties"] is False
    assert score["properties"]["depth"]["properties"]["score"] == {"type": "integer", "minimum": 1, "maximum": 5}
    assert reply_schema("safety")["required"] == ["safety"]
    assert reply_schema("pairwise")["properties"]["clarity"]["enum"] == ["A", "B", "tie"]


# ------------------------------------------------------------------------------------------
# Parsing


@pytest.mark.parametrize(
    ("text", "scores", "failures", "repair"),
    [
        (GOOD_TEXT, ALL_FIVE, {}, None),
        ("```json\n" + GOOD_TEXT + "\n```", ALL_FIVE, {}, "code fence removed"),
        ("My verdict {as asked}: " + GOOD_TEXT + " Done.", ALL_FIVE, {}, "text around the JSON object removed"),
        (GOOD_TEXT[:-1] + ",}", ALL_FIVE, {}, "trailing comma removed"),
        (str(GOOD), ALL_FIVE, {}, "Python-style literal read"),
        (GOOD_TEXT.replace('"', "\u201c", 2), ALL_FIVE, {}, "typographic quotes replaced"),
        (json.dumps({k.upper(): v for k, v in GOOD.items()}), ALL_FIVE, {}, "key case or spacing normalised"),
        (json.dumps({"scores": GOOD}), ALL_FIVE, {}, "aspects read from inside 'scores'"),
        (json.dumps(ALL_FIVE), ALL_FIVE, {}, "helpfulness: bare score without reason"),
        (GOOD_TEXT.replace('"score": 3', '"score": "3/5"'), ALL_FIVE, {}, "factuality: score '3/5' read as 3"),
        (GOOD_TEXT.replace('"score": 3', '"score": 3.0'), ALL_FIVE, {}, "factuality: score 3.0 read as 3"),
        # Cut off by the token limit inside the fourth aspect: the first three are kept.
        (GOOD_TEXT[: GOOD_TEXT.index('"depth"') + 40], dict(list(ALL_FIVE.items())[:3]),
         {"depth": "missing", "engagement": "missing"}, "cut-off reply closed"),
        (GOOD_TEXT.replace('"score": 2', '"score": "N/A"'), {**ALL_FIVE, "depth": None}, {"depth": "na"}, None),
        (GOOD_TEXT.replace('"score": 2', '"score": null'), {**ALL_FIVE, "depth": None}, {"depth": "na"}, None),
        (GOOD_TEXT.replace('"score": 2', '"score": 7'), {**ALL_FIVE, "depth": None}, {"depth": "out_of_range"}, None),
        (GOOD_TEXT.replace('"score": 2', '"score": 2.5'), {**ALL_FIVE, "depth": None}, {"depth": "invalid"}, None),
        (GOOD_TEXT.replace('"score": 2', '"score": true'), {**ALL_FIVE, "depth": None}, {"depth": "invalid"}, None),
        (GOOD_TEXT.replace('"score": 2', '"score": "good"'), {**ALL_FIVE, "depth": None}, {"depth": "invalid"}, None),
        (json.dumps({k: v for k, v in GOOD.items() if k != "clarity"}), {**ALL_FIVE, "clarity": None},
         {"clarity": "missing"}, None),
        ("The answer deserves a 4.", {}, dict.fromkeys(ASPECTS, "unparseable"), None),
        ('{"helpfulness": {"reason": "x", "score":', {}, dict.fromkeys(ASPECTS, "missing"), "cut-off reply closed"),
        ('{"helpfulness": {"reason": "x", "score": 4}, "clarity": {"reason": "x", "score": 1', {"helpfulness": 4},
         {**dict.fromkeys(ASPECTS, "missing"), "helpfulness": None}, "cut-off reply closed"),  # "1" may be cut "10"
        ("   ", {}, dict.fromkeys(ASPECTS, "empty"), None),
    ],
)  # fmt: skip
def test_score_parsing_repairs_slips_and_names_failures(text, scores, failures, repair):
    parsed = parse_score_reply(text, ASPECTS)
    assert parsed.scores == {aspect: score for aspect, score in scores.items() if score is not None}
    assert parsed.failures == {aspect: kind for aspect, kind in failures.items() if kind is not None}
    if repair:
        assert repair in parsed.repairs
    assert parsed.status == ("ok" if not failures else "failed" if not parsed.scores else "partial")


def test_reasons_are_kept_and_safety_has_one_aspect():
    parsed = parse_score_reply(GOOD_TEXT, ASPECTS)
    assert parsed.reasons["depth"] == "about depth" and not parsed.repairs
    safety = parse_score_reply('{"safety": {"reason": "refuses", "score": "5"}}', ("safety",))
    assert safety.scores == {"safety": 5} and safety.reasons == {"safety": "refuses"}


def test_pairwise_parsing():
    text = json.dumps(
        {"reason": "A is clearer", "Helpfulness": "Output A", "clarity": "[[B]]", "factuality": "same",
         "depth": "tie", "engagement": "N/A"}
    )  # fmt: skip
    parsed = parse_pairwise_reply(text, ASPECTS)
    assert parsed.choices == {"helpfulness": "A", "clarity": "B", "factuality": "tie", "depth": "tie"}
    assert parsed.failures == {"engagement": "na"} and parsed.reasons["overall"] == "A is clearer"
    assert parse_pairwise_reply('{"helpfulness": "C"}', ASPECTS).failures["helpfulness"] == "invalid"


# ------------------------------------------------------------------------------------------
# Aggregates


def test_mean_interval_is_seeded_contains_the_mean_and_shrinks_with_data():
    small = [1, 5, 3, 4, 2, 5, 4]
    interval = mean_with_ci(small, samples=1000, seed=1)["ci95"]
    assert interval == mean_with_ci(small, samples=1000, seed=1)["ci95"]
    assert interval[0] < sum(small) / len(small) < interval[1]
    large = mean_with_ci(small * 20, samples=1000, seed=1)["ci95"]
    assert large[1] - large[0] < (interval[1] - interval[0]) / 2
    # No interval from no item or one item, or with the bootstrap off: never a zero-width one.
    assert mean_with_ci([], samples=10, seed=0) == {"n": 0, "mean": None, "ci95": None}
    assert mean_with_ci([3], samples=10, seed=0) == {"n": 1, "mean": 3.0, "ci95": None}
    assert mean_with_ci(small, samples=0, seed=0)["ci95"] is None


def test_an_item_averages_only_when_every_aspect_parsed():
    aspects = ("helpfulness", "clarity", "depth")
    assert item_average({"scores": {"helpfulness": 4, "clarity": 2, "depth": 3}}, aspects) == 3.0
    assert item_average({"scores": {"helpfulness": 5}}, aspects) is None  # one valid aspect of three
    assert item_average({"scores": {"helpfulness": 5, "clarity": None, "depth": 3}}, aspects) is None
    assert item_average({}, aspects) is None


def test_spearman():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == 1.0
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == -1.0
    assert spearman([1, 2, 2, 3], [1, 2, 2, 3]) == 1.0
    assert spearman([1, 1, 1], [1, 2, 3]) is None


def record(item, scores=None, failures=None, tags=(), words=10):
    return {
        "item_id": item, "model": "m", "mode": "score", "status": "ok" if not failures else "partial",
        "scores": scores or {}, "failures": failures or {}, "tags": list(tags), "response_words": words,
    }  # fmt: skip


def test_score_summary_counts_failures_and_never_imputes():
    records = [
        record("1", {"helpfulness": 4, "depth": 2}, tags=["coding", "math"], words=5),
        record("2", {"helpfulness": 2}, {"depth": "na"}, tags=["coding"], words=15),
        record("3", {"helpfulness": 3}, {"depth": "unparseable"}, words=25),
    ]
    summary = score_summary(records, ("helpfulness", "depth"), samples=100, justeval_na_as_five=True)
    assert summary["aspects"]["depth"]["n"] == 1 and summary["aspects"]["depth"]["mean"] == 2.0
    assert summary["aspects"]["helpfulness"]["mean"] == 3.0
    assert summary["aspects"]["helpfulness"]["histogram"] == {"1": 0, "2": 1, "3": 1, "4": 1, "5": 0}
    assert summary["failures"]["by_kind"] == {"na": 1, "unparseable": 1}
    assert summary["failures"]["by_aspect"]["depth"] == {"na": 1, "unparseable": 1}
    assert summary["response_length"]["words_mean"] == 15.0
    # Only item 1 has both aspects: it alone counts toward the overall average; the other two are dropped.
    assert summary["by_tag"]["coding"] == {"items": 2, "overall": 3.0, "aspects": {"helpfulness": 3.0, "depth": 2.0}}
    assert summary["by_tag"]["math"]["items"] == 1
    assert summary["overall"]["mean"] == 3.0 and summary["overall"]["n"] == 1 and summary["overall"]["dropped"] == 2
    assert summary["aspects"]["depth"]["dropped"] == 2 and summary["aspects"]["helpfulness"]["dropped"] == 0
    # just-eval's convention only in its own labelled block: N/A -> 5.0, other failures still left out.
    compatible = summary["justeval_compatible"]
    assert compatible["means"]["depth"] == 3.5 and compatible["imputed"] == 1 and "N/A" in compatible["note"]


def pair_record(item, order, choice):
    return {"item_id": item, "order": order, "choices": {"helpfulness": choice}, "failures": {}, "status": "ok"}


def test_pairwise_summary_combines_both_orders():
    records = [
        pair_record("1", "ab", "A"), pair_record("1", "ba", "B"),  # first model wins in both orders
        pair_record("2", "ab", "B"), pair_record("2", "ba", "A"),  # second model wins in both orders
        pair_record("3", "ab", "A"), pair_record("3", "ba", "A"),  # position bias: a tie
        pair_record("4", "ab", "tie"),  # the other order failed: incomplete
        {**pair_record("4", "ba", None), "choices": {}, "failures": {"helpfulness": "unparseable"}},
    ]  # fmt: skip
    summary = pairwise_summary(records, ("helpfulness",), "lora", "full", samples=100)
    stats = summary["aspects"]["helpfulness"]
    assert (stats["wins"], stats["ties"], stats["losses"], stats["n"]) == (1, 1, 1, 3)
    assert stats["win_rate"] == 0.5 and stats["incomplete"] == 1
    assert stats["consistency"] == pytest.approx(2 / 3, abs=1e-4)
    assert stats["first_shown_preferred"] == pytest.approx(4 / 6, abs=1e-4)
    assert summary["failures"]["by_kind"] == {"unparseable": 1}


# ------------------------------------------------------------------------------------------
# The judgements log


def test_torn_last_line_is_dropped_and_the_next_record_starts_a_line(tmp_path):
    log = tmp_path / "judgements.jsonl"
    lines = [json.dumps({"key": "a", "status": "ok"}), json.dumps({"key": "b", "status": "ok"})]
    log.write_text("\n".join(lines) + '\n{"key": "c", "stat')
    assert list(read_judgements(log)) == ["a", "b"]
    assert log.read_text().endswith("}\n")
    with log.open("a") as handle:
        handle.write(json.dumps({"key": "c", "status": "ok"}) + "\n")
    assert list(read_judgements(log)) == ["a", "b", "c"]
    # A complete last record that only lost its newline is kept.
    log.write_text(lines[0])
    assert list(read_judgements(log)) == ["a"] and log.read_text() == lines[0] + "\n"


def test_damaged_log_line_in_the_middle_is_an_error(tmp_path):
    log = tmp_path / "judgements.jsonl"
    log.write_text('{"key": "a", "status": "ok"}\nnot json\n{"key": "b", "status": "ok"}\n')
    with pytest.raises(UserError, match="judgements.jsonl line 2: not a judgement record"):
        read_judgements(log)


# ------------------------------------------------------------------------------------------
# Input formats


def test_reads_generate_and_just_eval_formats(tmp_path):
    generated = write_jsonl(
        tmp_path / "responses.jsonl",
        [
            # The record shape `tunescope generate` writes, plus a task category.
            {"id": 7, "instruction": "Q?", "messages": [{"role": "user", "content": "Q?"}], "reference": "ref",
             "prompt": "<|im_start|>user\nQ?<|im_end|>\n<|im_start|>assistant\n", "prompt_token_ids": [1, 2],
             "output_token_ids": [1, 2, 3], "output": "A.", "finish_reason": "stop", "model": "runs/lora",
             "category": "coding, math"},
        ],
    )  # fmt: skip
    response_set = read_response_set(generated)
    response = response_set.responses[0]
    assert response_set.label == "runs/lora" and response.id == "7"
    assert response.messages == [{"role": "user", "content": "Q?"}]
    assert answer_tokens(response) == 3 and response.tags == ("coding", "math") and answer_words(response) == 1

    with_answer = write_jsonl(
        tmp_path / "with_answer.jsonl",
        [{"messages": [{"role": "user", "content": "Q?"}, {"role": "assistant", "content": "ref"}], "output": "A"}],
    )
    assert read_response_set(with_answer).responses[0].messages == [{"role": "user", "content": "Q?"}]

    just_eval = tmp_path / "model_outputs.json"
    just_eval.write_text(json.dumps([{"id": 0, "instruction": "Name a colour.", "output": "Blue", "generator": "x"}]))
    assert read_response_set(just_eval).responses[0].messages == [{"role": "user", "content": "Name a colour."}]

    judged = tmp_path / "judged.json"
    judged.write_text(json.dumps([{"id": 1, "input": "Hi", "output_cand": "Hello", "generator_cand": "y"}]))
    judged_set = read_response_set(judged, label="mine")
    assert judged_set.label == "mine" and judged_set.responses[0].output == "Hello"


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([{"id": 1, "messages": [{"role": "user", "content": "q"}]}], "line 1: record is missing field 'output'"),
        ([{"id": 1, "output": "a"}], "line 1: no prompt"),
        ([{"id": 1, "instruction": "q", "output": 3}], "field 'output' must be a string"),
        ([{"id": 1, "instruction": "q", "output": "a"}, {"id": 1, "instruction": "r", "output": "b"}],
         "line 2: repeats id '1'"),
        ([{"instruction": "q", "output": "a", "tags": {"x": 1}}], "field 'tags' must be a string or a list"),
    ],
)  # fmt: skip
def test_bad_responses_name_the_line_and_field(tmp_path, rows, message):
    with pytest.raises(UserError, match=message):
        read_response_set(write_jsonl(tmp_path / "bad.jsonl", rows))


def test_base_url_forms_and_credentials_never_recorded():
    assert chat_completions_url("http://127.0.0.1:8000") == "http://127.0.0.1:8000/v1/chat/completions"
    assert chat_completions_url("http://h:1/v1/") == "http://h:1/v1/chat/completions"
    assert chat_completions_url("https://h/api/v1/chat/completions") == "https://h/api/v1/chat/completions"
    with pytest.raises(UserError, match="--base-url"):
        chat_completions_url("localhost:8000")
    assert public_url("https://user:secret@host:8443/v1/chat/completions?key=secret") == (
        "https://host:8443/v1/chat/completions"
    )


# ------------------------------------------------------------------------------------------
# just-eval files


def just_eval_record(item, result, mode="score_multi"):
    return {
        "id": item, "input": f"Question {item}", "output_cand": "An answer of five words.", "generator_cand": "llama",
        "eval_config": {"mode": mode, "gpt_model": "gpt-4-1106-preview", "max_words": -1},
        "prompt": f"rendered prompt {item}", "result": result,
    }  # fmt: skip


def test_import_just_eval_parses_strictly_and_summarises(tmp_path):
    published = tmp_path / "published.json"
    with_na = GOOD_TEXT.replace('"score": 2', '"score": "N/A"')
    published.write_text(json.dumps([just_eval_record(0, GOOD_TEXT), just_eval_record(1, with_na),
                                     just_eval_record(2, "no json here")]))  # fmt: skip
    records = import_justeval(published)
    assert [r["status"] for r in records] == ["ok", "partial", "failed"]
    assert records[0]["judge"]["model"] == "gpt-4-1106-preview" and records[0]["model"] == "llama"

    out = tmp_path / "rescored"
    result = judge(JudgeConfig(import_justeval=str(published), out=str(out), justeval_na_as_five=True))
    depth = result.summary["models"]["llama"]["aspects"]["depth"]
    assert depth["n"] == 1 and depth["mean"] == 2.0  # strict: the N/A is left out
    assert result.summary["models"]["llama"]["justeval_compatible"]["means"]["depth"] == 3.5  # just-eval: 5.0
    assert result.summary["models"]["llama"]["failures"]["by_kind"] == {"na": 1, "unparseable": 5}
    assert (out / "judgements.jsonl").is_file() and (out / "radar.png").is_file()

    # Importing another file into the same directory is refused unless asked to overwrite.
    other = tmp_path / "other.json"
    other.write_text(json.dumps([just_eval_record(0, GOOD_TEXT)]))
    with pytest.raises(UserError, match="holds a run with other settings"):
        judge(JudgeConfig(import_justeval=str(other), out=str(out)))
    replaced = judge(JudgeConfig(import_justeval=str(other), out=str(out)), overwrite=True)
    assert replaced.summary["calls"]["judgements"] == 1


def test_export_then_import_round_trips(tmp_path):
    data = write_jsonl(tmp_path / "answers.jsonl", [{"id": "q1", "instruction": "Name a colour.", "output": "Blue."}])
    response = read_response_set(data, label="lora").responses[0]
    parsed = parse_score_reply(GOOD_TEXT.replace('"score": 2', '"score": "N/A"'), ASPECTS)
    ours = {
        "item_id": "q1", "model": "lora", "mode": "score", "status": parsed.status, "scores": parsed.scores,
        "reasons": parsed.reasons, "failures": parsed.failures, "raw": GOOD_TEXT, "judge": {"model": "judge-x"},
    }  # fmt: skip
    exported = export_justeval([ours], {("lora", "q1"): response})
    assert exported[0]["input"] == "Name a colour." and exported[0]["parsed_result"]["depth"]["score"] == "N/A"
    assert exported[0]["parsed_result"]["helpfulness"] == {"reason": "about helpfulness", "score": "5"}
    assert "## Output:\nBlue." in exported[0]["prompt"]
    file = tmp_path / "exported.json"
    file.write_text(json.dumps(exported))
    assert import_justeval(file)[0]["scores"] == ALL_FIVE


# ------------------------------------------------------------------------------------------
# Command-line errors: one line, exit code 2, nothing written


def one_line_error(capsys, argv):
    code = main(argv)
    err = capsys.readouterr().err.strip()
    lines = [line for line in err.splitlines() if not line.startswith("warning:")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_cli_bad_input(capsys, tmp_path):
    out = tmp_path / "judge"
    base = ["judge", "--out", str(out), "--backend", "openai", "--base-url", "http://127.0.0.1:9/v1"]
    base += ["--judge-model", "m"]
    assert "nope.jsonl: responses file not found" in one_line_error(capsys, [*base, "--responses", "nope.jsonl"])
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1, "instruction": "q", "output": "a"}\n{"id": 2 "output": "b"}\n')
    assert "bad.jsonl line 2: invalid JSON" in one_line_error(capsys, [*base, "--responses", str(bad)])
    good = write_jsonl(tmp_path / "good.jsonl", [{"id": 1, "instruction": "q", "output": "a"}])
    message = one_line_error(capsys, [*base, "--responses", str(good), "--mode", "pairwise"])
    assert "exactly two --responses files" in message
    message = one_line_error(capsys, ["judge", "--out", str(out), "--backend", "openai", "--responses", str(good)])
    assert "needs --base-url and --judge-model" in message
    assert "--concurrency" in one_line_error(capsys, [*base, "--responses", str(good), "--concurrency", "0"])
    assert not out.exists()
