"""`tunescope shift` on tiny random models: exactness against per-token references, pairs, outputs, errors."""

import html as html_module
import json
import math
import re
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from tunescope.cli import main
from tunescope.generate import GenerateConfig, generate
from tunescope.models import load_model, load_tokenizer
from tunescope.shift import ShiftConfig, TokenColumn, compute_shift
from tunescope.shift import columns as shift_columns
from tunescope.shift import scoring as shift_scoring

from conftest import (
    PAIRS,
    assert_one_line,
    build_tiny_llama,
    build_tiny_tokenizer,
    cli_run,
    rows_in_format,
    write_jsonl,
)


@pytest.fixture(scope="module")
def pair_dirs(tmp_path_factory, tiny_tokenizer, tiny_model_dir):
    """base (seed 0), other (seed 1), a LoRA adapter on base with non-zero init, and that adapter merged."""
    from peft import LoraConfig, get_peft_model

    root = tmp_path_factory.mktemp("pair")
    other = root / "other"
    build_tiny_llama(tiny_tokenizer, seed=1).save_pretrained(other)
    tiny_tokenizer.save_pretrained(other)
    torch.manual_seed(3)
    lora = LoraConfig(r=4, lora_alpha=4, init_lora_weights=False, target_modules="all-linear")
    adapter_model = get_peft_model(load_model(str(tiny_model_dir)), lora)
    adapter_model.save_pretrained(root / "adapter")
    adapter_model.merge_and_unload().save_pretrained(root / "merged")
    tiny_tokenizer.save_pretrained(root / "merged")
    prompts = write_jsonl(root / "prompts.jsonl", rows_in_format("messages"))

    def responses(model, name):
        out = root / f"{name}.jsonl"
        generate(GenerateConfig(model=str(model), data=str(prompts), out=str(out), max_new_tokens=20, batch_size=4))
        return out

    return SimpleNamespace(
        root=root, base=tiny_model_dir, other=other, adapter=root / "adapter", merged=root / "merged",
        from_base=responses(tiny_model_dir, "from-base"), from_other=responses(other, "from-other"),
        from_adapter=responses(root / "adapter", "from-adapter"),
    )  # fmt: skip


def run_shift(tmp_path, base, tuned, responses, name="shift", **settings):
    config = ShiftConfig(base=str(base), tuned=str(tuned), responses=str(responses), out=str(tmp_path / name),
                         bootstrap_samples=100, **settings)  # fmt: skip
    return compute_shift(config)


def rows_by_example(result):
    table = pq.read_table(result.tokens).to_pandas().sort_values(["example_index", "position"])
    return {index: group for index, group in table.groupby("example_index")}


def examples_by_index(result):
    records = [json.loads(line) for line in result.examples.read_text().splitlines()]
    return {record["index"]: record for record in records}


def test_exact_mode_matches_a_per_token_reference(tmp_path, pair_dirs):
    result = run_shift(tmp_path, pair_dirs.base, pair_dirs.other, pair_dirs.from_other)
    base, tuned = load_model(str(pair_dirs.base)).eval(), load_model(str(pair_dirs.other)).eval()
    rows, examples = rows_by_example(result), examples_by_index(result)
    assert len(rows) == len(PAIRS)
    checked = 0
    for index, group in rows.items():
        record = examples[index]
        prompt, response = record["tuned_prompt_token_ids"], record["response_token_ids"]
        for t, row in enumerate(group.itertuples()):
            # The recipe the engine replaces: rerun the whole prefix, read the last position.
            context = torch.tensor([prompt + response[:t]])
            with torch.no_grad():
                base_logits = base(context).logits[0, -1].double()
                tuned_logits = tuned(context).logits[0, -1].double()
            p_base, p_tuned = base_logits.softmax(-1), tuned_logits.softmax(-1)
            token = response[t]
            expected_rank = int((torch.argsort(base_logits, descending=True) == token).nonzero()) + 1
            assert row.token_id == token and row.position == t
            assert row.base_rank == expected_rank
            assert row.tuned_rank == int((torch.argsort(tuned_logits, descending=True) == token).nonzero()) + 1
            assert row.kl == pytest.approx(float((p_base * (p_base / p_tuned).log()).sum()), abs=1e-5)
            assert row.kl_reverse == pytest.approx(float((p_tuned * (p_tuned / p_base).log()).sum()), abs=1e-5)
            assert row.base_prob == pytest.approx(float(p_base[token]), abs=1e-6)
            assert row.tuned_prob == pytest.approx(float(p_tuned[token]), abs=1e-6)
            assert row.base_entropy == pytest.approx(float(-(p_base * p_base.log()).sum()), abs=1e-5)
            assert list(row.base_top_ids) == torch.argsort(base_logits, descending=True)[:10].tolist()
            assert row.is_tuned_top1 == (int(tuned_logits.argmax()) == token)
            checked += 1
    assert checked == result.summary["n_tokens"] > 100
    classes = {row_class for group in rows.values() for row_class in group.klass}
    assert len(classes) >= 2  # ranks both small and large were compared


