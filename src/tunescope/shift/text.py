"""From token ids back to text: each token's display string and its span in the response text."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


class TokenTexts:
    """Each token id decoded on its own, cached: what AlignTDS shows and matches candidates on."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self._cache: dict[int, str] = {}

    def __call__(self, ids: Sequence[int]) -> list[str]:
        """The decoded text of each id (special tokens included, the tokenizer's default clean-up)."""
        missing = sorted({int(i) for i in ids} - self._cache.keys())
        if missing:
            texts = self.tokenizer.batch_decode([[i] for i in missing])
            self._cache.update(zip(missing, texts, strict=True))
        return [self._cache[int(i)] for i in ids]


def token_spans(tokenizer: Any, ids: Sequence[int]) -> tuple[str, np.ndarray, np.ndarray]:
    """Decode ``ids`` and locate each token in the text.

    Returns:
        The text, and per token the start and end character offsets. A token that decodes to
        only part of a character (a byte of a multi-byte character) gets an empty span; the token
        that completes the character carries it.
    """
    options = {"skip_special_tokens": False, "clean_up_tokenization_spaces": False}
    ids = [int(i) for i in ids]
    text = tokenizer.decode(ids, **options)
    pieces = tokenizer.batch_decode([[i] for i in ids], **options)
    if "".join(pieces) == text:  # byte-level BPE without split characters: the common, cheap case
        ends = np.cumsum([len(piece) for piece in pieces])
    else:
        # SentencePiece drops a leading space when a token is decoded alone, and a lone byte
        # decodes to U+FFFD: read each token's end off the decoded prefix that ends with it.
        prefixes = tokenizer.batch_decode([ids[: n + 1] for n in range(len(ids))], **options)
        ends, previous = [], 0
        for prefix in prefixes:
            if text.startswith(prefix) and len(prefix) >= previous:
                previous = len(prefix)
            ends.append(previous)
        ends = np.asarray(ends)
    ends = ends.astype(np.int32)
    starts = np.concatenate([[0], ends[:-1]]).astype(np.int32)
    return text, starts, ends
