"""Batched decoding and padding shared by generation, the training monitor and the probes.

A batch of token-id sequences of different lengths becomes one padded id tensor and its attention
mask (:func:`pad_batch`). Generation pads on the left, so that every row's next token comes right
after the last column; teacher-forced scoring pads on the right, so that positions count from 0
in every row. :func:`generate_batch` decodes a left-padded batch with the KV cache and cuts each
output after its first stop token, or before its first stop string (:func:`cut_at_stop_string`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class Generated:
    """One decoded response."""

    token_ids: list[int]
    """Output token ids, up to and including the stop token when there is one."""
    finish_reason: str
    """'stop' (a stop token or stop string was produced) or 'length' (max_new_tokens reached)."""


def cut_at_stop_string(generated: Generated, tokenizer: Any, stops: list[str]) -> Generated:
    """``generated`` without the first stop string in its text and whatever follows it.

    A stop string rarely ends on a token boundary, so the tokens kept are the longest prefix whose
    text lies within the text before the stop string (a token that straddles it is dropped).
    """
    text = tokenizer.decode(generated.token_ids, skip_special_tokens=True)
    found = [index for index in (text.find(stop) for stop in stops) if index >= 0]
    if not found:
        return generated
    kept_text = text[: min(found)]
    kept = 0
    while kept < len(generated.token_ids) and kept_text.startswith(
        tokenizer.decode(generated.token_ids[: kept + 1], skip_special_tokens=True)
    ):
        kept += 1
    return Generated(generated.token_ids[:kept], "stop")


def pad_batch(sequences: list[list[int]], pad_id: int, *, left: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids of ``sequences`` padded with ``pad_id`` to the longest, and the attention mask (1 = real token).

    Args:
        sequences: Token ids, one list per row.
        pad_id: The id written into padding positions (never attended to).
        left: Pad before each sequence instead of after it.
    """
    width = max(len(sequence) for sequence in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, sequence in enumerate(sequences):
        span = slice(width - len(sequence), width) if left else slice(0, len(sequence))
        ids[row, span] = torch.tensor(sequence, dtype=torch.long)
        mask[row, span] = 1
    return ids, mask


def stop_token_ids(model: Any, tokenizer: Any) -> list[int]:
    """Tokens that end a response: the model's generation-config EOS ids and the tokenizer's EOS."""
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = configured if isinstance(configured, list) else [configured]
    return sorted({i for i in [*ids, tokenizer.eos_token_id] if i is not None})


def generate_batch(
    model: Any,
    tokenizer: Any,
    prompts: list[list[int]],
    decoding: dict[str, Any],
    stop_ids: list[int],
    stops: list[str] | None = None,
) -> list[Generated]:
    """Decode a batch of tokenized prompts together.

    Args:
        model: A causal LM (transformers or PEFT), in eval mode.
        tokenizer: Its tokenizer (for the padding id).
        prompts: Prompt token ids, one list per prompt.
        decoding: ``GenerateConfig.decoding()`` output: greedy or sampling settings.
        stop_ids: Token ids that end a response.
        stops: Text that ends a response (cut off with what follows it), e.g. a template's next turn header.
    """
    # transformers is imported on first use: the command line loads this module for every verb.
    from transformers import GenerationConfig

    device = next(model.parameters()).device
    width = max(len(prompt) for prompt in prompts)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop_ids[0]
    # Left padding: every row's next token comes after column `width`.
    input_ids, attention_mask = pad_batch(prompts, pad_id, left=True)
    options = {key: decoding[key] for key in ("temperature", "top_p", "top_k") if key in decoding}
    config = GenerationConfig(
        max_new_tokens=decoding["max_new_tokens"],
        do_sample=decoding["do_sample"],
        repetition_penalty=decoding["repetition_penalty"],
        pad_token_id=pad_id,
        eos_token_id=stop_ids,
        stop_strings=stops or None,
        **options,
    )
    with torch.inference_mode():
        output = model.generate(
            input_ids=input_ids.to(device),
            attention_mask=attention_mask.to(device),
            generation_config=config,
            tokenizer=tokenizer,  # transformers matches stop strings on tokens through it
        )
    results = []
    for row in output[:, width:].tolist():
        stop = next((i for i, token in enumerate(row) if token in stop_ids), None)
        generated = Generated(row[: stop + 1], "stop") if stop is not None else Generated(row, "length")
        results.append(cut_at_stop_string(generated, tokenizer, stops) if stops else generated)
    return results