def test_a_registered_column_reaches_tokens_parquet_and_its_metadata(tmp_path, pair_dirs, monkeypatch):
    # Adding a metric takes one function of the positions and one registry entry; nothing else.
    def tuned_margin(positions):
        top = positions.tuned_logits.topk(2, dim=-1).values
        return top[:, 0] - top[:, 1]

    entry = TokenColumn("tuned_margin", pa.float32(), "tuned top-1 logit minus top-2 logit", compute=tuned_margin)
    monkeypatch.setattr(shift_columns, "TOKEN_COLUMNS", (*shift_columns.TOKEN_COLUMNS, entry))
    result = run_shift(tmp_path, pair_dirs.base, pair_dirs.other, pair_dirs.from_other)

    schema = pq.read_schema(result.tokens)
    assert schema.names[-1] == "tuned_margin" and schema.field("tuned_margin").type == pa.float32()
    meanings = json.loads(schema.metadata[b"tunescope.columns"])
    assert meanings["tuned_margin"] == "tuned top-1 logit minus top-2 logit"
    tuned = load_model(str(pair_dirs.other)).eval()
    rows, examples = rows_by_example(result), examples_by_index(result)
    index, group = next(iter(rows.items()))
    record = examples[index]
    for t, row in enumerate(group.itertuples()):
        context = torch.tensor([record["tuned_prompt_token_ids"] + record["response_token_ids"][:t]])
        with torch.no_grad():
            top = tuned(context).logits[0, -1].topk(2).values
        assert row.tuned_margin == pytest.approx(float(top[0] - top[1]), abs=1e-4)
    assert (group.tuned_margin >= 0).all() and (group.tuned_margin > 0).any()


def test_a_model_against_itself_is_unshifted(tmp_path, pair_dirs):
    result = run_shift(tmp_path, pair_dirs.base, pair_dirs.base, pair_dirs.from_base)
    table = pq.read_table(result.tokens)
    assert np.abs(table.column("kl").to_numpy()).max() < 1e-6
    assert result.summary["unshifted"] == 1.0 and result.summary["shifted"] == 0.0
    assert result.summary["base_rank_mean"] == 1.0 and result.summary["kl_mean"] < 1e-6


def test_an_adapter_pair_equals_its_merged_model_loaded_as_two_models(tmp_path, pair_dirs):
    shared = run_shift(tmp_path, pair_dirs.base, pair_dirs.adapter, pair_dirs.from_adapter, "shared")
    merged = run_shift(tmp_path, pair_dirs.base, pair_dirs.merged, pair_dirs.from_adapter, "merged")
    assert shared.summary["models"]["pairing"] == "disable_adapter"
    assert merged.summary["models"]["pairing"] == "two_models"
    a = pq.read_table(shared.tokens).to_pandas().sort_values(["example_index", "position"])
    b = pq.read_table(merged.tokens).to_pandas().sort_values(["example_index", "position"])
    assert len(a) == len(b) > 100
    assert (a.base_rank.to_numpy() == b.base_rank.to_numpy()).all()
    assert (a.klass.to_numpy() == b.klass.to_numpy()).all()
    assert np.allclose(a.kl.to_numpy(), b.kl.to_numpy(), atol=1e-5)
    assert np.allclose(a.tuned_prob.to_numpy(), b.tuned_prob.to_numpy(), atol=1e-6)
    assert 0 < shared.summary["shifted"] < 1 and shared.summary["kl_mean"] > 0.01  # the adapter changed something


