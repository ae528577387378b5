"""The per-position metrics of a shift run, one function each, from both models' logits at a chunk of positions.

:class:`Positions` holds the chunk; every quantity several metrics share (log-probabilities,
probabilities, the log-ratio, the top-k lists, the base rank) is computed on first use and kept, so
each metric function costs only its own arithmetic. The maths of each quantity is in
:mod:`tunescope.distributions`; which column each function fills is in :mod:`tunescope.shift.columns`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import torch
from torch import Tensor

from tunescope.distributions import classify, log_probs, rank_of, token_log_prob


@dataclass
class Positions:
    """Both models' next-token distributions at a chunk of response positions.

    "Base" is the model before tuning, "tuned" the model after; the token "fed" at a position is
    the response token that follows it, the same for both models.
    """

    base_logits: Tensor
    """[positions, vocab] logits of the base model."""
    tuned_logits: Tensor
    """[positions, vocab] logits of the tuned model on the same contexts."""
    fed: Tensor
    """[positions] the response token at each position."""
    top_k: int
    """How many of each model's most likely tokens to keep for display."""
    unshifted_max_rank: int = 1
    """Largest 1-indexed base rank that is unshifted."""
    marginal_max_rank: int = 3
    """Largest 1-indexed base rank that is marginal."""

    @cached_property
    def base_logp(self) -> Tensor:
        """Log p_base over the full vocabulary."""
        return log_probs(self.base_logits)

    @cached_property
    def tuned_logp(self) -> Tensor:
        """Log p_tuned over the full vocabulary."""
        return log_probs(self.tuned_logits)

    @cached_property
    def base_p(self) -> Tensor:
        """p_base."""
        return self.base_logp.exp()

    @cached_property
    def tuned_p(self) -> Tensor:
        """p_tuned."""
        return self.tuned_logp.exp()

    @cached_property
    def log_ratio(self) -> Tensor:
        """log(p_base / p_tuned), shared by both directions of the KL."""
        return self.base_logp - self.tuned_logp

    @cached_property
    def base_top(self) -> Any:
        """The base logits' top k (values and indices), of the logits themselves, so ranks read off them agree."""
        return self.base_logits.topk(self.top_k, dim=-1)

    @cached_property
    def tuned_top(self) -> Any:
        """The tuned logits' top k (values and indices)."""
        return self.tuned_logits.topk(self.top_k, dim=-1)

    @cached_property
    def tuned_top1(self) -> Tensor:
        """Argmax of the tuned distribution (lowest id among exact ties)."""
        return self.tuned_logits.argmax(dim=-1)

    @cached_property
    def base_rank(self) -> Tensor:
        """1-indexed exact rank of the fed token under the base logits."""
        return rank_of(self.base_logits, self.fed, self.base_top.values)


def kl(positions: Positions) -> Tensor:
    """KL(base‖tuned) = Σ_v p_base(v) · log(p_base(v) / p_tuned(v)), the direction AlignTDS and the paper use."""
    return torch.linalg.vecdot(positions.base_p, positions.log_ratio)


def kl_reverse(positions: Positions) -> Tensor:
    """KL(tuned‖base) = Σ_v p_tuned(v) · log(p_tuned(v) / p_base(v)), the direction of diffing-toolkit."""
    return -torch.linalg.vecdot(positions.tuned_p, positions.log_ratio)


def base_prob(positions: Positions) -> Tensor:
    """p_base(fed token)."""
    return token_log_prob(positions.base_logp, positions.fed).exp()


def tuned_prob(positions: Positions) -> Tensor:
    """p_tuned(fed token)."""
    return token_log_prob(positions.tuned_logp, positions.fed).exp()


def base_rank(positions: Positions) -> Tensor:
    """1-indexed exact rank of the fed token under the base logits."""
    return positions.base_rank


def tuned_rank(positions: Positions) -> Tensor:
    """1-indexed exact rank of the fed token under the tuned logits (1 for greedy responses)."""
    return rank_of(positions.tuned_logits, positions.fed, positions.tuned_top.values)


def tuned_top1(positions: Positions) -> Tensor:
    """Argmax of the tuned distribution."""
    return positions.tuned_top1


def is_tuned_top1(positions: Positions) -> Tensor:
    """Whether the fed token is the tuned argmax."""
    return positions.tuned_top1 == positions.fed


def base_rank_of_tuned_top1(positions: Positions) -> Tensor:
    """1-indexed base rank of the tuned argmax, which AlignTDS ranks instead of the fed token."""
    return rank_of(positions.base_logits, positions.tuned_top1, positions.base_top.values)


def base_entropy(positions: Positions) -> Tensor:
    """H(p_base) in nats."""
    return -torch.linalg.vecdot(positions.base_p, positions.base_logp)


def tuned_entropy(positions: Positions) -> Tensor:
    """H(p_tuned) in nats."""
    return -torch.linalg.vecdot(positions.tuned_p, positions.tuned_logp)


def base_top_ids(positions: Positions) -> Tensor:
    """[positions, k] the base model's k most likely tokens, best first."""
    return positions.base_top.indices


def base_top_probs(positions: Positions) -> Tensor:
    """[positions, k] their base probabilities."""
    return positions.base_p.gather(-1, positions.base_top.indices)


def tuned_top_ids(positions: Positions) -> Tensor:
    """[positions, k] the tuned model's k most likely tokens, best first."""
    return positions.tuned_top.indices


def tuned_top_probs(positions: Positions) -> Tensor:
    """[positions, k] their tuned probabilities."""
    return positions.tuned_p.gather(-1, positions.tuned_top.indices)


def klass(positions: Positions) -> Tensor:
    """Class index from the base rank and the thresholds: 0 unshifted, 1 marginal, 2 shifted."""
    return classify(positions.base_rank, positions.unshifted_max_rank, positions.marginal_max_rank)
