"""The output layer at labelled positions only, and padding-free batches: same losses, less work."""

import json
from pathlib import Path

import pytest
import torch
import trl.kernels
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from trl.trainer import add_fused_lm_head

from tunescope.data import IGNORE_INDEX
from tunescope.models import load_tokenizer
from tunescope.train import TrainConfig, prepare_training_data, train
from tunescope.train.loss import FUSED_OUTPUTS, score_labelled_positions_only

from conftest import build_tiny_llama, rows_in_format, write_jsonl


def build_tiny_gemma3(tokenizer, seed: int = 0, softcap: float | None = None):
    """A random Gemma3ForCausalLM with one sliding-window layer (window 4) and one global layer."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(seed)
    config = Gemma3TextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=1, head_dim=8, sliding_window=4,
        layer_types=["sliding_attention", "full_attention"], max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, final_logit_softcapping=softcap, initializer_range=0.2,
    )  # fmt: skip
    return Gemma3ForCausalLM(config)


BUILDERS = {"llama": build_tiny_llama, "gemma3": build_tiny_gemma3}


class VocabularyWideTensors(TorchDispatchMode):
    """Records the most rows any tensor of vocabulary width (last dimension) had."""

    def __init__(self, vocab_size: int):
        super().__init__()
        self.vocab_size = vocab_size
        self.most_rows = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in tree_leaves(out):
            if isinstance(tensor, torch.Tensor) and tensor.dim() >= 2 and tensor.shape[-1] == self.vocab_size:
                self.most_rows = max(self.most_rows, tensor.numel() // self.vocab_size)
        return out


def batch_with_labels(tokenizer, n_rows=2, length=20, labelled=((12, 19), (8, 20))):
    torch.manual_seed(1)
    input_ids = torch.randint(5, len(tokenizer), (n_rows, length))
    labels = torch.full_like(input_ids, IGNORE_INDEX)
    for row, (start, stop) in enumerate(labelled):
        labels[row, start:stop] = input_ids[row, start:stop]
    return input_ids, labels


def fused(model, fast: bool):
    add_fused_lm_head(model, outputs=FUSED_OUTPUTS)
    if fast:
        assert score_labelled_positions_only(model)
    return model


@pytest.mark.parametrize("softcap", [None, 5.0])
def test_fused_outputs_equal_those_of_the_full_logits(tiny_tokenizer, softcap):
    model = build_tiny_gemma3(tiny_tokenizer, softcap=softcap)
    input_ids, labels = batch_with_labels(tiny_tokenizer)
    reference = model(input_ids=input_ids, labels=labels)  # the model's own loss over full (soft-capped) logits
    logits = reference.logits[:, :-1].detach()
    targets, mask = labels[:, 1:], labels[:, 1:] != IGNORE_INDEX
    log_softmax = logits.log_softmax(-1)

    out = fused(model, fast=True)(input_ids=input_ids, labels=labels, fused_lm_head=True)
    assert abs(out.loss.item() - reference.loss.item()) < 1e-5
    expected_entropy = -(log_softmax.exp() * log_softmax).sum(-1)
    assert torch.allclose(out.entropy[mask], expected_entropy[mask], atol=1e-5)
    assert torch.equal(out.is_top1[mask], logits.argmax(-1)[mask] == targets[mask])
    assert torch.equal(out.label_mask, mask) and not out.log_probs[~mask].any()


@pytest.mark.parametrize("kind", ["llama", "gemma3"])
def test_gradients_equal_those_of_trls_path(tiny_tokenizer, kind):
    input_ids, labels = batch_with_labels(tiny_tokenizer)
    gradients = []
    for fast in (True, False):
        model = fused(BUILDERS[kind](tiny_tokenizer), fast)
        out = model(input_ids=input_ids, labels=labels, fused_lm_head=True, num_items_in_batch=torch.tensor(21))
        out.loss.backward()
        gradients.append({name: p.grad for name, p in model.named_parameters()})
    for name, grad in gradients[0].items():
        assert torch.allclose(grad, gradients[1][name], atol=1e-6), name


def test_the_full_logits_never_exist(tiny_tokenizer):
    input_ids, labels = batch_with_labels(tiny_tokenizer)
    n_labelled = int((labels[:, 1:] != IGNORE_INDEX).sum())  # 6 + 12 next-token targets
    rows = {}
    for fast in (True, False):
        model = fused(build_tiny_llama(tiny_tokenizer, hidden=8), fast)
        with VocabularyWideTensors(len(tiny_tokenizer)) as seen:
            model(input_ids=input_ids, labels=labels, fused_lm_head=True).loss.backward()
        rows[fast] = seen.most_rows
    assert rows[True] == n_labelled  # one tile holding the labelled positions, in both passes
    assert rows[False] == input_ids.shape[0] * (input_ids.shape[1] - 1)  # TRL on a CPU: every position


def test_a_micro_batch_without_labels_gives_a_zero_loss_and_zero_gradients(tiny_tokenizer):
    model = fused(build_tiny_llama(tiny_tokenizer), fast=True)
    input_ids, labels = batch_with_labels(tiny_tokenizer)
    out = model(input_ids=input_ids, labels=torch.full_like(labels, IGNORE_INDEX), fused_lm_head=True)
    out.loss.backward()
    assert out.loss.item() == 0.0
    assert all(not p.grad.any() for p in model.parameters() if p.grad is not None)


def test_calls_without_the_fused_head_are_untouched(tiny_tokenizer):
    model = build_tiny_llama(tiny_tokenizer)
    input_ids, labels = batch_with_labels(tiny_tokenizer)
    before = model(input_ids=input_ids, labels=labels)
    fused(model, fast=True)
    after = model(input_ids=input_ids, labels=labels)
    assert torch.equal(before.logits, after.logits) and torch.equal(before.loss, after.loss)
    generated = model.generate(input_ids[:1, :5], max_new_tokens=3, do_sample=False)
    assert generated.shape == (1, 8)


def test_models_that_scale_their_logits_keep_trls_path(tiny_tokenizer):
    model = build_tiny_llama(tiny_tokenizer)
    model.config.logit_scale = 0.5
    add_fused_lm_head(model, outputs=FUSED_OUTPUTS)
    trl_forward = model.forward
    assert not score_labelled_positions_only(model)
    assert model.forward == trl_forward


def _config(model_dir, data, out, method, **switches):
    return TrainConfig(
        model=str(model_dir), data=str(data), out=str(out), method=method, epochs=2, effective_batch_size=4,
        micro_batch_size=2, warmup_ratio=0, learning_rate=2e-3, **switches,
    )  # fmt: skip


def _losses(config):
    train(config)
    return [json.loads(line) for line in (Path(config.out) / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture
def labelled_rows_scored(monkeypatch):
    """Rows each call of tunescope's path gives TRL's kernel (TRL's own path keeps its own reference)."""
    calls, kernel = [], trl.kernels.ChunkedLogProbFunction

    class Recording(kernel):
        @staticmethod
        def forward(ctx, hidden, *args):
            calls.append(hidden.shape[0])
            return kernel.forward(ctx, hidden, *args)

    monkeypatch.setattr(trl.kernels, "ChunkedLogProbFunction", Recording)
    return calls


@pytest.mark.parametrize("method", ["lora", "full"])
@pytest.mark.parametrize("kind", ["llama", "gemma3"])
def test_training_losses_equal_trls_step_by_step(tiny_tokenizer, tmp_path, kind, method, labelled_rows_scored):
    model_dir = tmp_path / "model"
    BUILDERS[kind](tiny_tokenizer).save_pretrained(model_dir)
    tiny_tokenizer.save_pretrained(model_dir)
    # Examples of different lengths, so that padded and padding-free batches differ in layout.
    rows = rows_in_format("messages")
    rows[1]["messages"][1]["content"] *= 6
    data = write_jsonl(tmp_path / "train.jsonl", rows)
    defaults = _config(model_dir, data, tmp_path / "fast", method)  # both switches on
    examples = prepare_training_data(defaults, load_tokenizer(str(model_dir))).examples
    labelled_per_epoch = sum(example.trained_tokens for example in examples)

    fast = _losses(defaults)
    assert sum(labelled_rows_scored) == 2 * labelled_per_epoch  # only labelled positions, every step
    trl = _losses(_config(model_dir, data, tmp_path / "trl", method, logits_at_labels_only=False, padding_free=False))
    padded = _losses(_config(model_dir, data, tmp_path / "padded", method, padding_free=False))
    assert sum(labelled_rows_scored) == 4 * labelled_per_epoch  # the TRL run never came here

    assert len(fast) == len(trl) == len(padded) == 4
    for ours, theirs, padded_row in zip(fast, trl, padded, strict=True):
        # Later steps' losses also compare the gradients of earlier ones (learning rate 2e-3).
        assert abs(ours["loss"] - theirs["loss"]) < 1e-4 and abs(padded_row["loss"] - theirs["loss"]) < 1e-4
        assert abs(ours["mean_token_entropy"] - theirs["mean_token_entropy"]) < 1e-4
        assert ours["token_accuracy"] == pytest.approx(theirs["token_accuracy"], abs=1e-6)
        assert ours["tokens_seen"] == theirs["tokens_seen"]
    assert fast[-1]["loss"] < fast[0]["loss"]
