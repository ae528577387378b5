"""Response initiation (the paper's Fig. 4): is the shift concentrated at the start of sentences?

Each response is split into sentences; within a sentence, the first 5% of its tokens (at least
one) form the "initiation" group, the rest the "continuation" group. The summary compares the mean
KL of the two groups.

Segmenter (recorded in every summary as ``SEGMENTER``): every line is split on its own; inside a
line, a sentence ends at ``.``, ``!`` or ``?`` (and closing quotes or brackets) followed by white
space, except after a list marker at the start of the line (``1.``, ``a)``) or a common
abbreviation. So each list item and each heading is a sentence. A token belongs to the sentence
that holds its first non-space character; tokens that are only white space belong to none.
"""

from __future__ import annotations

import bisect
import math
import re

import numpy as np

SEGMENTER = (
    "lines, then '.', '!' or '?' followed by white space (not after a line-initial list marker "
    "or a common abbreviation); list items and headings are sentences"
)

_END = re.compile(r"[.!?]+[\"'”’)\]]*(?=\s)")
_LIST_MARKER = re.compile(r"\s*(?:[-*•]\s*)?(?:\d+|[A-Za-z]|[ivxIVX]+)[.)]")
_ABBREVIATIONS = frozenset(
    {"e.g.", "i.e.", "mr.", "mrs.", "ms.", "dr.", "prof.", "st.", "vs.", "no.", "fig.", "approx."}
)


def _ends_a_sentence(piece: str) -> bool:
    words = piece.split()
    if not words:
        return False
    last = words[-1]
    if last.lower() in _ABBREVIATIONS or re.fullmatch(r"[A-Z]\.", last):  # e.g. initials "J."
        return False
    return not _LIST_MARKER.fullmatch(piece)


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """Character spans ``[start, end)`` of the sentences of ``text``, without surrounding white space."""
    spans = []
    for line in re.finditer(r"[^\n]+", text):
        start = 0
        pieces = []
        for end in _END.finditer(line.group()):
            if _ends_a_sentence(line.group()[start : end.end()]):
                pieces.append((start, end.end()))
                start = end.end()
        pieces.append((start, len(line.group())))
        for piece_start, piece_end in pieces:
            piece = line.group()[piece_start:piece_end]
            if piece.strip():
                left = piece_start + len(piece) - len(piece.lstrip())
                right = piece_start + len(piece.rstrip())
                spans.append((line.start() + left, line.start() + right))
    return spans


def sentence_of_tokens(text: str, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Index of the sentence each token belongs to, or -1 for tokens of white space only."""
    spans = sentence_spans(text)
    span_starts = [start for start, _ in spans]
    out = np.full(len(starts), -1, dtype=np.int32)
    for token, (start, end) in enumerate(zip(starts, ends, strict=True)):
        piece = text[start:end]
        stripped = len(piece) - len(piece.lstrip())
        if stripped == len(piece):
            continue
        first_char = start + stripped
        sentence = bisect.bisect_right(span_starts, first_char) - 1
        if sentence >= 0 and first_char < spans[sentence][1]:
            out[token] = sentence
    return out


def initiation_mask(sentence_index: np.ndarray, fraction: float = 0.05) -> np.ndarray:
    """True for the first ``ceil(fraction · n)`` tokens (at least one) of each n-token sentence."""
    mask = np.zeros(len(sentence_index), dtype=bool)
    for sentence in np.unique(sentence_index[sentence_index >= 0]):
        members = np.flatnonzero(sentence_index == sentence)
        # round() first: 0.05 * 60 is 3.0000000000000004 in binary floating point
        mask[members[: max(1, math.ceil(round(fraction * len(members), 9)))]] = True
    return mask