@pytest.mark.filterwarnings("ignore:only .* of response tokens")
def test_an_adapter_that_trained_biases_is_compared_with_a_separate_base(tmp_path, pair_dirs, tiny_model_dir):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(4)
    config = LoraConfig(r=4, init_lora_weights=False, target_modules="all-linear", bias="lora_only")
    model = get_peft_model(load_model(str(tiny_model_dir)), config)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith(".bias"):
                parameter.add_(0.5)  # a trained bias: disable_adapter() would not undo it
    model.save_pretrained(tmp_path / "biased")
    with pytest.warns(UserWarning, match="trained biases"):
        result = run_shift(tmp_path, tiny_model_dir, tmp_path / "biased", pair_dirs.from_adapter, name="biased-shift")
    assert result.summary["models"]["pairing"] == "two_models"


def aligntds_reference(base_candidates, tuned_candidates, k=30, cap=50):
    """AlignTDS's metric functions as its source describes them: renormalise, then look texts up in lists."""

    def weights(candidates):
        top = max(logit for _, logit in candidates)
        total = sum(math.exp(logit - top) for _, logit in candidates)
        return [math.exp(logit - top) / total for _, logit in candidates]

    base_w, tuned_w = weights(base_candidates), weights(tuned_candidates)
    base_texts, tuned_texts = [t for t, _ in base_candidates[:k]], [t for t, _ in tuned_candidates[:k]]
    kl = 0.0
    for text in set(base_texts) | set(tuned_texts):
        w1 = base_w[base_texts.index(text)] if text in base_texts else 0
        w2 = tuned_w[tuned_texts.index(text)] if text in tuned_texts else 0
        if w1 > 0 and w2 > 0:
            kl += w1 * math.log(w1 / w2)
    searched = [t for t, _ in base_candidates[:cap]]
    top = tuned_candidates[0][0]
    rank = searched.index(top) if top in searched else cap
    return kl, rank, base_w[rank] if top in searched else 0.0


def test_aligntds_mode_matches_the_per_token_recipe(tmp_path, pair_dirs, tiny_tokenizer):
    result = run_shift(tmp_path, pair_dirs.base, pair_dirs.adapter, pair_dirs.from_adapter, mode="aligntds")
    assert result.summary["mode"] == "aligntds" and "AlignTDS" in result.summary["definitions"]["kl"]
    assert pq.read_schema(result.tokens).metadata[b"tunescope.mode"] == b"aligntds"
    base, tuned = load_model(str(pair_dirs.base)).eval(), load_model(str(pair_dirs.merged)).eval()
    examples, rows = examples_by_index(result), rows_by_example(result)
    for index in list(rows)[:3]:
        record = examples[index]
        for t, row in enumerate(rows[index].itertuples()):
            context = torch.tensor([record["tuned_prompt_token_ids"] + record["response_token_ids"][:t]])
            lists = []
            for model in (base, tuned):
                with torch.no_grad():
                    logits = model(context).logits[0, -1]
                top = logits.topk(30)
                pairs = zip(top.indices, top.values, strict=True)
                lists.append([(tiny_tokenizer.decode(i), float(v)) for i, v in pairs])
            kl, rank, prob = aligntds_reference(*lists)
            assert row.base_rank == rank and row.kl == pytest.approx(kl, abs=1e-5)
            assert row.base_prob == pytest.approx(prob, abs=1e-6)
            assert row.klass == ("unshifted" if rank == 0 else "marginal" if rank < 3 else "shifted")
            assert math.isnan(row.kl_reverse)


