"""Every per-position metric of a shift run, from the base and tuned logits at a chunk of positions.

The maths of each quantity is in :mod:`tunescope.distributions`; this module applies it to both
models at once, sharing the probabilities, the log-ratio and the top-k lists between metrics.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from tunescope.distributions import log_probs, rank_of, token_log_prob


@dataclass(frozen=True)
class PositionMetrics:
    """Per-position comparison of the base and tuned distributions (one row per position)."""

    kl: Tensor
    """KL(base‖tuned) = Σ p_base · log(p_base / p_tuned), the direction AlignTDS and the paper use."""
    kl_reverse: Tensor
    """KL(tuned‖base) = Σ p_tuned · log(p_tuned / p_base), the direction of diffing-toolkit."""
    base_prob: Tensor
    """p_base(fed token)."""
    tuned_prob: Tensor
    """p_tuned(fed token)."""
    base_rank: Tensor
    """1-indexed exact rank of the fed token under the base logits."""
    tuned_rank: Tensor
    """1-indexed exact rank of the fed token under the tuned logits (1 for greedy responses)."""
    tuned_top1: Tensor
    """argmax of the tuned distribution (lowest id among exact ties)."""
    base_rank_of_tuned_top1: Tensor
    """1-indexed base rank of the tuned argmax, which AlignTDS ranks instead of the fed token."""
    base_entropy: Tensor
    """H(p_base) in nats."""
    tuned_entropy: Tensor
    """H(p_tuned) in nats."""
    base_top_ids: Tensor
    """[positions, k] the base model's k most likely tokens, best first."""
    base_top_probs: Tensor
    """[positions, k] their base probabilities."""
    tuned_top_ids: Tensor
    """[positions, k] the tuned model's k most likely tokens, best first."""
    tuned_top_probs: Tensor
    """[positions, k] their tuned probabilities."""


def compare_distributions(base_logits: Tensor, tuned_logits: Tensor, fed: Tensor, top_k: int) -> PositionMetrics:
    """Exact full-vocabulary metrics for a chunk of positions.

    Args:
        base_logits: [positions, vocab] logits of the base model.
        tuned_logits: [positions, vocab] logits of the tuned model on the same contexts.
        fed: [positions] the response token at each position.
        top_k: How many of each model's most likely tokens to keep for display.
    """
    base_logp, tuned_logp = log_probs(base_logits), log_probs(tuned_logits)
    # The same sums as kl_divergence() and entropy(), sharing the probabilities and the log-ratio.
    base_p, tuned_p = base_logp.exp(), tuned_logp.exp()
    log_ratio = base_logp - tuned_logp  # log(p_base / p_tuned)
    tuned_top1 = tuned_logits.argmax(dim=-1)
    # Top-k of the logits themselves (not of the rounded log-probabilities), so that the ranks read off
    # them agree with counting over the logits.
    base_top = base_logits.topk(top_k, dim=-1)
    tuned_top = tuned_logits.topk(top_k, dim=-1)
    return PositionMetrics(
        kl=torch.linalg.vecdot(base_p, log_ratio),
        kl_reverse=-torch.linalg.vecdot(tuned_p, log_ratio),
        base_prob=token_log_prob(base_logp, fed).exp(),
        tuned_prob=token_log_prob(tuned_logp, fed).exp(),
        base_rank=rank_of(base_logits, fed, base_top.values),
        tuned_rank=rank_of(tuned_logits, fed, tuned_top.values),
        tuned_top1=tuned_top1,
        base_rank_of_tuned_top1=rank_of(base_logits, tuned_top1, base_top.values),
        base_entropy=-torch.linalg.vecdot(base_p, base_logp),
        tuned_entropy=-torch.linalg.vecdot(tuned_p, tuned_logp),
        base_top_ids=base_top.indices,
        base_top_probs=base_p.gather(-1, base_top.indices),
        tuned_top_ids=tuned_top.indices,
        tuned_top_probs=tuned_p.gather(-1, tuned_top.indices),
    )
