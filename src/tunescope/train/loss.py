"""The output layer and the loss at labelled positions only, on a CPU as on CUDA.

TRL's ``SFTTrainer`` computes the loss through its fused LM head (``trl.trainer.add_fused_lm_head``):
``trl.kernels.ChunkedLogProbFunction`` projects hidden states through the output layer in tiles of
at most 4,096 tokens × 32,768 vocabulary entries and folds each tile into running log-sum-exp
statistics, so the ``[tokens × vocabulary]`` logits never exist, in the forward or the backward
pass. Where Triton runs (CUDA, XPU) TRL projects only the positions whose label is not -100;
everywhere else it projects *every* position, prompt and padding included, to keep the tile shapes
fixed for graph compilers (Neuron). A CPU runs eagerly and recompiles nothing, and there the output
layer dominates the cost for a large vocabulary: Gemma-3's 262,144-entry layer is about 60% of a
forward pass, so scoring the prompt too roughly doubles the time of a step.

:func:`score_labelled_positions_only` re-patches the forward TRL installed so that CPU runs also
project only the labelled positions, through the same TRL kernel (which has a plain-torch path for
devices without Triton). Nothing else changes: TRL's ``compute_loss`` still normalises by
``num_items_in_batch`` and logs its entropy and token-accuracy metrics, now from the same compact
tiles. A few lines of TRL's forward are repeated here because TRL offers no switch for this.
"""

from __future__ import annotations

import functools
import types
from typing import Any

from tunescope.data.templates import IGNORE_INDEX

# Per-token fields TRL's SFTTrainer asks its fused head for: the loss, and the entropy and
# top-1 metrics it logs (mean_token_entropy and token_accuracy in metrics.jsonl).
FUSED_OUTPUTS = ("log_probs", "entropy", "is_top1")
# Vocabulary entries per projection tile, as in TRL (``trl.trainer.utils._CHUNKED_LOGPROB_CHUNK_SIZE``).
VOCABULARY_TILE = 32768
# Config fields that change the logits in ways this path does not reproduce; such models keep TRL's path.
UNSUPPORTED_CONFIG_FIELDS = ("logit_scale", "output_multiplier", "lm_head_multiplier", "logits_scaling")


def supports_labelled_positions_only(model: Any) -> bool:
    """Whether :func:`score_labelled_positions_only` reproduces ``model``'s logits exactly.

    Logit scaling and mixture-of-experts router losses are left to TRL's own forward, which handles them.
    """
    text_config = model.config.get_text_config()
    if getattr(text_config, "output_router_logits", False):
        return False
    return all(getattr(text_config, field, None) is None for field in UNSUPPORTED_CONFIG_FIELDS)


def _sharded(weight: Any) -> bool:
    """Whether the output layer's weight is split across processes (FSDP2, DeepSpeed ZeRO-3)."""
    from torch.distributed.tensor import DTensor
    from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled

    return isinstance(weight, DTensor) or is_deepspeed_zero3_enabled()


def score_labelled_positions_only(model: Any) -> bool:
    """Make ``model(..., labels=..., fused_lm_head=True)`` project only labelled positions on a CPU too.

    Args:
        model: The causal LM that TRL gave its fused head (for a PEFT model, its base model); patched
            in place. Calls without ``fused_lm_head``, calls on devices other than the CPU (where TRL
            already scores labelled positions only, with Triton) and calls with a sharded output layer
            (which TRL gathers first) go to TRL's forward unchanged.

    Returns:
        True when patched; False (and untouched) for a model whose config asks for what this path
        does not reproduce (see :func:`supports_labelled_positions_only`).
    """
    if not supports_labelled_positions_only(model):
        return False
    import torch
    from trl.kernels import ChunkedLogProbFunction
    from trl.trainer.utils import FusedCausalLMOutput

    trl_forward = model.forward
    softcap = getattr(model.config.get_text_config(), "final_logit_softcapping", None)

    @functools.wraps(type(model).forward)  # generate() checks its keyword arguments against this signature
    def forward(
        self: Any,
        *args: Any,
        fused_lm_head: bool = False,
        labels: Any = None,
        shift_labels: Any = None,
        num_items_in_batch: Any = None,
        **kwargs: Any,
    ) -> Any:
        lm_head = self.get_output_embeddings()
        if (
            not fused_lm_head
            or shift_labels is not None
            or lm_head.weight.device.type != "cpu"
            or _sharded(lm_head.weight)
        ):
            return trl_forward(
                *args, fused_lm_head=fused_lm_head, labels=labels, shift_labels=shift_labels,
                num_items_in_batch=num_items_in_batch, **kwargs,
            )  # fmt: skip
        kwargs["use_cache"] = False
        # The backbone is looked up on each call, since PEFT and FSDP replace modules after patching.
        hidden_states = self.base_model(*args, **kwargs).last_hidden_state[:, :-1]
        next_labels = labels[:, 1:]
        mask = next_labels != IGNORE_INDEX
        per_token = ChunkedLogProbFunction.apply(
            hidden_states[mask], lm_head.weight, lm_head.bias, next_labels[mask],
            1.0, VOCABULARY_TILE, softcap, 1.0, FUSED_OUTPUTS,
        )  # fmt: skip
        # Back to [batch, positions], zero where unlabelled, as TRL's compute_loss expects; masked_scatter
        # keeps a micro-batch without labels connected to the graph (a differentiable zero).
        log_probs, entropy, _, _, is_top1 = (
            None if values is None else values.new_zeros(mask.shape).masked_scatter(mask, values)
            for values in per_token
        )
        denominator = mask.sum().clamp(min=1) if num_items_in_batch is None else num_items_in_batch
        return FusedCausalLMOutput(
            loss=-log_probs.sum() / torch.as_tensor(denominator),
            log_probs=log_probs,
            entropy=entropy,
            is_top1=is_top1,
            label_mask=mask,
        )

    model.forward = types.MethodType(forward, model)
    return True
