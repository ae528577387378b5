"""Raw-text data and continued pre-training: documents, packing, runs that start from runs, NEFTune."""

import json

import pytest
import torch

from tunescope.cli import main
from tunescope.data import DataSettings, load_examples, tokenize_documents
from tunescope.data.readers import split_documents
from tunescope.models import MERGED_PARENT, load_model, load_tokenizer, resolve_model
from tunescope.train.neftune import example_lengths

from conftest import CORPUS, assert_one_line, cli_run, rows_in_format, write_jsonl

FAST = ["--batch-size", "4", "--micro-batch-size", "2", "--warmup-ratio", "0"]
NOTES = "\n\n".join(
    [
        "Notes on spiders",  # a heading: joined to the paragraph after it
        "A spider has eight legs. " * 3 + "\nSpiders spin silk from glands at the back of the body.",
        "The capital of France is Paris. Paris lies on the river Seine, and it is the largest city of France.",
        "\f Red, green and blue are three colours that light can mix into white, as painters and printers know.",
        "Plants turn light and water into sugar, and the garden drinks in the rain while the clouds drift away.",
    ]
)


def train(model, data, out, *extra):
    return main(["train", "--model", str(model), "--data", str(data), "--out", str(out), *FAST, *extra])


def test_text_is_split_at_blank_lines_and_form_feeds_with_short_paragraphs_joined():
    documents = split_documents(NOTES)
    assert [line for line, _ in documents] == [1, 6, 8, 10]  # each document's first line
    assert documents[0][1].startswith("Notes on spiders\n\nA spider has eight legs.")
    assert "\nSpiders spin silk" in documents[0][1]  # line breaks inside a paragraph are kept
    assert documents[2][1].startswith("Red, green")
    assert split_documents("too short\n\n  \n\nalso short") == [(1, "too short\n\nalso short")]
    assert split_documents("   \n\n") == []


