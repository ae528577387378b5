"""Live shift monitor: how far training has moved the model from its base, every N steps.

At the start of a run the base model answers a few fixed prompts (greedy); those token ids and
the base model's log-probabilities at every response position are stored in the run directory
(``monitor.safetensors``, so a resumed run compares against the same base). Every N optimizer
steps the model being trained reads the same ids, and the monitor logs

* ``monitor_kl``: mean KL(base‖tuned) over the response positions, and
* ``monitor_shifted`` / ``monitor_unshifted``: the share of positions where the tuned model's top
  token has base rank > 3 / rank 1 (the TDS classes, for the tuned model's own choice).

Full fine-tuning drifts away step by step while LoRA stays close: this is where it shows.
The check runs on the main process over the unwrapped model, so it suits one device, DDP and ZeRO-2;
with FSDP or ZeRO-3 the parameters are sharded across processes and `tunescope train` refuses it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from transformers import TrainerCallback

from tunescope.decoding import generate_batch, stop_token_ids
from tunescope.distributions import classify, kl_divergence, log_probs, rank_of

MONITOR_FILE = "monitor.safetensors"


def build_probe_set(
    model: Any, tokenizer: Any, prompts: list[list[int]], max_new_tokens: int
) -> dict[str, torch.Tensor]:
    """The base model's greedy answers to ``prompts`` and its log-probabilities along them.

    Returns padded ``input_ids`` and ``attention_mask``, a ``response_mask`` over the positions
    whose next token is a response token, and ``base_logp`` (float16, one row per such position).
    """
    decoding = {"max_new_tokens": max_new_tokens, "do_sample": False, "repetition_penalty": 1.0}
    was_training = model.training
    model.eval()
    answers = generate_batch(model, tokenizer, prompts, decoding, stop_token_ids(model, tokenizer))
    sequences = [prompt + answer.token_ids for prompt, answer in zip(prompts, answers, strict=True)]
    width = max(map(len, sequences))
    input_ids = torch.full((len(sequences), width), tokenizer.pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    response_mask = torch.zeros_like(input_ids, dtype=torch.bool)
    for row, (prompt, sequence) in enumerate(zip(prompts, sequences, strict=True)):
        input_ids[row, : len(sequence)] = torch.tensor(sequence)
        attention_mask[row, : len(sequence)] = 1
        # Position t predicts token t + 1: the positions from the prompt's last token onwards.
        response_mask[row, len(prompt) - 1 : len(sequence) - 1] = True
    probe = {"input_ids": input_ids, "attention_mask": attention_mask, "response_mask": response_mask}
    # float16 halves the file; log-probabilities below -1e4 are probability 0 either way, and the
    # clamp keeps them finite (float16 would turn the most negative float32 into -inf, then NaN).
    probe["base_logp"] = _response_log_probs(model, probe).clamp(min=-1e4).half()
    model.train(was_training)
    return probe


def _response_log_probs(model: Any, probe: dict[str, torch.Tensor]) -> torch.Tensor:
    device = next(model.parameters()).device
    with torch.no_grad():
        logits = model(
            input_ids=probe["input_ids"].to(device), attention_mask=probe["attention_mask"].to(device)
        ).logits
    return log_probs(logits[probe["response_mask"].to(device)].float()).cpu()


def shift_from_base(model: Any, probe: dict[str, torch.Tensor]) -> dict[str, float]:
    """KL(base‖model) and the TDS class shares of the model's top tokens on the probe set."""
    was_training = model.training
    model.eval()  # dropout off: the measurement should not depend on the random mask
    tuned_logp = _response_log_probs(model, probe)
    model.train(was_training)
    base_logp = probe["base_logp"].float()
    classes = classify(rank_of(base_logp, tuned_logp.argmax(dim=-1)))
    return {
        "monitor_kl": kl_divergence(base_logp, tuned_logp).mean().item(),
        "monitor_unshifted": (classes == 0).float().mean().item(),
        "monitor_shifted": (classes == 2).float().mean().item(),
    }


class ShiftMonitor(TrainerCallback):
    """Measure the shift from the base model every ``every`` optimizer steps (see module docstring)."""

    def __init__(self, run_dir: Path, tokenizer: Any, prompts: list[list[int]], every: int, max_new_tokens: int):
        self.path = run_dir / MONITOR_FILE
        self.tokenizer = tokenizer
        self.prompts = prompts
        self.every = every
        self.max_new_tokens = max_new_tokens
        self.probe: dict[str, torch.Tensor] | None = None
        self.pending: dict[int, dict[str, float]] = {}

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        """Build the probe set from the untouched model, or reload it when resuming."""
        if not state.is_world_process_zero:
            return
        if self.path.is_file():
            self.probe = load_file(str(self.path))
            return
        # Only a run that has not started yet still holds the base weights.
        if state.global_step == 0:
            self.probe = build_probe_set(model, self.tokenizer, self.prompts, self.max_new_tokens)
            tmp = self.path.with_suffix(".tmp")
            save_file({k: v.contiguous() for k, v in self.probe.items()}, str(tmp))
            tmp.replace(self.path)
            self.pending[0] = shift_from_base(model, self.probe)

    def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        """Measure at every ``every``-th step and at the last one."""
        if self.probe is None or not state.is_world_process_zero:
            return
        if state.global_step % self.every == 0 or state.global_step >= state.max_steps:
            self.pending[state.global_step] = shift_from_base(model, self.probe)

    def pop_metrics(self, step: int) -> dict[str, float]:
        """The measurement taken at ``step``, if any (step 0: before the first update)."""
        return self.pending.pop(step, {})


def read_monitor(metrics_path: Path) -> list[dict[str, float]]:
    """The monitor's measurements from a run's ``metrics.jsonl``: step, KL and class shares."""
    rows = [json.loads(line) for line in metrics_path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [
        {"step": row["step"], **{key: value for key, value in row.items() if key.startswith("monitor_")}}
        for row in rows
        if "monitor_kl" in row
    ]
