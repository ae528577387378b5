"""Text maths of the borrowing analysis: words, normalisation, exact phrases, keyword n-grams.

One definition of a word serves everything (:data:`~tunescope.borrow.lexicon.WORD`, a run of
letters, digits or ``_``), so that the index, the brute-force scan and the statistics agree.

* **Normalised** text is its sequence of words, case-folded: case, white space and punctuation
  are ignored. A phrase occurs *normalised* in a text when its words occur there contiguously.
* A phrase occurs *exactly* when its stripped text occurs verbatim (case-sensitive) and does not
  start or end inside a longer word: "Cat" occurs in "the Cat sat" but not in "Catherine". An
  exact occurrence is always a normalised one, which is what lets the index find exact matches
  among its normalised candidates.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence

from tunescope.borrow.lexicon import FUNCTION_WORDS, WORD

SEGMENT_SEPARATOR = "\x00"
"""Joins the turns of one side of a training example; no phrase can match across it."""


def normalized_words(text: str) -> list[str]:
    """The words of ``text``, each case-folded: its normalised form.

    Words are found in the text as written and then case-folded (not the other way round), so
    that a normalised word always corresponds to a word of the original text.
    """
    return [word.casefold() for word in WORD.findall(text)]


def word_count(text: str) -> int:
    """Words as people count them: runs of non-space characters (Table 11's "words")."""
    return len(text.split())


@functools.lru_cache(maxsize=4096)
def exact_pattern(phrase: str) -> re.Pattern[str]:
    """A regular expression that finds ``phrase`` verbatim, not starting or ending inside a word.

    The boundary checks apply only on a side where the phrase itself starts (or ends) with a word
    character, so a phrase that starts with punctuation may follow anything.
    """
    stripped = phrase.strip()
    before = r"(?<!\w)" if stripped[:1] and WORD.match(stripped[0]) else ""
    after = r"(?!\w)" if stripped[-1:] and WORD.match(stripped[-1]) else ""
    return re.compile(before + re.escape(stripped) + after)


def occurs_exactly(phrase: str, text: str) -> bool:
    """Whether ``phrase`` occurs verbatim in ``text`` at word boundaries (see :func:`exact_pattern`)."""
    return bool(phrase.strip()) and exact_pattern(phrase).search(text) is not None


def occurs_normalized(phrase_words: Sequence[str], text_words: Sequence[str]) -> bool:
    """Whether the word sequence ``phrase_words`` occurs contiguously in ``text_words``."""
    size = len(phrase_words)
    if not size:
        return False
    first = phrase_words[0]
    phrase = list(phrase_words)
    return any(
        text_words[i] == first and list(text_words[i : i + size]) == phrase for i in range(len(text_words) - size + 1)
    )


def keyword_ngrams(words: Sequence[str], n: int) -> set[tuple[str, ...]]:
    """The distinct n-grams of ``words`` that contain at least one word that is not a function word.

    This approximates the paper's spaCy-extracted keywords (docs/method.md#hallucination-attribution)
    without spaCy: an n-gram made only of words like "of the" carries no content and is left out.
    """
    return {
        gram
        for gram in (tuple(words[i : i + n]) for i in range(len(words) - n + 1))
        if any(word not in FUNCTION_WORDS for word in gram)
    }


def ngram_overlap(query: Sequence[str], source: Iterable[Sequence[str]], ns: Sequence[int] = (1, 2, 3)) -> dict:
    """Share of the query's keyword n-grams found in the source, per n and averaged over n.

    The paper's keyword-overlap measure (61.6% between a hallucinated response and its source):
    for each n, the fraction of the response's distinct keyword n-grams that also occur in the
    source instance; then the mean over n = 1, 2, 3.

    Args:
        query: Normalised words of the response.
        source: Normalised words of each segment of the source (n-grams do not cross segments).
        ns: The n-gram sizes.

    Returns:
        ``{"1": share, "2": share, "3": share, "mean": mean}``; a size the query has no keyword
        n-gram of is None and left out of the mean (None when every size is).
    """
    segments = [list(segment) for segment in source]
    out: dict[str, float | None] = {}
    for n in ns:
        wanted = keyword_ngrams(query, n)
        if not wanted:
            out[str(n)] = None
            continue
        found: set[tuple[str, ...]] = set()
        for segment in segments:
            found |= wanted & {tuple(segment[i : i + n]) for i in range(len(segment) - n + 1)}
        out[str(n)] = len(found) / len(wanted)
    shares = [value for value in out.values() if value is not None]
    out["mean"] = sum(shares) / len(shares) if shares else None
    return out
