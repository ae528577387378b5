"""Slow tier: generate and shift on the real default model (SmolLM2-135M-Instruct) with a LoRA adapter."""

import json

import pytest
import torch

from tunescope.cli import main
from tunescope.models import load_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    from peft import LoraConfig, get_peft_model

    out = tmp_path_factory.mktemp("smollm2-adapter")
    torch.manual_seed(0)
    config = LoraConfig(r=8, lora_alpha=1, init_lora_weights=False, target_modules="all-linear")
    get_peft_model(load_model("smollm2"), config).save_pretrained(out)
    return out


def test_generate_and_shift_on_the_default_model(tmp_path, adapter, capsys):
    responses = tmp_path / "responses.jsonl"
    generate_args = ["generate", "--model", str(adapter), "--subset-size", "3", "--max-new-tokens", "24",
                     "--out", str(responses)]  # fmt: skip
    assert main(generate_args) == 0
    records = [json.loads(line) for line in responses.read_text().splitlines()]
    assert len(records) == 3 and all(r["id"].startswith("mtbench-") for r in records)
    assert all(r["prompt"].startswith("<|im_start|>system") for r in records)

    out = tmp_path / "shift"
    assert main(["shift", "--base", "smollm2", "--tuned", str(adapter), "--responses", str(responses),
                 "--out", str(out), "--bootstrap-samples", "100"]) == 0  # fmt: skip
    assert "mode exact:" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["models"]["pairing"] == "disable_adapter"
    assert summary["n_tokens"] == sum(len(r["output_token_ids"]) - (r["finish_reason"] == "stop") for r in records)
    assert summary["micro"]["tuned_top1_agreement"]["value"] == 1.0  # exactly the greedy tokens, re-scored
    assert 0 < summary["kl_mean"] < 5 and summary["unshifted"] > 0.3  # a small adapter shifts a little
    assert (out / "viewer.html").read_text().count('<section class="example" id="response-') == 3

    compat = tmp_path / "aligntds"
    assert main(["shift", "--base", "smollm2", "--tuned", str(adapter), "--responses", str(responses),
                 "--out", str(compat), "--mode", "aligntds", "--base-prompt", "aligntds"]) == 0  # fmt: skip
    examples = [json.loads(line) for line in (compat / "examples.jsonl").read_text().splitlines()]
    assert all(e["base_prompt"].startswith("# Query:") for e in examples)
    assert json.loads((compat / "summary.json").read_text())["mode"] == "aligntds"
