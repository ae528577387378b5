r"""Style or content? A documented lexicon and a few rules that tag the words a tuned model shifted on.

The paper (docs/method.md#style-tokens) reads its Fig. 12 by eye: LoRA's shifted tokens are "style
tokens" (``typically``, ``However``, ``following``, ``suggestions``, ``Yes``), full fine-tuning's
are "all kinds of tokens", content words included. This module makes that reading repeatable. Every
word gets one of four categories:

* ``discourse``: discourse markers and connectives (``however``, ``additionally``), hedges and
  frequency adverbs (``typically``, ``generally``), interaction and politeness words (``yes``,
  ``sure``, ``sorry``, ``hello``), and the advice-framing vocabulary the paper's Fig. 12 shows for
  LoRA (``tips``, ``suggestions``, ``following``, ``steps``). The multi-word markers in
  :data:`MULTIWORD_MARKERS` (``of course``, ``for example``) tag each of their words.
* ``function``: closed-class English words: articles, determiners, pronouns, prepositions,
  conjunctions, auxiliaries and modals, plus the pieces a ``\w+`` split leaves of contractions
  (``don``, ``t``, ``ll``).
* ``format``: no letters at all (punctuation, white space, Markdown), a chat model's special
  tokens (``<|im_end|>``), and numbers used as list markers (``1.`` or ``2)`` at the start of a line).
* ``content``: everything else, other numbers included (a number in an answer is usually a fact).

``style`` is ``discourse``, ``function`` or ``format``. The lists are written for this project
(English only); words are compared case-insensitively. A token is tagged by the word it belongs
to, so that a sub-word piece such as ``Pract`` is tagged as ``Practical`` is.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Sequence
from typing import Literal

Category = Literal["discourse", "function", "format", "content"]
CATEGORIES: tuple[Category, ...] = ("discourse", "function", "format", "content")
STYLE_CATEGORIES: frozenset[str] = frozenset({"discourse", "function", "format"})
"""The categories that count as style when a share of style tokens is reported."""

DISCOURSE_MARKERS: dict[str, frozenset[str]] = {
    "connective": frozenset(
        """
        however additionally moreover furthermore also besides therefore thus hence consequently
        accordingly instead meanwhile nevertheless nonetheless otherwise alternatively similarly
        likewise conversely overall finally firstly secondly thirdly lastly first second third next
        then ultimately indeed namely specifically especially particularly essentially basically
        actually anyway still yet though although whereas while whilst rather furthermore hereby
        thereby afterwards eventually initially subsequently
        """.split()
    ),
    "hedge": frozenset(
        """
        typically generally usually often sometimes commonly frequently mostly mainly largely
        primarily likely unlikely probably possibly perhaps maybe certainly definitely clearly
        obviously simply just really quite very rather fairly somewhat approximately roughly nearly
        almost potentially normally ideally arguably relatively
        """.split()
    ),
    "interaction": frozenset(
        """
        yes no sure okay ok hello hi hey thank thanks please sorry apologize apologise apologies
        apolog glad welcome great absolutely unfortunately fortunately hope feel free note
        remember important importantly dear cheers congratulations wow well oh ah help helpful
        assist assistance
        """.split()
    ),
    "framing": frozenset(
        """
        following below above here example examples tips tip suggestions suggestion suggest
        ideas idea steps step ways way strategies strategy options option consider try recommend
        recommended recommendations key several various number certain general overview summary
        conclusion conclude introduction include including includes additional further start take
        use ensure things thing aspects factors
        """.split()
    ),
}
"""Single-word discourse markers by kind; all of them tag as ``discourse``."""

MULTIWORD_MARKERS: frozenset[tuple[str, ...]] = frozenset(
    tuple(phrase.split())
    for phrase in (
        "of course",
        "for example",
        "for instance",
        "in addition",
        "in conclusion",
        "in summary",
        "in general",
        "in particular",
        "in fact",
        "as well",
        "as a result",
        "on the other hand",
        "in other words",
        "that said",
        "keep in mind",
        "make sure",
        "here are",
        "here is",
        "let me",
        "i hope",
        "feel free",
        "it is important",
        "it's important",
        "as an ai",
    )
)
"""Phrases whose words all tag as ``discourse`` when they occur together."""

FUNCTION_WORDS: frozenset[str] = frozenset(
    """
    a an the this that these those some any each every either neither no all both half few fewer
    many much more most less least other another such what which whose whatever whichever own
    i me my mine myself we us our ours ourselves you your yours yourself yourselves he him his
    himself she her hers herself it its itself they them their theirs themselves one ones who whom
    someone somebody something anyone anybody anything everyone everybody everything nobody
    nothing none
    about above across after against along amid among around as at before behind below beneath
    beside between beyond by despite down during except for from in inside into near of off on
    onto out outside over past per since than through throughout till to toward towards under
    underneath unlike until up upon via with within without
    and but or nor so if unless because whether when whenever where wherever how why whereas
    while though although once
    be am is are was were been being have has had having do does did done doing will would shall
    should can could may might must ought need dare
    not n't never very too also just only even there here now then again ever
    don doesn didn isn aren wasn weren hasn haven hadn won wouldn shan shouldn couldn mustn mightn
    needn can't t s re ve ll d m o y
    """.split()
)
"""Closed-class English words (and contraction pieces), compared lower-case."""

WORD = re.compile(r"\w+")
"""What a word is, everywhere in tunescope's borrowing analysis: a run of letters, digits or ``_``."""
SPECIAL_TOKEN = re.compile(r"^\s*(<\|[^|>]*\|>|</?s>|<[a-z_]+>)\s*$")
"""Text of a chat model's special token (``<|im_end|>``, ``</s>``, ``<eos>``): format, not words."""