def test_logits_are_held_one_bounded_chunk_at_a_time(tmp_path, pair_dirs, monkeypatch):
    seen = []
    original = shift_scoring.exact_metrics

    def spy(positions):
        seen.append(positions.base_logits.shape[0])
        return original(positions)

    monkeypatch.setattr(shift_scoring, "exact_metrics", spy)
    small = run_shift(tmp_path, pair_dirs.base, pair_dirs.adapter, pair_dirs.from_adapter, "small", chunk_tokens=7)
    assert max(seen) == 7 and len(seen) > small.summary["n_tokens"] / 7
    seen.clear()
    whole = run_shift(tmp_path, pair_dirs.base, pair_dirs.adapter, pair_dirs.from_adapter, "whole", batch_size=8)
    assert max(seen) > 100  # one chunk per batch when the chunk is larger than the batch
    a, b = pq.read_table(small.tokens).to_pandas(), pq.read_table(whole.tokens).to_pandas()
    a, b = (t.sort_values(["example_index", "position"]) for t in (a, b))
    assert (a.base_rank.to_numpy() == b.base_rank.to_numpy()).all()
    assert np.allclose(a.kl.to_numpy(), b.kl.to_numpy(), atol=1e-5)


def test_outputs_and_their_schema(tmp_path, pair_dirs):
    result = run_shift(tmp_path, pair_dirs.base, pair_dirs.adapter, pair_dirs.from_adapter)
    out = result.out
    assert {p.name for p in out.iterdir()} == {
        "tokens.parquet", "summary.json", "examples.jsonl", "viewer.html", "config.yaml", "run.json"
    }  # fmt: skip
    table = pq.read_table(result.tokens)
    for column in (
        "example_id",
        "position",
        "token_id",
        "token",
        "base_rank",
        "base_prob",
        "tuned_prob",
        "kl",
        "kl_reverse",
        "klass",
        "base_top_ids",
        "tuned_top_probs",
        "is_tuned_top1",
        "initiation",
    ):
        assert column in table.column_names, column  # fmt: skip
    assert len(table.column("base_top_ids")[0]) == 10
    summary = json.loads((out / "summary.json").read_text())
    assert summary == result.summary
    assert summary["mode"] == "exact" and "KL(base‖tuned)" in summary["definitions"]["kl"]
    assert summary["n_tokens"] == table.num_rows and summary["n_examples"] == len(PAIRS)
    assert summary["unshifted"] + summary["marginal"] + summary["shifted"] == pytest.approx(1, abs=1e-5)
    for name in ("kl_mean", "base_prob_mean", "base_rank_mean", "shifted"):
        for average in ("micro", "macro"):
            entry = summary[average][name]
            assert entry["ci95"][0] <= entry["value"] <= entry["ci95"][1], (average, name)
    assert summary["micro"]["tuned_top1_agreement"]["value"] == 1.0  # greedy responses of the same model
    assert [row["position"] for row in summary["by_position"]] == list(range(1, 21))
    assert len(summary["by_relative_position"]) == 10
    assert sum(row["n_tokens"] for row in summary["by_relative_position"]) == summary["n_tokens"]
    assert summary["top_shifted_tokens"][0]["count"] >= summary["top_shifted_tokens"][-1]["count"]
    assert set(summary["initiation"]) >= {"kl_first", "kl_rest", "relative_difference", "segmenter"}
    assert summary["responses"]["generation"][0]["max_new_tokens"] == 20
    # Ids were used verbatim, minus a final end-of-turn token (not scored by default).
    generated = {json.loads(line)["id"]: json.loads(line) for line in pair_dirs.from_adapter.read_text().splitlines()}
    for record in examples_by_index(result).values():
        source = generated[record["id"]]
        assert record["ids_source"] == "record"
        assert record["tuned_prompt_token_ids"] == record["base_prompt_token_ids"] == source["prompt_token_ids"]
        stopped = source["finish_reason"] == "stop"
        assert record["response_token_ids"] == source["output_token_ids"][: len(source["output_token_ids"]) - stopped]


