"""NEFTune: uniform noise on the input embeddings while training, scaled by each example's own length.

Jain et al. (2023), "NEFTune: Noisy Embeddings Improve Instruction Finetuning": during training, add
to the embeddings of a sequence of ``L`` tokens of dimension ``d`` noise drawn uniformly from
``[-a, a]`` with ``a = alpha / sqrt(L * d)`` (the paper's default ``alpha`` is 5). The paper's
comparisons in "A Closer Look at the Limitations of Instruction Tuning" call full fine-tuning with
it NFT.

transformers has the same hook (``TrainingArguments.neftune_noise_alpha``), but it takes ``L`` as the
width of the batch tensor. In a padding-free or packed row that is the summed length of every
example in the micro-batch, so the noise would shrink as micro-batches grow (by half for four
examples of equal length), and in a padded batch it is the longest example's length. Here ``L`` is
the length of the example each token belongs to, read from the position ids (padding-free and packed
rows restart them at every example) or the attention mask (padded batches), so the noise is the same
however the examples are batched. Written here for that reason; the rest is as in transformers.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

NEFTUNE_DEFAULT_ALPHA = 5.0
"""The NEFTune paper's default noise scale, used by the ``nft`` experiment arm unless set."""


def example_lengths(input_shape: tuple[int, int], position_ids: Any = None, attention_mask: Any = None) -> torch.Tensor:
    """For every position of a ``[batch, length]`` input, the length of the example it belongs to.

    Examples are found from ``position_ids`` when given (each example's positions start at 0), else
    from ``attention_mask`` (one example per row, padding excluded), else each row is one example.
    """
    batch, length = input_shape
    if position_ids is not None:
        starts = position_ids == 0
        starts[:, 0] = True
        segment = starts.long().cumsum(-1)  # example number of every position, per row
        sizes = torch.zeros(batch, length + 1, dtype=torch.long, device=segment.device)
        sizes.scatter_add_(1, segment, torch.ones_like(segment))
        return sizes.gather(1, segment)
    if attention_mask is not None:
        return attention_mask.long().sum(-1, keepdim=True).clamp(min=1).expand(batch, length)
    return torch.full((batch, length), length, dtype=torch.long)


@contextlib.contextmanager
def noisy_embeddings(model: Any, alpha: float) -> Iterator[None]:
    """While active, add NEFTune noise to ``model``'s input embeddings in training mode (not in eval mode).

    Args:
        model: The model the trainer calls (a PEFT model is looked through to its embeddings).
        alpha: The noise scale (the paper's default is :data:`NEFTUNE_DEFAULT_ALPHA`).
    """
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    embeddings = inner.get_input_embeddings()
    batch_layout: dict[str, Any] = {}

    def remember_layout(module: Any, args: tuple, kwargs: dict[str, Any]) -> None:
        batch_layout["position_ids"] = kwargs.get("position_ids")
        batch_layout["attention_mask"] = kwargs.get("attention_mask")

    def add_noise(module: Any, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        if not module.training:
            return output
        lengths = example_lengths(
            tuple(output.shape[:2]), batch_layout.get("position_ids"), batch_layout.get("attention_mask")
        ).to(output.device)
        bound = (alpha / torch.sqrt(lengths.to(output.dtype) * output.shape[-1])).unsqueeze(-1)
        return output + (torch.rand_like(output) * 2 - 1) * bound

    # The layout arrives as keyword arguments of the trainer's call to the model, before the embeddings run.
    handles = [
        model.register_forward_pre_hook(remember_layout, with_kwargs=True),
        embeddings.register_forward_hook(add_noise),
    ]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
