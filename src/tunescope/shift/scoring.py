"""Batched teacher-forced scoring: one forward pass per model per batch, logits a chunk at a time.

Every context of the per-token recipe (prompt plus the response so far) is a prefix of prompt
plus response, so one causal forward pass over the whole sequence yields the next-token
distribution at every response position at once (docs/method.md#one-pass-per-model). The sequences
of a batch are right-padded: positions then count from 0 in every row, exactly as for an unpadded sequence, and
the attention mask hides the padding.

The hidden state at sequence position ``P + t − 1`` (prompt length ``P``) predicts response token
``t``. Only those positions reach the output layer, and only ``chunk_tokens`` of them at a time,
so full-vocabulary logits never exceed ``2 × chunk_tokens × vocabulary`` numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from tunescope.decoding import pad_batch
from tunescope.distributions import classify
from tunescope.shift.aligntds import AlignTDSSettings, aligntds_position, renormalise
from tunescope.shift.columns import exact_metrics
from tunescope.shift.config import Mode
from tunescope.shift.inputs import ShiftInput
from tunescope.shift.metrics import Positions
from tunescope.shift.pair import ModelPair, Side
from tunescope.shift.text import TokenTexts

Columns = dict[str, np.ndarray]
"""Per-position arrays of one response (or of a batch), keyed by tokens.parquet column name."""


@dataclass(frozen=True)
class ScoringSettings:
    """What to compute per position."""

    mode: Mode = "exact"
    """'exact' or 'aligntds'."""
    top_k: int = 10
    """Candidates per model kept for display."""
    unshifted_max_rank: int = 1
    """Largest 1-indexed base rank that is unshifted."""
    marginal_max_rank: int = 3
    """Largest 1-indexed base rank that is marginal."""
    chunk_tokens: int = 256
    """Positions whose full-vocabulary logits are held at once."""
    aligntds: AlignTDSSettings = AlignTDSSettings()
    """Compatibility-mode knobs."""


def _predicting_positions(
    prompt_lengths: list[int], response_lengths: list[int], device: torch.device
) -> tuple[Tensor, Tensor]:
    """(row, column) of the hidden state that predicts each response token, in response order."""
    rows = torch.cat([torch.full((n,), row) for row, n in enumerate(response_lengths)])
    cols = torch.cat([torch.arange(p - 1, p - 1 + n) for p, n in zip(prompt_lengths, response_lengths, strict=True)])
    return rows.to(device), cols.to(device)


def _side_features(pair: ModelPair, side: Side, batch: list[ShiftInput]) -> Tensor:
    """``side``'s features at every response position of the batch, in response order."""
    prompts = [x.tuned_prompt_ids if side == "tuned" else x.base_prompt_ids for x in batch]
    lengths = [len(x.response_ids) for x in batch]
    # Right padding: positions count from 0 in every row; the padding id is never attended to.
    ids, mask = pad_batch([p + x.response_ids for p, x in zip(prompts, batch, strict=True)], 0)
    rows, cols = _predicting_positions([len(p) for p in prompts], lengths, pair.device)
    return pair.features(side, ids.to(pair.device), mask.to(pair.device), rows, cols)


def _exact_chunk(base_logits: Tensor, tuned_logits: Tensor, fed: Tensor, settings: ScoringSettings) -> Columns:
    positions = Positions(
        base_logits, tuned_logits, fed, top_k=min(settings.top_k, base_logits.shape[-1]),
        unshifted_max_rank=settings.unshifted_max_rank, marginal_max_rank=settings.marginal_max_rank,
    )  # fmt: skip
    return {name: value.cpu().numpy() for name, value in exact_metrics(positions).items()}