@pytest.mark.filterwarnings("ignore:only .* of response tokens")
def test_records_given_as_text_and_the_base_prompt_choices(tmp_path, pair_dirs, tiny_tokenizer):
    rows = [{"id": "q1", "instruction": "Name three colours.", "output": "Red, green and blue."},
            {"id": "q2", "messages": [{"role": "user", "content": "Say hello."},
                                      {"role": "assistant", "content": "Hello there."}]}]  # fmt: skip
    responses = write_jsonl(tmp_path / "text.jsonl", rows)
    result = run_shift(tmp_path, pair_dirs.base, pair_dirs.adapter, responses, "same")
    records = {r["id"]: r for r in examples_by_index(result).values()}
    prompt = tiny_tokenizer.apply_chat_template(
        [{"role": "user", "content": "Name three colours."}], add_generation_prompt=True, tokenize=False
    )
    assert records["q1"]["ids_source"] == "built"
    assert records["q1"]["tuned_prompt_token_ids"] == tiny_tokenizer(prompt, add_special_tokens=False)["input_ids"]
    assert records["q1"]["response_token_ids"] == tiny_tokenizer("Red, green and blue.")["input_ids"]
    assert records["q2"]["response"] == "Hello there."
    assert result.summary["responses"]["n_ids_built_from_text"] == 2

    wrapped = run_shift(tmp_path, pair_dirs.base, pair_dirs.adapter, responses, "aligntds", base_prompt="aligntds")
    q1 = {r["id"]: r for r in examples_by_index(wrapped).values()}["q1"]
    assert q1["base_prompt"] == "# Query: \n ```Name three colours.``` \n\n \n# Answer: \n ```"
    assert q1["response_token_ids"] == records["q1"]["response_token_ids"]  # identical ids for both models
    raw = run_shift(tmp_path, pair_dirs.base, pair_dirs.adapter, responses, "raw", base_prompt="raw")
    assert {r["id"]: r for r in examples_by_index(raw).values()}["q2"]["base_prompt"] == "Say hello.\n"
    assert raw.summary["kl_mean"] != result.summary["kl_mean"]  # a different base context changes the numbers


@pytest.mark.filterwarnings("ignore:only .* of response tokens")
def test_the_viewer_escapes_model_text(tmp_path, pair_dirs):
    rows = [{"id": "<img src=x onerror=alert(2)>", "instruction": "Say <script>alert(1)</script> please",
             "output": "Sure: <script>alert('x')</script> & <b>bold</b> </script>"}]  # fmt: skip
    result = run_shift(tmp_path, pair_dirs.base, pair_dirs.adapter, write_jsonl(tmp_path / "evil.jsonl", rows))
    html = result.viewer.read_text()
    assert "<script>alert" not in html and "<b>bold" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(1)" in html and "&lt;img src=x" in html  # the prompt and the id, escaped
    spans = re.findall(r'<span class="tok \w+(?: differs)?"\s+data-e="0" data-i="\d+">(.*?)</span>', html, re.S)
    assert "".join(html_module.unescape(span) for span in spans) == rows[0]["output"]  # escaped, yet exact
    # Only the page's own scripts: one data block per response and the viewer's code.
    assert html.count("<script") == 2 and html.count("</script>") == 2
    assert 'class="tok shifted' in html or 'class="tok marginal' in html or 'class="tok unshifted' in html


def test_the_viewer_shows_a_bounded_number_of_responses(tmp_path, pair_dirs):
    result = run_shift(tmp_path, pair_dirs.base, pair_dirs.adapter, pair_dirs.from_adapter, viewer_max_examples=3)
    html = result.viewer.read_text()
    assert html.count('<section class="example"') == 3 and f"Showing the first 3 of {len(PAIRS)}" in html
    assert "own answer" not in html  # no base answers given


@pytest.mark.filterwarnings("ignore:only .* of response tokens")
def test_the_viewer_shows_the_base_models_own_answer_beside_the_tuned_one(tmp_path, pair_dirs):
    tuned = [{"id": "q1", "instruction": "Name a colour.", "output": "Red."},
             {"id": "q2", "instruction": "Say hello.", "output": "Hello."}]  # fmt: skip
    base = [{"id": "q1", "instruction": "Name a colour.", "output": "Blue <script>alert(3)</script>, and blue."}]
    result = run_shift(
        tmp_path, pair_dirs.base, pair_dirs.adapter, write_jsonl(tmp_path / "tuned.jsonl", tuned),
        base_responses=str(write_jsonl(tmp_path / "base.jsonl", base)),
    )  # fmt: skip
    html = result.viewer.read_text()
    sections = {index: html.split(f'id="response-{index}"')[1].split("</section>")[0] for index in (0, 1)}
    assert "own answer" in sections[0] and "Blue &lt;script&gt;alert(3)&lt;/script&gt;, and blue." in sections[0]
    assert "(no answer)" in sections[1]  # the base file has no answer to q2
    assert "<script>alert(3)" not in html
    assert result.summary["settings"]["base_responses"] == str(tmp_path / "base.jsonl")  # absolute: as given