def test_text_sources_read_as_documents(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text(NOTES)
    loaded = load_examples(DataSettings(data=str(notes)))
    assert loaded.format == "text" and loaded.n_records == 4 and len(loaded.fingerprint) == 64
    assert loaded.examples[1].text.startswith("The capital") and loaded.examples[1].messages == []
    assert loaded.examples[1].locator == f"{notes} line 6"

    folder = tmp_path / "folder"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text(NOTES)
    (folder / "sub" / "b.txt").write_text(CORPUS[0] + " " + CORPUS[1])
    (folder / "empty.txt").write_text("")
    many = load_examples(DataSettings(data=str(folder), format="text"))
    assert many.n_records == 5 and many.examples[-1].locator == f"{folder / 'sub' / 'b.txt'} line 1"
    (folder / "a.txt").write_text(NOTES + "\n\nOne more paragraph that is long enough to stand on its own.")
    assert load_examples(DataSettings(data=str(folder))).fingerprint != many.fingerprint

    rows = write_jsonl(tmp_path / "docs.jsonl", [{"id": "d1", "text": NOTES}, {"id": "d2", "text": "  "}])
    from_jsonl = load_examples(DataSettings(data=str(rows), subset_size=1))
    assert from_jsonl.format == "text" and from_jsonl.n_without_response == 1
    assert [d.id for d in from_jsonl.examples] == ["d1"]


def test_documents_are_cut_into_pieces_with_every_token_trained(tiny_tokenizer, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text(NOTES)
    documents = load_examples(DataSettings(data=str(notes))).examples
    pieces = tokenize_documents(tiny_tokenizer, documents, max_length=16)
    whole = tokenize_documents(tiny_tokenizer, documents, max_length=10_000)
    assert len(whole) == len(documents) and all(p.input_ids[-1] == tiny_tokenizer.eos_token_id for p in whole)
    # Nothing is dropped: the pieces of a document are its tokens, in order (a final 1-token piece aside).
    for document in whole:
        mine = [p for p in pieces if p.example_id.split("#")[0] == document.example_id]
        joined = [token for p in mine for token in p.input_ids]
        assert document.input_ids[: len(joined)] == joined and len(document.input_ids) - len(joined) <= 1
        assert all(len(p.input_ids) <= 16 and p.labels == p.input_ids for p in mine)
    assert {p.example_id for p in pieces} >= {"0#0", "0#1"}


@pytest.mark.parametrize(
    ("content", "fragments"),
    [
        ("", ["notes.txt: the text file is empty"]),
        ("\n \n\t\n", ["notes.txt: the text file is empty"]),
        (b"\xff\xfe bad", ["notes.txt: not UTF-8 text"]),
    ],
)
def test_bad_text_files_get_one_line_errors(tiny_model_dir, tmp_path, capsys, content, fragments):
    notes = tmp_path / "notes.txt"
    notes.write_bytes(content if isinstance(content, bytes) else content.encode())
    code, err = cli_run(capsys, "train", "--model", tiny_model_dir, "--data", notes, "--format", "text",
                        "--out", tmp_path / "run")  # fmt: skip
    assert_one_line(code, err, *fragments)


def test_text_records_without_text_get_one_line_errors(tiny_model_dir, tmp_path, capsys):
    rows = write_jsonl(tmp_path / "docs.jsonl", [{"text": "fine " * 20}, {"body": "no text field"}])
    code, err = cli_run(capsys, "train", "--model", tiny_model_dir, "--data", rows, "--format", "text",
                        "--out", tmp_path / "a")  # fmt: skip
    assert_one_line(code, err, "docs.jsonl line 2", "missing field 'text'")
    rows = write_jsonl(tmp_path / "nums.jsonl", [{"text": 7}])
    code, err = cli_run(capsys, "train", "--model", tiny_model_dir, "--data", rows, "--format", "text",
                        "--out", tmp_path / "b")  # fmt: skip
    assert_one_line(code, err, "nums.jsonl line 1", "'text' must be a string")
    rows = write_jsonl(tmp_path / "blank.jsonl", [{"text": " "}, {"text": ""}])
    code, err = cli_run(capsys, "train", "--model", tiny_model_dir, "--data", rows, "--out", tmp_path / "c")
    assert_one_line(code, err, "blank.jsonl", "no documents")
    empty_dir = tmp_path / "texts"
    empty_dir.mkdir()
    (empty_dir / "a.txt").write_text("  \n")
    code, err = cli_run(capsys, "train", "--model", tiny_model_dir, "--data", empty_dir, "--out", tmp_path / "d")
    assert_one_line(code, err, "texts: no documents")
    code, err = cli_run(capsys, "generate", "--model", tiny_model_dir, "--data", rows.with_name("docs.jsonl"),
                        "--out", tmp_path / "r.jsonl")  # fmt: skip
    assert code == 2 and "not prompts" in err[-1]


def test_continued_pretraining_then_instruction_tuning(tiny_model_dir, tmp_path, capsys):
    """The issue's two commands: LoRA on notes.txt, then LoRA on top of that run, on Q&A data."""
    notes = tmp_path / "notes.txt"
    notes.write_text(NOTES * 3)
    qa = write_jsonl(tmp_path / "qa.jsonl", rows_in_format("messages"))
    cpt, tuned = tmp_path / "runs" / "cpt", tmp_path / "runs" / "cpt-lora"
    assert train(tiny_model_dir, notes, tmp_path / "dry", "--format", "text", "--max-length", "32", "--dry-run") == 0
    shown = capsys.readouterr().out
    assert "format text" in shown and "packed rows:" in shown and "⟦" not in shown.split("---")[1]

    args = ["--format", "text", "--method", "lora", "--max-length", "32", "--epochs", "2", "--learning-rate", "3e-2"]
    assert train(tiny_model_dir, notes, cpt, *args) == 0
    provenance = json.loads((cpt / "provenance.json").read_text())
    assert provenance["data"]["format"] == "text" and provenance["lineage"] == []
    assert provenance["loss_path"] == {
        "logits_at_labels_only": True,
        "batching": "packed to 32 tokens (bfd), padding-free",
    }
    stats = provenance["data"]["statistics"]
    assert stats["documents"] == 12 and stats["pieces"] > stats["documents"] and stats["tokens"]["max"] <= 32
    losses = [json.loads(line)["loss"] for line in (cpt / "metrics.jsonl").read_text().splitlines()]
    assert losses[-1] < losses[0]
    # TRL's own loss path on the same packed rows gives the same first loss.
    plain = tmp_path / "plain"
    assert train(tiny_model_dir, notes, plain, *args, "--max-steps", "1", "--no-logits-at-labels-only") == 0
    first = json.loads((plain / "metrics.jsonl").read_text().splitlines()[0])["loss"]
    assert first == pytest.approx(losses[0], rel=1e-4)

    assert train(cpt, qa, tuned, "--method", "lora", "--max-steps", "2", "--learning-rate", "3e-2") == 0
    chain = json.loads((tuned / "provenance.json").read_text())["lineage"]
    assert [(entry["method"], entry["data"]["format"]) for entry in chain] == [("lora", "text")]
    assert chain[0]["run"] == str(cpt.resolve()) and chain[0]["data"]["sha256"] == provenance["data"]["sha256"]
    # LoRA on a LoRA run: the first adapter is merged into the base, and that merged model is the new base.
    merged = tuned / MERGED_PARENT
    source = resolve_model(str(tuned))
    assert source.kind == "adapter" and source.base.location == str(merged.resolve())
    ids = load_tokenizer(str(tuned))("A spider has eight legs.", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        cpt_logits = load_model(str(cpt)).eval()(ids).logits
        parent_logits = load_model(str(merged)).eval()(ids).logits
        base_logits = load_model(str(tiny_model_dir)).eval()(ids).logits
        tuned_model = load_model(str(tuned)).eval()
        tuned_logits = tuned_model(ids).logits
        with tuned_model.disable_adapter():
            without_second = tuned_model(ids).logits
    assert torch.allclose(cpt_logits, parent_logits, atol=1e-4)  # merged == adapter applied
    assert (cpt_logits - base_logits).abs().max() > 1e-3  # continued pre-training changed the model
    assert torch.allclose(without_second, cpt_logits, atol=1e-4)  # the second adapter sits on the first
    assert (tuned_logits - cpt_logits).abs().max() > 1e-3

    # Copied elsewhere, the run still finds its merged base (the recorded absolute path is gone).
    moved = tmp_path / "moved"
    tuned.rename(moved)
    assert resolve_model(str(moved)).base.location == str(moved / MERGED_PARENT)

    # Full fine-tuning on top of the LoRA run needs no merged copy: the whole model is saved.
    assert train(cpt, qa, tmp_path / "cpt-full", "--method", "full", "--max-steps", "1") == 0
    assert not (tmp_path / "cpt-full" / MERGED_PARENT).exists()
    chain = json.loads((tmp_path / "cpt-full" / "provenance.json").read_text())["lineage"]
    assert chain[0]["method"] == "lora"


def test_a_chain_of_three_runs_is_recorded_oldest_first(tiny_model_dir, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text(NOTES)
    qa = write_jsonl(tmp_path / "qa.jsonl", rows_in_format("alpaca"))
    assert train(tiny_model_dir, notes, tmp_path / "a", "--method", "full", "--max-steps", "1") == 0
    assert train(tmp_path / "a" / "model", qa, tmp_path / "b", "--method", "full", "--max-steps", "1") == 0
    assert train(tmp_path / "b", qa, tmp_path / "c", "--method", "lora", "--max-steps", "1") == 0
    chain = json.loads((tmp_path / "c" / "provenance.json").read_text())["lineage"]
    assert [entry["run"] for entry in chain] == [str((tmp_path / name).resolve()) for name in ("a", "b")]
    assert [entry["data"]["format"] for entry in chain] == ["text", "alpaca"]
    assert not (tmp_path / "c" / MERGED_PARENT).exists()  # a full run's model is the adapter's base as it is


def test_neftune_noise_scales_with_each_examples_own_length():
    # A padding-free row of two examples (3 and 5 tokens) and a padded batch of the same two.
    packed = example_lengths((1, 8), position_ids=torch.tensor([[0, 1, 2, 0, 1, 2, 3, 4]]))
    assert packed.tolist() == [[3, 3, 3, 5, 5, 5, 5, 5]]
    padded = example_lengths((2, 5), attention_mask=torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]))
    assert padded.tolist() == [[3] * 5, [5] * 5]
    assert example_lengths((2, 4)).tolist() == [[4] * 4] * 2


@pytest.mark.parametrize(("method", "padding_free"), [("full", True), ("lora", False)])
def test_neftune_trains_and_adds_noise_only_while_training(tiny_model_dir, tmp_path, method, padding_free):
    from tunescope.train.neftune import noisy_embeddings

    model = load_model(str(tiny_model_dir))
    ids = torch.tensor([[5, 6, 7, 8, 9, 10]])
    embeddings = model.get_input_embeddings()
    clean = embeddings(ids)
    with noisy_embeddings(model, 5.0):
        model.train()
        model(input_ids=ids, position_ids=torch.tensor([[0, 1, 2, 0, 1, 2]]))
        noisy = embeddings(ids)  # called outside the model: the last layout (two examples of 3) still applies
        model.eval()
        assert torch.equal(embeddings(ids), clean)
    bound = 5.0 / (3 * clean.shape[-1]) ** 0.5
    difference = (noisy - clean).abs()
    assert 0 < difference.max() <= bound + 1e-6 and difference.max() > bound / 2
    model.train()
    assert torch.equal(embeddings(ids), clean)  # the hooks are gone

    data = write_jsonl(tmp_path / "train.jsonl", rows_in_format("messages"))
    out = tmp_path / "run"
    flags = ["--method", method, "--max-steps", "2", "--neftune-noise-alpha", "5"]
    batching = "--padding-free" if padding_free else "--no-padding-free"
    assert train(tiny_model_dir, data, out, *flags, batching) == 0
    assert json.loads((out / "provenance.json").read_text())["neftune_noise_alpha"] == 5.0
    assert train(tiny_model_dir, data, tmp_path / "quiet", *flags[:-2], batching) == 0
    # Same seed, same batches: only the noise on the embeddings makes the first loss differ.
    first = [
        json.loads((run / "metrics.jsonl").read_text().splitlines()[0])["loss"] for run in (out, tmp_path / "quiet")
    ]
    assert first[0] != pytest.approx(first[1], rel=1e-6)