_DISCOURSE = frozenset().union(*DISCOURSE_MARKERS.values())


def is_style(category: str) -> bool:
    """Whether ``category`` counts as style (discourse, function or format)."""
    return category in STYLE_CATEGORIES


def word_category(word: str) -> Category:
    """The category of one word on its own (no context): discourse, function or content.

    A word in both the discourse and the function lists (``also``, ``then``) is discourse: the
    paper's style reading is about exactly those words.
    """
    lower = word.casefold()
    if lower in _DISCOURSE:
        return "discourse"
    if lower in FUNCTION_WORDS:
        return "function"
    return "content"


def _is_list_marker(text: str, start: int, end: int) -> bool:
    """A number at the start of a line followed by ``.`` or ``)``, as in a numbered list."""
    line_start = text.rfind("\n", 0, start) + 1
    return not text[line_start:start].strip() and text[end : end + 1] in (".", ")")


def word_categories(text: str) -> tuple[list[re.Match[str]], list[Category]]:
    """Every word of ``text`` with its category, using its neighbours for multi-word markers.

    Returns:
        The word matches (``WORD``) in order, and the category of each.
    """
    matches = list(WORD.finditer(text))
    lower = [m.group().casefold() for m in matches]
    categories: list[Category] = []
    for match in matches:
        if match.group().isdigit():
            categories.append("format" if _is_list_marker(text, match.start(), match.end()) else "content")
        else:
            categories.append(word_category(match.group()))
    longest = max(len(phrase) for phrase in MULTIWORD_MARKERS)
    for index in range(len(matches)):
        for size in range(2, longest + 1):
            if tuple(lower[index : index + size]) in MULTIWORD_MARKERS:
                categories[index : index + size] = ["discourse"] * size
    return matches, categories


def tag_tokens(text: str, char_starts: Sequence[int], char_ends: Sequence[int]) -> list[tuple[Category, str | None]]:
    """The category of each token of a response, and the word it belongs to.

    A token is tagged by the word its first letter or digit belongs to; a token with none
    (punctuation, white space) or a special token is ``format`` and has no word. A token whose
    span is empty (a byte of a multi-byte character) is tagged by the character that completes
    it, i.e. like the token after it.

    Args:
        text: The response.
        char_starts: Where each token's text starts in ``text``.
        char_ends: Where it ends.
    """
    matches, categories = word_categories(text)
    word_starts = [m.start() for m in matches]
    out: list[tuple[Category, str | None]] = []
    for start, end in zip(char_starts, char_ends, strict=True):
        piece = text[start:end] if end > start else text[start : start + 1]
        first = WORD.search(piece) if piece and not SPECIAL_TOKEN.match(piece) else None
        if first is None:
            out.append(("format", None))
            continue
        word = bisect.bisect_right(word_starts, start + first.start()) - 1
        out.append((categories[word], matches[word].group()) if word >= 0 else ("format", None))
    return out
