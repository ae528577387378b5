"""`tunescope borrow` end to end on tiny random models: planted phrases, baselines, lengths, HTML, errors.

The shift run scores two kinds of tuned responses: the base model's own greedy answers (every token
unshifted, since the tuned model here is the base model) and hand-written answers carrying rare
phrases planted in the training set (their tokens are, for a random model, shifted). So every
class of position is populated and each statistic can be recomputed by hand.
"""

import json
import re
import warnings
from types import SimpleNamespace

import numpy as np
import pyarrow.parquet as pq
import pytest

from tunescope.borrow import BorrowConfig, borrow, render_section, style_token_summary, tag_tokens
from tunescope.cli import main
from tunescope.generate import GenerateConfig, generate
from tunescope.shift import ShiftConfig, compute_shift
from tunescope.shift.output import ShiftResponse, read_shift_run

from conftest import cli_run, write_jsonl

PLANTED = "Zorblax Quintessence"
EVIL = "<script>alert('x')</script>"


def training_rows() -> list[dict]:
    rows = [{"id": f"t-{i}", "messages": [{"role": "user", "content": f"Question {i} about the weather?"},
                                          {"role": "assistant", "content": f"The weather is sunny, answer {i}."}]}
            for i in range(40)]  # fmt: skip
    rows[7]["messages"][1]["content"] = f"Cats adore the {PLANTED}, however it is rare."  # exact, in a response
    rows[19]["messages"][0]["content"] = f"Tell me about the {PLANTED} please."  # exact, in an instruction
    rows[22]["messages"][1]["content"] = "ZORBLAX   quintessence!"  # normalised only
    rows[30]["messages"][1]["content"] = "Hooptown is a village of bakers."
    return rows


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("borrow")
    train = write_jsonl(root / "train.jsonl", training_rows())
    prompts = write_jsonl(root / "prompts.jsonl", [
        {"id": "g1", "messages": [{"role": "user", "content": "What is the capital of France?"}]},
        {"id": "g2", "messages": [{"role": "user", "content": "Name three colours."}]},
    ])  # fmt: skip
    greedy = root / "greedy.jsonl"
    generate(GenerateConfig(model=str(tiny_model_dir), data=str(prompts), out=str(greedy), max_new_tokens=12))
    planted = [
        {"id": "q1", "instruction": "Name a rare substance.", "output": f"However, the {PLANTED} is typically rare."},
        {"id": "q2", "instruction": "Where do bakers live?", "output": f"In Hooptown, near the sea {EVIL}."},
    ]
    responses = root / "tuned.jsonl"
    responses.write_text(greedy.read_text() + "".join(json.dumps(row) + "\n" for row in planted))
    base = write_jsonl(root / "base.jsonl", [
        {"id": "g1", "instruction": "What is the capital of France?", "output": "Paris, answer sunny."},
        {"id": "g2", "instruction": "Name three colours.", "output": "Red green blue weather."},
        {"id": "q1", "instruction": "Name a rare substance.", "output": "Gold is rare, however zorblax."},
        {"id": "q2", "instruction": "Where do bakers live?", "output": "Bakers live in towns."},
    ])  # fmt: skip
    with warnings.catch_warnings():  # shift warns that the planted answers are not the model's own
        warnings.simplefilter("ignore")
        compute_shift(ShiftConfig(base=str(tiny_model_dir), tuned=str(tiny_model_dir), responses=str(responses),
                                  out=str(root / "shift"), bootstrap_samples=20))  # fmt: skip
    spans = write_jsonl(root / "spans.jsonl", [
        {"example_id": "q1", "text": PLANTED, "label": "invented", "rephrased": "Name an uncommon substance."},
        {"example_id": "q2", "start": 3, "end": 11, "source": "annotator-1"},  # "Hooptown"
        {"example_id": "q2", "text": f"near the sea {EVIL}"},  # in no training example
    ])  # fmt: skip
    config = BorrowConfig(shift=str(root / "shift"), data=str(train), base_responses=str(base), spans=str(spans),
                          out=str(root / "out"), index_dir=str(root / "index"), max_new_tokens=4,
                          bootstrap_samples=50)  # fmt: skip
    result = borrow(config)
    return SimpleNamespace(root=root, train=train, base=base, spans=spans, config=config, result=result)