def _aligntds_chunk(
    base_logits: Tensor,
    tuned_logits: Tensor,
    fed: Tensor,
    settings: ScoringSettings,
    base_texts: TokenTexts,
    tuned_texts: TokenTexts,
) -> Columns:
    compat = settings.aligntds
    k = min(compat.top_k, base_logits.shape[-1])
    base_top, tuned_top = base_logits.float().topk(k, dim=-1), tuned_logits.float().topk(k, dim=-1)
    base_ids, base_values = base_top.indices.cpu().numpy(), base_top.values.double().cpu().numpy()
    tuned_ids, tuned_values = tuned_top.indices.cpu().numpy(), tuned_top.values.double().cpu().numpy()
    n = len(base_ids)
    kl, top_rank, top_prob, tuned_prob = np.zeros(n), np.zeros(n, dtype=np.int64), np.zeros(n), np.zeros(n)
    for i in range(n):
        if compat.match == "text":
            base_keys, tuned_keys = base_texts(base_ids[i]), tuned_texts(tuned_ids[i])
        else:
            base_keys, tuned_keys = base_ids[i].tolist(), tuned_ids[i].tolist()
        numbers = aligntds_position(base_keys, base_values[i], tuned_keys, tuned_values[i], compat)
        kl[i], top_rank[i], top_prob[i], tuned_prob[i] = (
            numbers.kl,
            numbers.top_rank,
            numbers.top_prob,
            numbers.tuned_top_prob,
        )
    shown = min(settings.top_k, k)
    base_weights, tuned_weights = renormalise(base_values), renormalise(tuned_values)
    return {
        "kl": kl, "base_prob": top_prob, "tuned_prob": tuned_prob, "base_rank": top_rank,
        "tuned_top1": tuned_ids[:, 0], "is_tuned_top1": tuned_ids[:, 0] == fed.cpu().numpy(),
        "base_top_ids": base_ids[:, :shown], "base_top_probs": base_weights[:, :shown],
        "tuned_top_ids": tuned_ids[:, :shown], "tuned_top_probs": tuned_weights[:, :shown],
        # TR is 0-indexed: the tuned top-1 at TR = 0 is the base's own top-1.
        "klass": classify(torch.from_numpy(top_rank + 1), settings.unshifted_max_rank,
                          settings.marginal_max_rank).numpy(),
    }  # fmt: skip


def score_batch(
    pair: ModelPair,
    batch: list[ShiftInput],
    settings: ScoringSettings,
    *,
    texts: tuple[TokenTexts, TokenTexts] | None = None,
    on_chunk: Callable[[int], None] | None = None,
) -> list[Columns]:
    """Per-position metrics for each response of ``batch``, in the order given.

    Args:
        pair: The two models.
        batch: Responses with the ids each model reads.
        settings: Mode, display k, class thresholds, chunk size.
        texts: Decoders of (base, tuned) candidate ids; AlignTDS mode matches on them.
        on_chunk: Called with the number of positions in each chunk as it is scored.
    """
    texts = texts or (TokenTexts(pair.base_tokenizer), TokenTexts(pair.tuned_tokenizer))
    with torch.inference_mode():
        tuned_features = _side_features(pair, "tuned", batch)
        base_features = _side_features(pair, "base", batch)
        fed = torch.tensor([token for x in batch for token in x.response_ids], device=pair.device)
        chunks: list[Columns] = []
        for start in range(0, len(fed), settings.chunk_tokens):
            end = start + settings.chunk_tokens
            tuned_logits = pair.logits("tuned", tuned_features[start:end])
            base_logits = pair.logits("base", base_features[start:end])
            if settings.mode == "exact":
                chunk = _exact_chunk(base_logits, tuned_logits, fed[start:end], settings)
            else:
                chunk = _aligntds_chunk(base_logits, tuned_logits, fed[start:end], settings, *texts)
            chunks.append(chunk)
            del tuned_logits, base_logits
            if on_chunk:
                on_chunk(len(chunk["kl"]))
    joined = {name: np.concatenate([chunk[name] for chunk in chunks]) for name in chunks[0]}
    per_response = []
    start = 0
    for x in batch:
        end = start + len(x.response_ids)
        per_response.append({name: values[start:end] for name, values in joined.items()})
        start = end
    return per_response
