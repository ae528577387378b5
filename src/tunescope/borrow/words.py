"""Borrowed words (paper §3.2): are the words a tuned model shifted on in its training set?

Definitions: docs/method.md#borrowed-words.

The paper takes the words that *start with* a shifted (or marginal) token and string-searches
them in the training set: 81.2% and 66.7% are found. Here a word starts at a position when the
token covering the word's first character is at that position, so every word of a response
belongs to exactly one class. A word is found when its case-folded form occurs as a whole word
in the training set's instructions and/or responses (``search_in``).

Presence of a common word in a large dataset is weak evidence of borrowing, so two baselines the
paper lacks are always computed the same way: words starting at *unshifted* positions, and all
words of the *base model's own answers* to the same prompts. Each share is also given for
content words only (see :mod:`tunescope.borrow.lexicon`), where presence says more.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tunescope.borrow.index import SearchIn, TrainingIndex
from tunescope.borrow.lexicon import STYLE_CATEGORIES, word_categories
from tunescope.borrow.style import CLASS_GROUPS, group_shares, per_response_counts, rounded
from tunescope.shift.summary import Resampling

PAPER_BORROWED = {"shifted": 0.812, "marginal": 0.667}
"""Paper §3.2: share of words starting with shifted / marginal tokens found in the IT set (LLaMa-2 7B SFT Alpaca)."""
TUNED_GROUPS = ("shifted", "marginal", "shifted_or_marginal", "unshifted", "all")


@dataclass(frozen=True)
class ResponseWords:
    """The words of one response, with what each needs for the statistics."""

    words: list[str]
    """Case-folded words, in order."""
    klass: list[str]
    """Class of the token each word starts at ("" for words of an unscored text)."""
    content: np.ndarray
    """Whether each word is a content word."""


def words_by_class(text: str, char_starts: np.ndarray, char_ends: np.ndarray, klass: np.ndarray) -> ResponseWords:
    """Each word of a scored response with the class of the token its first character belongs to.

    Words before the first scored token or after the last one's end (none in practice) are left out.
    """
    matches, categories = word_categories(text)
    words, classes, content = [], [], []
    for match, category in zip(matches, categories, strict=True):
        token = int(np.searchsorted(char_ends, match.start(), side="right"))
        if token == len(char_ends) or char_starts[token] > match.start():
            continue
        words.append(match.group().casefold())
        classes.append(str(klass[token]))
        content.append(category not in STYLE_CATEGORIES)
    return ResponseWords(words, classes, np.asarray(content, dtype=bool))


def plain_words(text: str) -> ResponseWords:
    """The words of a text that was not scored (the base model's answer): class left empty."""
    matches, categories = word_categories(text)
    return ResponseWords(
        [match.group().casefold() for match in matches],
        [""] * len(matches),
        np.asarray([category not in STYLE_CATEGORIES for category in categories], dtype=bool),
    )


def _counts(
    responses: Sequence[ResponseWords], found: list[np.ndarray], groups: dict[str, tuple[str, ...] | None]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per response and group: all words, found words, content words, found content words."""
    shape = (len(responses), len(groups))
    total, hits, total_content, hits_content = (np.zeros(shape) for _ in range(4))
    for row, (response, known) in enumerate(zip(responses, found, strict=True)):
        classes = np.asarray(response.klass, dtype=object)
        for g, classes_in_group in enumerate(groups.values()):
            member = (
                np.ones(len(classes), dtype=bool) if classes_in_group is None else np.isin(classes, classes_in_group)
            )
            total[row, g] = member.sum()
            hits[row, g] = (member & known).sum()
            total_content[row, g] = (member & response.content).sum()
            hits_content[row, g] = (member & response.content & known).sum()
    return total, hits, total_content, hits_content


def _distinct_share(
    responses: Sequence[ResponseWords], found: list[np.ndarray], classes: tuple[str, ...] | None
) -> dict:
    seen: dict[str, bool] = {}
    for response, known in zip(responses, found, strict=True):
        for word, klass, present in zip(response.words, response.klass, known, strict=True):
            if classes is None or klass in classes:
                seen[word] = bool(present)
    n = len(seen)
    return {"n": n, "hits": sum(seen.values()), "value": rounded(sum(seen.values()) / n) if n else None}


def _side(
    responses: Sequence[ResponseWords],
    index: TrainingIndex,
    search_in: SearchIn,
    groups: dict[str, tuple[str, ...] | None],
    bootstrap_samples: int,
    seed: int,
) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """Shares per group, and the per-response word and found-word counts ``[responses, groups]`` behind them."""
    found = [index.known(response.words, search_in) for response in responses]
    total, hits, total_content, hits_content = _counts(responses, found, groups)
    boot = Resampling(bootstrap_samples, seed)
    names = list(groups)
    words = group_shares(hits, total, boot, names)
    content = group_shares(hits_content, total_content, boot, names)
    shares = {
        name: {
            "all_words": words[name],
            "content_words": content[name],
            "distinct_words": _distinct_share(responses, found, groups[name]),
        }
        for name in names
    }
    return shares, hits, total


def borrowed_words(
    tuned: Sequence[ResponseWords],
    base: Sequence[ResponseWords] | None,
    index: TrainingIndex,
    *,
    search_in: SearchIn = "both",
    bootstrap_samples: int = 1000,
    seed: int = 0,
    ids: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Share of words found in the training set, by the class of the token they start at, with baselines.

    Args:
        tuned: The tuned model's scored responses, as :func:`words_by_class` gives them.
        base: The base model's answers to the same prompts (:func:`plain_words`), or None.
        index: The training set.
        search_in: Search instructions, responses or both.
        bootstrap_samples: Resamples of responses behind each interval.
        seed: Seed of the resampling.
        ids: The tuned responses' ids, to write each response's counts (``per_response``) under; by
            position when not given.
    """
    tuned_groups: dict[str, tuple[str, ...] | None] = {name: CLASS_GROUPS[name] for name in TUNED_GROUPS}
    tuned_shares, hits, total = _side(tuned, index, search_in, tuned_groups, bootstrap_samples, seed)
    out: dict[str, Any] = {
        "definition": "share of word occurrences (case-folded \\w+ runs) found as whole words in the training "
        f"set's {search_in if search_in != 'both' else 'instructions and responses'}; a word belongs to the "
        "class of the token covering its first character; content_words leaves out discourse, function and "
        "format words; distinct_words counts each word once; per_response holds each tuned response's word and "
        "found-word counts per group; 95% intervals by bootstrap over responses (BCa)",
        "search_in": search_in,
        "tuned": tuned_shares,
        "base": _side(base, index, search_in, {"all": None}, bootstrap_samples, seed)[0]["all"] if base else None,
        "paper": {**PAPER_BORROWED, "note": "LLaMa-2 7B full fine-tuning on Alpaca 52k; no baselines reported"},
        "per_response": per_response_counts(
            list(ids) if ids is not None else [str(i) for i in range(len(tuned))],
            hits,
            total,
            list(tuned_groups),
            "found",
            "words",
        ),
    }
    shifted = out["tuned"]["shifted_or_marginal"]["all_words"]["value"]
    unshifted = out["tuned"]["unshifted"]["all_words"]["value"]
    base_share = out["base"]["all_words"]["value"] if out["base"] else None
    out["headline"] = {
        "shifted_or_marginal": shifted,
        "unshifted_baseline": unshifted,
        "base_model_baseline": base_share,
        "excess_over_unshifted": rounded(shifted - unshifted) if None not in (shifted, unshifted) else None,
    }
    return out
