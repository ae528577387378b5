"""Pattern copying and borrowing: what a tuned model took from its training set.

The paper's second and third findings, automated at dataset scale: which tokens shift and whether
they are style or content, how many shifted words occur in the training set (beside unshifted and
base-model baselines), whether answer length follows the training data, and where marked
hallucination spans could come from. The definitions are in docs/method.md, from #style-tokens to
#hallucination-attribution.

From Python::

    from tunescope.borrow import BorrowConfig, borrow

    result = borrow(BorrowConfig(shift="runs/full/shift", data="runs/full", out="runs/full/borrow"))
    print(result.borrow["style_tokens"]["headline"], result.borrow["borrowed_words"]["headline"])

The pieces are importable one by one: :mod:`~tunescope.borrow.index` (the training-set index),
:mod:`~tunescope.borrow.lexicon` (style or content), :mod:`~tunescope.borrow.words`,
:mod:`~tunescope.borrow.attribution`, :mod:`~tunescope.borrow.report` (the HTML section).
"""

from tunescope.borrow.attribution import attribute_span, attribution_summary, read_spans
from tunescope.borrow.config import BorrowConfig
from tunescope.borrow.index import PhraseMatch, TrainingIndex, brute_force_lookup, build_index, open_index
from tunescope.borrow.lexicon import tag_tokens, word_categories, word_category
from tunescope.borrow.pipeline import BorrowResult, borrow
from tunescope.borrow.report import render_section
from tunescope.borrow.style import style_token_summary
from tunescope.borrow.words import borrowed_words

__all__ = [
    "BorrowConfig",
    "BorrowResult",
    "PhraseMatch",
    "TrainingIndex",
    "attribute_span",
    "attribution_summary",
    "borrow",
    "borrowed_words",
    "brute_force_lookup",
    "build_index",
    "open_index",
    "read_spans",
    "render_section",
    "style_token_summary",
    "tag_tokens",
    "word_categories",
    "word_category",
]
