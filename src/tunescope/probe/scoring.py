"""Teacher-forced scoring: log-likelihoods of given continuations, and per-token loss on plain text.

All run batched forward passes with no generation, so probes stay cheap on a CPU. Multiple-choice
options (:func:`option_logprobs`) share the work their continuations have in common: the prompt and
the tokens every option starts with are read once per question, and the output layer, the costly
part for a large vocabulary (Gemma-3: 262k entries), runs only at the positions that tell the
options apart.
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


def _common_prefix(sequences: list[list[int]]) -> int:
    """Length of the longest token prefix every sequence starts with, leaving each at least one token of its own."""
    shortest = min(len(sequence) for sequence in sequences)
    length = 0
    while length < shortest - 1 and all(sequence[length] == sequences[0][length] for sequence in sequences):
        length += 1
    return length


def option_logprobs(
    model: Any, tokenizer: Any, prompts: list[str], options: list[list[str]], batch_size: int = 16
) -> list[list[float]]:
    """For each prompt, the log-probability of each of its continuations, up to a term they all share.

    Tokenized as :func:`continuation_logprobs` does (prompt and continuation separately). The
    tokens all continuations of a prompt begin with are read once, with the prompt, whose
    key/value cache is then repeated for every continuation; each continuation then costs only
    its own tokens, and the output layer runs only at the positions that predict them. The
    log-probability of the shared tokens, the same for every option, is left out: each score is
    the :func:`continuation_logprobs` score minus that shared term, so differences between options,
    and the choice, are the same.

    Args:
        model: A causal LM whose forward takes a ``cache`` and a tensor ``logits_to_keep``.
        tokenizer: Its tokenizer.
        prompts: One prompt per question.
        options: The continuations of each prompt (any number per question, at least one).
        batch_size: Questions per forward pass (each of their options is a row of the second pass).
    """
    questions = []
    for prompt, continuations in zip(prompts, options, strict=True):
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        tokenized = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in continuations]
        shared = _common_prefix(tokenized)
        questions.append((prompt_ids + tokenized[0][:shared], [ids[shared:] for ids in tokenized]))
    scores: list[list[float]] = [[] for _ in questions]
    # Questions of similar length share a batch, so little of it is padding.
    order = sorted(range(len(questions)), key=lambda index: len(questions[index][0]))
    for batch in _batches(order, batch_size):
        for index, values in zip(batch, _score_options(model, tokenizer, [questions[i] for i in batch]), strict=True):
            scores[index] = values
    return scores


def _score_options(model: Any, tokenizer: Any, questions: list[tuple[list[int], list[list[int]]]]) -> list[list[float]]:
    """Scores of one batch of ``(shared ids, option tails)``: the shared pass, then every tail against its cache."""
    device = next(model.parameters()).device
    shared_ids, shared_mask = pad_batch([shared for shared, _ in questions], tokenizer.pad_token_id, left=True)
    with torch.no_grad():
        first = model(
            input_ids=shared_ids.to(device),
            attention_mask=shared_mask.to(device),
            position_ids=(shared_mask.cumsum(-1) - 1).clamp(min=0).to(device),
            use_cache=True,
            logits_to_keep=1,
        )
    # The distribution after the shared tokens scores every tail's first token.
    next_logprobs = torch.log_softmax(first.logits[:, -1].float(), dim=-1).cpu()
    tails = [tail for _, option_tails in questions for tail in option_tails]
    owner = torch.tensor([row for row, (_, option_tails) in enumerate(questions) for _ in option_tails])
    totals = next_logprobs[owner, torch.tensor([tail[0] for tail in tails])].double()
    longest = max(len(tail) for tail in tails)
    if longest > 1:
        cache = first.cache
        cache.batch_select_indices(owner.to(device))  # one copy of its question's cache per option
        tail_ids, tail_mask = pad_batch(tails, tokenizer.pad_token_id)
        mask = torch.cat([shared_mask[owner], tail_mask], dim=-1)
        positions = shared_mask[owner].sum(-1, keepdim=True) + torch.arange(longest)
        with torch.no_grad():
            logits = model(
                input_ids=tail_ids.to(device),
                attention_mask=mask.to(device),
                position_ids=positions.to(device),
                cache=cache,
                use_cache=True,
                # Position t predicts tail token t + 1: the last position predicts nothing that is scored.
                logits_to_keep=torch.arange(longest - 1, device=device),
            ).logits.float()
        targets = tail_ids[:, 1:].to(device)
        # log_softmax(x)[y] = x[y] - logsumexp(x), without a second vocabulary-sized tensor.
        logprobs = (logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - logits.logsumexp(-1)).cpu()
        totals += (logprobs * tail_mask[:, 1:]).sum(-1).double()
    values = totals.tolist()
    scores, cursor = [], 0
    for _, option_tails in questions:
        scores.append(values[cursor : cursor + len(option_tails)])
        cursor += len(option_tails)
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