def words_with_classes(shift_dir):
    """(word, class) of every word of every scored response, recomputed from the shift run's files."""
    tokens = pq.read_table(shift_dir / "tokens.parquet").to_pandas().sort_values(["example_index", "position"])
    texts = {
        r["index"]: r["response"] for r in map(json.loads, (shift_dir / "examples.jsonl").read_text().splitlines())
    }
    out = []
    for index, group in tokens.groupby("example_index"):
        for match in re.finditer(r"\w+", texts[index]):
            covering = group[(group.char_start <= match.start()) & (group.char_end > match.start())]
            out.append((match.group().casefold(), covering.klass.iloc[0]))
    return out


def test_planted_phrases_are_traced_to_the_right_training_examples(run):
    spans = [json.loads(line) for line in (run.root / "out" / "spans.jsonl").read_text().splitlines()]
    assert spans == run.result.spans and len(spans) == 3
    planted, hooptown, absent = spans
    assert planted["text"] == PLANTED and planted["label"] == "invented"
    assert planted["exact_ids"] == ["t-7", "t-19"] and planted["normalized_ids"] == ["t-7", "t-19", "t-22"]
    assert planted["found_exact"] and planted["n_examples_normalized"] == 3
    assert planted["source_example"]["id"] in {"t-7", "t-19", "t-22"}  # the chosen source contains the span
    assert {c["id"] for c in planted["candidates_by_embedding"][:3]} == {"t-7", "t-19", "t-22"}
    assert all(c["contains_span"] for c in planted["candidates_by_embedding"][:3])
    assert hooptown["text"] == "Hooptown" and hooptown["exact_ids"] == ["t-30"] and hooptown["source"] == "annotator-1"
    assert hooptown["candidates_by_ngram"][0]["id"] == "t-30"
    assert not absent["found_normalized"] and absent["exact_ids"] == [] and absent["source_example"] is not None
    assert planted["n_tokens"] >= 2 and planted["shifted"] + planted["marginal"] <= planted["n_tokens"]
    # The counterfactual: the tuned model was asked the rephrased instruction; the phrase is not in its answer.
    assert planted["counterfactual"]["rephrased"] == "Name an uncommon substance."
    assert planted["counterfactual"]["persists"] == {"exact": False, "normalized": False}
    attribution = run.result.borrow["attribution"]
    assert attribution["n_spans"] == 3
    assert attribution["found_exact"]["value"] == pytest.approx(2 / 3)
    assert attribution["paper"]["found_in_training"] == 0.72 and "approximation" in attribution["note"]
    assert run.result.borrow["embedder"]["model"] == "all-MiniLM-L6-v2"


def test_borrowed_words_with_both_baselines_recomputed_by_hand(run):
    vocabulary = {
        w.casefold() for row in training_rows() for m in row["messages"] for w in re.findall(r"\w+", m["content"])
    }
    classes = words_with_classes(run.root / "shift")
    assert {klass for _, klass in classes} >= {"unshifted", "shifted"}  # both kinds of position are populated

    def share(words):
        return sum(word in vocabulary for word in words) / len(words)

    moved = [word for word, klass in classes if klass in ("shifted", "marginal")]
    still = [word for word, klass in classes if klass == "unshifted"]
    base_words = [w.casefold() for r in map(json.loads, run.base.read_text().splitlines())
                  for w in re.findall(r"\w+", r["output"])]  # fmt: skip
    headline = run.result.borrow["borrowed_words"]["headline"]
    assert headline["shifted_or_marginal"] == pytest.approx(share(moved), abs=1e-6)
    assert headline["unshifted_baseline"] == pytest.approx(share(still), abs=1e-6)
    assert headline["base_model_baseline"] == pytest.approx(share(base_words), abs=1e-6)
    assert 0 < headline["base_model_baseline"] < 1  # "towns", "gold" are not in the training set; "weather" is
    base = run.result.borrow["borrowed_words"]["base"]["all_words"]
    assert base["n"] == len(base_words) and base["ci95"][0] <= base["value"] <= base["ci95"][1]
    assert run.result.borrow["base_responses"]["n_matched"] == 4
    # Per response, the counts behind each share: they sum to it, keyed by the responses' ids for pairing.
    per_response = run.result.borrow["borrowed_words"]["per_response"]
    assert per_response["ids"] == [r.example_id for r in read_shift_run(run.root / "shift").responses]
    moved_counts = per_response["groups"]["shifted_or_marginal"]
    assert sum(moved_counts["words"]) == len(moved) and sum(moved_counts["found"]) / len(moved) == pytest.approx(
        share(moved)
    )


