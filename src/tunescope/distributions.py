"""Exact comparisons of two next-token distributions over the full vocabulary.

Every function works on a chunk of positions at once: logits or log-probabilities of shape
``[positions, vocab]`` and token ids of shape ``[positions]``. "Base" is the model before tuning,
"tuned" the model after; the token "fed" at a position is the response token that follows it.
All maths is done in float32 (or wider, if the input is wider).
"""

from __future__ import annotations

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


def classify(rank: Tensor, unshifted_max_rank: int = 1, marginal_max_rank: int = 3) -> Tensor:
    """Class index per position from a 1-indexed rank: 0 unshifted, 1 marginal, 2 shifted.

    With the defaults these are URIAL's classes: the base model's top choice, its 2nd or 3rd, or
    anything else.
    """
    return (rank > unshifted_max_rank).long() + (rank > marginal_max_rank).long()
