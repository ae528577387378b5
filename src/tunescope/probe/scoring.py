"""Teacher-forced scoring: log-likelihoods of given continuations, and per-token loss on plain text.

Both run batched forward passes with no generation, so probes stay cheap on a CPU.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch

from tunescope.data import IGNORE_INDEX
from tunescope.decoding import pad_batch


def _batches(items: Sequence, size: int) -> Iterator[Sequence]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _token_logprobs(model: Any, ids: torch.Tensor, mask: torch.Tensor, last: int = 0) -> torch.Tensor:
    """Log-probability of each token given those before it, for the last ``last`` positions.

    All positions t >= 1 when ``last`` is 0.

    Shape (batch, length - 1), or (batch, last). Positions are counted from each row's first real
    token, so left padding changes nothing.
    """
    device = next(model.parameters()).device
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        # Only the scored positions go through the vocabulary projection, the costly part here.
        logits = (
            model(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                position_ids=position_ids.to(device),
                logits_to_keep=last + 1 if last else 0,
            )
            .logits[:, :-1]
            .float()
        )
    targets = ids[:, -logits.shape[1] :].to(device)
    # log_softmax(x)[y] = x[y] - logsumexp(x): avoids materialising a second vocabulary-sized tensor.
    return (logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - logits.logsumexp(-1)).cpu()


def continuation_logprobs(
    model: Any, tokenizer: Any, prompts: list[str], continuations: list[str], batch_size: int = 16
) -> list[float]:
    """Sum of log-probabilities of each continuation given its prompt.

    Prompt and continuation are tokenized separately and concatenated, so every option of a
    multiple-choice question is scored after exactly the same prompt tokens. Rows are padded on
    the left, which puts every continuation at the end, where only its positions are projected
    onto the vocabulary.
    """
    pairs = [
        (
            tokenizer(prompt, add_special_tokens=False)["input_ids"],
            tokenizer(continuation, add_special_tokens=False)["input_ids"],
        )
        for prompt, continuation in zip(prompts, continuations, strict=True)
    ]
    scores: list[float] = []
    for batch in _batches(pairs, batch_size):
        ids, mask = pad_batch(
            [prompt + continuation for prompt, continuation in batch], tokenizer.pad_token_id, left=True
        )
        longest = max(len(continuation) for _, continuation in batch)
        logprobs = _token_logprobs(model, ids, mask, last=longest)
        scores += [
            logprobs[row, longest - len(continuation) :].sum().item() for row, (_, continuation) in enumerate(batch)
        ]
    return scores


def token_losses(
    model: Any, tokenizer: Any, texts: list[str], max_length: int = 512, batch_size: int = 4
) -> list[tuple[float, int]]:
    """Per text, the summed next-token negative log-likelihood (nats) and the number of tokens predicted.

    Kept per text so that two models can be compared text by text (a paired interval over passages).
    """
    sequences = [tokenizer(text, truncation=True, max_length=max_length)["input_ids"] for text in texts]
    losses: list[tuple[float, int]] = []
    for batch in _batches(sequences, batch_size):
        ids, mask = pad_batch(list(batch), tokenizer.pad_token_id)
        logprobs = _token_logprobs(model, ids, mask)
        valid = mask[:, 1:].bool()
        losses += [(-logprobs[row][valid[row]].sum().item(), int(valid[row].sum())) for row in range(len(batch))]
    return losses


def mean_token_loss(model: Any, tokenizer: Any, texts: list[str], max_length: int = 512, batch_size: int = 4) -> float:
    """Average next-token negative log-likelihood (nats per token) over all tokens of ``texts``."""
    losses = token_losses(model, tokenizer, texts, max_length, batch_size)
    return sum(total for total, _ in losses) / max(sum(count for _, count in losses), 1)


def response_token_losses(
    model: Any, examples: Sequence[Any], pad_id: int, batch_size: int = 4
) -> list[tuple[float, int]]:
    """Per tokenized example, the summed next-token loss (nats) over its trained positions and their number.

    ``examples`` are :class:`tunescope.data.TokenizedExample`: the loss covers exactly the tokens
    training would (assistant turns by default), which is what "how surprising is this data to the
    model" means for instruction tuning. Kept per example, so that an interval can resample examples.
    """
    losses: list[tuple[float, int]] = []
    for batch in _batches(list(examples), batch_size):
        ids, mask = pad_batch([example.input_ids for example in batch], pad_id)
        labels, _ = pad_batch([example.labels for example in batch], IGNORE_INDEX)
        logprobs = _token_logprobs(model, ids, mask)
        trained = (labels[:, 1:] != IGNORE_INDEX) & mask[:, 1:].bool()
        losses += [(-logprobs[row][trained[row]].sum().item(), int(trained[row].sum())) for row in range(len(batch))]
    return losses