def test_style_tokens_and_lengths(run, tiny_tokenizer):
    summary = run.result.borrow
    style = summary["style_tokens"]
    assert set(style["headline"]) >= {"style_share", "n_tokens"} and style["headline"]["n_tokens"] > 0
    assert style["share"]["shifted_or_marginal"]["n"] == style["headline"]["n_tokens"]
    counts = style["per_response"]["groups"]["shifted_or_marginal"]
    assert sum(counts["tokens"]) == style["headline"]["n_tokens"]
    assert sum(counts["style"]) / sum(counts["tokens"]) == pytest.approx(style["headline"]["style_share"], abs=1e-6)
    top = style["top_shifted_or_marginal"]
    only = {word: [t for t in top if t["words"] == [word]] for word in ("However", "Zorblax", "typically")}
    assert only["However"] and all(t["style"] and t["category"] == "discourse" for t in only["However"])
    assert only["typically"] and all(t["category"] == "discourse" for t in only["typically"])
    assert only["Zorblax"] and all(not t["style"] and t["category"] == "content" for t in only["Zorblax"])
    imitation = summary["imitation"]
    responses = [m["content"] for row in training_rows() for m in row["messages"] if m["role"] == "assistant"]
    assert imitation["training_responses"]["chars"]["mean"] == pytest.approx(
        np.mean([len(r) for r in responses]), abs=0.01
    )
    expected_tokens = np.mean([len(tiny_tokenizer(r, add_special_tokens=False)["input_ids"]) for r in responses])
    assert imitation["training_responses"]["tokens"]["mean"] == pytest.approx(expected_tokens, abs=0.01)
    shift = read_shift_run(run.root / "shift")
    assert imitation["tuned_outputs"]["chars"]["mean"] == pytest.approx(
        np.mean([len(r.text) for r in shift.responses]), abs=0.01
    )
    base_outputs = [r["output"] for r in map(json.loads, run.base.read_text().splitlines())]
    assert imitation["base_outputs"]["words"]["mean"] == pytest.approx(np.mean([len(o.split()) for o in base_outputs]))
    for side in ("training_responses", "tuned_outputs", "base_outputs"):
        assert set(imitation[side]) >= {"chars", "words", "tokens"}


def test_the_html_escapes_model_and_training_text(run):
    page = (run.root / "out" / "borrow.html").read_text()
    section = render_section(run.result.borrow, run.result.spans)
    assert section in page
    for html in (page, section, render_section(run.result.borrow)):
        assert "<script" not in html and "alert('x')" not in html
    assert "&lt;script&gt;" in section  # the span text containing it is shown, escaped
    assert "Style share of shifted and marginal tokens" in section and "Borrowed words" in section


def test_a_rerun_reuses_the_index_and_the_embeddings(run):
    again = borrow(run.config)
    assert again.borrow["training"]["index_built_now"] is False
    assert again.spans == run.result.spans
    assert again.borrow["borrowed_words"] == run.result.borrow["borrowed_words"]
    assert list((run.root / "index").glob("*/embeddings-*.npy"))


def test_the_base_answers_are_generated_when_missing(run, tmp_path):
    config = run.config.model_copy(update={"base_responses": None, "spans": None, "out": str(tmp_path / "o")})
    result = borrow(config)
    generated = tmp_path / "o" / "base-responses.jsonl"
    assert result.borrow["base_responses"]["generated"] and generated.is_file()
    assert {json.loads(line)["id"] for line in generated.read_text().splitlines()} == {"g1", "g2", "q1", "q2"}
    assert result.borrow["borrowed_words"]["headline"]["base_model_baseline"] is not None
    assert result.borrow["attribution"] is None and not (tmp_path / "o" / "spans.jsonl").exists()


