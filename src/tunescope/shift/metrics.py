"""Exact comparisons of two next-token distributions over the full vocabulary.

Every function works on a chunk of positions at once: logits or log-probabilities of shape
``[positions, vocab]`` and token ids of shape ``[positions]``. "Base" is the model before tuning,
"tuned" the model after; the token "fed" at a position is the response token that follows it.
All maths is done in float32 (or wider, if the input is wider).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

CLASSES = ("unshifted", "marginal", "shifted")
"""Position classes, in order of increasing shift (URIAL's names)."""


def log_probs(logits: Tensor) -> Tensor:
    """Full-vocabulary log-softmax, ``log p(v) = logit(v) − logsumexp(logits)``, in float32 or wider.

    −inf (a masked token) is clamped to the most negative finite float, so that a zero probability
    times its log is 0 in the sums below rather than NaN.
    """
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    logp = torch.log_softmax(logits, dim=-1)
    return logp.clamp_(min=torch.finfo(logp.dtype).min)


def kl_divergence(logp: Tensor, logq: Tensor) -> Tensor:
    """KL(P‖Q) = Σ_v p(v) · (log p(v) − log q(v)), per position; direction P → Q.

    Takes log-probabilities from :func:`log_probs`, whose zero-probability terms contribute 0.
    """
    return torch.linalg.vecdot(logp.exp(), logp - logq)


def entropy(logp: Tensor) -> Tensor:
    """Shannon entropy H(P) = −Σ_v p(v) · log p(v), in nats, per position."""
    return -torch.linalg.vecdot(logp.exp(), logp)


def rank_of(logits: Tensor, token_ids: Tensor, top_logits: Tensor | None = None) -> Tensor:
    """1-indexed rank of each token under ``logits``: 1 + #{v : logit(v) > logit(token)}.

    Ties rank together at the best place: a token tied with the maximum has rank 1. Exact and
    uncapped, unlike ranks read off a stored top-k list.

    Args:
        logits: [positions, vocab].
        token_ids: [positions] the token to rank at each position.
        top_logits: Optional [positions, k] each row's k largest logits. A token at least as likely
            as the k-th is ranked from these alone (every larger logit is among them), which spares
            a pass over the vocabulary for almost every response token; the rest are counted in full.
    """
    token_logits = logits.gather(-1, token_ids.unsqueeze(-1))
    if top_logits is None:
        # Counting in int32 is several times faster than the default int64 and exact for any vocabulary.
        return 1 + (logits > token_logits).sum(dim=-1, dtype=torch.int32).long()
    ranks = 1 + (top_logits > token_logits).sum(dim=-1, dtype=torch.int32).long()
    outside = (token_logits.squeeze(-1) < top_logits[:, -1]).nonzero().squeeze(-1)
    if outside.numel():
        ranks[outside] = rank_of(logits[outside], token_ids[outside])
    return ranks


def token_log_prob(logp: Tensor, token_ids: Tensor) -> Tensor:
    """The log-probability of each position's token, log p(token)."""
    return logp.gather(-1, token_ids.unsqueeze(-1)).squeeze(-1)


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


def classify(rank: Tensor, unshifted_max_rank: int = 1, marginal_max_rank: int = 3) -> Tensor:
    """Class index per position from a 1-indexed rank: 0 unshifted, 1 marginal, 2 shifted.

    With the defaults these are URIAL's classes: the base model's top choice, its 2nd or 3rd, or
    anything else.
    """
    return (rank > unshifted_max_rank).long() + (rank > marginal_max_rank).long()