# ---------------------------------------------------------------------------------------------
# Bad input: one line naming the culprit, exit code 2


def shift_cli(capsys, *argv):
    return cli_run(capsys, "shift", *argv)


@pytest.mark.parametrize(
    ("lines", "fragments"),
    [
        (['{"id": 1, "output_token_ids": [1, 2]}'], ["line 1", "'output_token_ids' but not 'prompt_token_ids'"]),
        (['{"id": 1, "instruction": "q", "output": "a"}', "{oops"], ["line 2", "invalid JSON"]),
        (['{"id": 1, "instruction": "q"}'], ["line 1", "no response"]),
        (['{"id": 1, "prompt_token_ids": [1], "output_token_ids": [5, 99999]}'], ["line 1", "99999", "vocabulary"]),
        (['{"id": "a", "instruction": "q", "output": "x"}'] * 2, ["line 2", "repeats id 'a'", "line 1"]),
        (['{"id": 1, "prompt_token_ids": [1], "output_token_ids": ["x"]}'], ["line 1", "list of integer"]),
    ],
)
def test_bad_response_records(capsys, tmp_path, pair_dirs, lines, fragments):
    responses = tmp_path / "bad.jsonl"
    responses.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    code, err = shift_cli(capsys, "--base", pair_dirs.base, "--tuned", pair_dirs.adapter, "--responses", responses,
                          "--out", out)  # fmt: skip
    assert_one_line(code, err, "bad.jsonl", *fragments)
    assert not out.exists()


def test_models_with_different_tokenizers_are_refused(capsys, tmp_path, pair_dirs):
    other_tokenizer = build_tiny_tokenizer(vocab_size=300)
    other = tmp_path / "other-vocab"
    build_tiny_llama(other_tokenizer).save_pretrained(other)
    other_tokenizer.save_pretrained(other)
    code, err = shift_cli(capsys, "--base", other, "--tuned", pair_dirs.base, "--responses", pair_dirs.from_base,
                          "--out", tmp_path / "out")  # fmt: skip
    assert_one_line(code, err, "different tokenizers", "other-vocab", "300 vs 320")


def test_settings_and_output_directory_errors(capsys, tmp_path, pair_dirs):
    common = ["--base", pair_dirs.base, "--tuned", pair_dirs.adapter, "--responses", pair_dirs.from_adapter]
    code, err = shift_cli(capsys, *common, "--out", tmp_path / "o", "--marginal-max-rank", "0")
    assert_one_line(code, err, "--marginal-max-rank")
    code, err = shift_cli(capsys, *common, "--out", tmp_path / "o", "--unshifted-max-rank", "4")
    assert_one_line(code, err, "marginal_max_rank 3 is smaller than unshifted_max_rank 4")
    code, err = shift_cli(capsys, *common[:4], "--responses", tmp_path / "none.jsonl", "--out", tmp_path / "o")
    assert_one_line(code, err, "none.jsonl", "not found")
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "notes.txt").write_text("mine")
    code, err = shift_cli(capsys, *common, "--out", occupied)
    assert_one_line(code, err, "occupied", "not a tunescope run")
    assert shift_cli(capsys, *common, "--out", tmp_path / "run", "--bootstrap-samples", "10") == (0, [])
    code, err = shift_cli(capsys, *common, "--out", tmp_path / "run", "--bootstrap-samples", "10")
    assert_one_line(code, err, "already holds this run", "--overwrite")
    assert shift_cli(capsys, *common, "--out", tmp_path / "run", "--bootstrap-samples", "10", "--overwrite")[0] == 0


def test_the_command_prints_the_headline_numbers(capsys, tmp_path, pair_dirs):
    args = ["shift", "--base", str(pair_dirs.base), "--tuned", str(pair_dirs.adapter), "--responses",
            str(pair_dirs.from_adapter), "--out", str(tmp_path / "run"), "--mode", "aligntds"]  # fmt: skip
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "mode aligntds:" in printed and "unshifted" in printed and "viewer:" in printed
    assert load_tokenizer(str(pair_dirs.adapter)) is not None