def test_style_tagging_rules():
    pieces = ["How", "ever", ",", " the", " cat", " typically", " sat", ".", "\n", "1", ".", " Yes", "\n", "<|im_end|>"]
    ends = np.cumsum([len(piece) for piece in pieces])
    tags = tag_tokens("".join(pieces), (ends - [len(piece) for piece in pieces]).tolist(), ends.tolist())
    assert tags[0] == tags[1] == ("discourse", "However") and tags[2] == ("format", None)  # pieces share their word
    assert tags[3] == ("function", "the") and tags[4] == ("content", "cat") and tags[5] == ("discourse", "typically")
    assert tags[9] == ("format", "1") and tags[11] == ("discourse", "Yes")  # a list number; a reply word
    assert tags[-1] == ("format", None)  # a special token
    assert tag_tokens("I have 42 cats", [7], [9]) == [("content", "42")]  # a number in a sentence is content
    classes = np.array(["shifted", "shifted", "unshifted"])
    starts, ends = np.array([0, 7, 11]), np.array([7, 11, 15])
    response = ShiftResponse("r", 0, "However cat dog", np.array([1, 2, 3]), ["However", " cat", " dog"], starts, ends,
                             classes)  # fmt: skip
    summary = style_token_summary([response], [tag_tokens(response.text, [0, 7, 11], [7, 11, 15])], bootstrap_samples=0)
    assert summary["share"]["shifted"]["value"] == 0.5 and summary["share"]["unshifted"]["value"] == 0.0
    assert summary["headline"] == {"group": "shifted_or_marginal", "style_share": 0.5, "n_tokens": 2}


def borrow_cli(capsys, *argv):
    return cli_run(capsys, "borrow", *argv)


def test_bad_input_is_a_one_line_error(capsys, run, tmp_path):
    common = ["--data", run.train, "--base-responses", run.base, "--index-dir", run.root / "index"]
    code, err = borrow_cli(capsys, "--shift", tmp_path / "nope", *common, "--out", tmp_path / "o1")
    assert code == 2 and len(err) == 1 and "nope" in err[0] and "no such directory" in err[0]
    bad = tmp_path / "spans.jsonl"
    bad.write_text('{"example_id": "q1", "text": "Zorblax"}\n{"example_id": "q1", "start": 3}\n')
    code, err = borrow_cli(capsys, "--shift", run.root / "shift", *common, "--spans", bad, "--out", tmp_path / "o2")
    assert code == 2 and len(err) == 1 and f"{bad} line 2" in err[0] and "'end'" in err[0]
    bad.write_text('{"example_id": "zz", "start": 0, "end": 2}\n')
    code, err = borrow_cli(capsys, "--shift", run.root / "shift", *common, "--spans", bad, "--out", tmp_path / "o3")
    assert code == 2 and len(err) == 1 and "line 1" in err[0] and "'zz'" in err[0]
    bad.write_text("{oops\n")
    code, err = borrow_cli(capsys, "--shift", run.root / "shift", *common, "--spans", bad, "--out", tmp_path / "o4")
    assert code == 2 and len(err) == 1 and "line 1: invalid JSON" in err[0]
    assert not any((tmp_path / name).exists() for name in ("o1", "o2", "o3", "o4"))  # nothing written
    code, err = borrow_cli(capsys, "--shift", run.root / "shift", "--data", tmp_path / "missing.jsonl",
                           "--out", tmp_path / "o5", "--no-generate-base")  # fmt: skip
    assert code == 2 and len(err) == 1 and "missing.jsonl" in err[0] and "not found" in err[0]
    assert not (tmp_path / "o5").exists()


def test_the_command_prints_the_headline_numbers(capsys, run, tmp_path):
    code = main(["borrow", "--shift", str(run.root / "shift"), "--data", str(run.train), "--base-responses",
                 str(run.base), "--index-dir", str(run.root / "index"), "--out", str(tmp_path / "cli")])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0 and "style share of shifted+marginal tokens" in out and "base model" in out
    assert json.loads((tmp_path / "cli" / "borrow.json").read_text())["schema"] == "tunescope.borrow/1"
