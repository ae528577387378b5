"""Hallucination attribution (paper §5): where in the training set could a span come from?

Definitions: docs/method.md#hallucination-attribution.

The paper's attribution is human judgement; this is its automatable approximation, labelled as
such in every output. For each marked span of a tuned response:

1. its exact and normalised occurrences in the training set, with the ids of the examples
   containing it (the paper: ≈72% of marked phrases occur in the IT set);
2. the share of its tokens at shifted or marginal positions (the paper: ≈89%);
3. candidate sources: the training examples closest to the evaluation example by sentence
   embedding (cosine between instruction + response on both sides) and by 1/2/3-gram keyword
   overlap with the response;
4. the chosen source: among the examples containing the span, the most similar one; when none
   contains it, the most similar example overall. Its cosine (the paper's mean: 0.418, with an
   unknown SBERT checkpoint, so not comparable in absolute terms) and keyword overlap (61.6%).

Spans come from a JSONL file: ``example_id`` (a response of the shift run), character ``start``
and ``end`` in the response text (as in the shift run's examples.jsonl), and optionally ``text``
(checked against the slice, or used to find the span when ``start``/``end`` are absent),
``label``, ``source`` (who marked it) and ``rephrased`` (an instruction for the counterfactual
check).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tunescope.borrow.embeddings import top_k
from tunescope.borrow.index import SearchIn, TrainingIndex
from tunescope.borrow.style import rounded, share_entry
from tunescope.borrow.text import ngram_overlap, normalized_words
from tunescope.data.readers import read_jsonl_objects
from tunescope.errors import UserError
from tunescope.shift.output import ShiftResponse
from tunescope.shift.summary import Resampling

PAPER_ATTRIBUTION = {
    "found_in_training": 0.72,
    "span_tokens_shifted_or_marginal": 0.89,
    "mean_cosine_to_source": 0.418,
    "mean_ngram_overlap": 0.616,
    "traced_to_training_full": 0.87,
    "traced_to_training_lora": 0.139,
    "note": "human annotation of LLaMa-2 7B outputs (LIMA, dolly); the cosine used an unknown Sentence-BERT "
    "checkpoint; 'traced' is the experts' causal judgement, which this tool does not automate",
}
APPROXIMATION_NOTE = (
    "automated approximation of the paper's human attribution: string search, embedding and n-gram similarity "
    "propose sources; they do not establish that the model borrowed from them"
)
SPAN_FIELDS = frozenset({"example_id", "start", "end", "text", "label", "source", "rephrased"})


@dataclass(frozen=True)
class Span:
    """One marked span of a tuned response."""

    number: int
    """0-based position among the spans."""
    example_id: str
    """The response it marks."""
    start: int
    """First character, in the response text."""
    end: int
    """One past the last character."""
    text: str
    """The marked text."""
    label: str | None = None
    """Free label (e.g. the hallucination type)."""
    source: str | None = None
    """Who marked it (an annotator, a judge model)."""
    rephrased: str | None = None
    """A rephrased instruction for the counterfactual check."""


def _optional_text(fields: dict[str, Any], name: str, locator: str) -> str | None:
    value = fields.get(name)
    if value is not None and not isinstance(value, str):
        raise UserError(f"{locator}: field '{name}' must be a string")
    return value


def read_spans(path: str | Path, responses: dict[str, ShiftResponse]) -> list[Span]:
    """Read and check a spans file against the shift run's responses.

    Raises:
        UserError: naming the file, line and field of anything that cannot be used.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"--spans {path}: file not found")
    spans: list[Span] = []
    for record in read_jsonl_objects(path):
        fields, locator = record.fields, record.locator
        if unknown := sorted(set(fields) - SPAN_FIELDS):
            raise UserError(f"{locator}: unknown field '{unknown[0]}' (expected {', '.join(sorted(SPAN_FIELDS))})")
        if fields.get("example_id") is None:
            raise UserError(f"{locator}: missing field 'example_id'")
        example_id = str(fields["example_id"])
        if example_id not in responses:
            raise UserError(f"{locator}: example_id '{example_id}' is not a response of the shift run")
        response = responses[example_id].text
        text = _optional_text(fields, "text", locator)
        start, end = fields.get("start"), fields.get("end")
        if start is None and end is None:
            if not text:
                raise UserError(f"{locator}: give 'start' and 'end', or the span's 'text'")
            start = response.find(text)
            if start < 0:
                raise UserError(f"{locator}: text {text!r} does not occur in response '{example_id}'")
            end = start + len(text)
        for name, value in (("start", start), ("end", end)):
            if not isinstance(value, int) or isinstance(value, bool):
                raise UserError(f"{locator}: field '{name}' must be an integer character offset")
        if not 0 <= start < end <= len(response):
            raise UserError(
                f"{locator}: start {start} and end {end} must satisfy 0 <= start < end <= {len(response)} "
                f"(the length of response '{example_id}')"
            )
        if text is not None and response[start:end] != text:
            raise UserError(f"{locator}: field 'text' {text!r} differs from the response at {start}:{end} "
                            f"({response[start:end]!r})")  # fmt: skip
        if not normalized_words(response[start:end]):
            raise UserError(f"{locator}: the span {response[start:end]!r} contains no word")
        spans.append(
            Span(
                number=len(spans),
                example_id=example_id,
                start=start,
                end=end,
                text=response[start:end],
                label=_optional_text(fields, "label", locator),
                source=_optional_text(fields, "source", locator),
                rephrased=_optional_text(fields, "rephrased", locator),
            )
        )
    if not spans:
        raise UserError(f"--spans {path}: no spans")
    return spans


def span_token_classes(span: Span, response: ShiftResponse) -> dict[str, int]:
    """How many tokens overlapping the span sit at each class of position."""
    ends = np.maximum(response.char_end, response.char_start + 1)  # a partial character still counts
    inside = (response.char_start < span.end) & (ends > span.start)
    classes = response.klass[inside]
    return {
        "n_tokens": int(inside.sum()),
        "shifted": int((classes == "shifted").sum()),
        "marginal": int((classes == "marginal").sum()),
    }


def _ids(index: TrainingIndex, rows: list[int], limit: int) -> list[str]:
    return [index.ids[row] for row in rows[:limit]]


def attribute_span(
    span: Span,
    response: ShiftResponse,
    index: TrainingIndex,
    *,
    search_in: SearchIn = "both",
    embeddings: np.ndarray | None = None,
    query_embedding: np.ndarray | None = None,
    candidates: int = 5,
    max_ids: int = 100,
) -> dict[str, Any]:
    """Everything spans.jsonl says about one span.

    Args:
        span: The span.
        response: The tuned response it marks.
        index: The training set.
        search_in: Search instructions, responses or both.
        embeddings: The training set's normalised embeddings, one row per example (None: no
            embedding candidates; the source is chosen by n-gram overlap).
        query_embedding: The normalised embedding of the evaluation example (instruction + response).
        candidates: Candidates listed per method.
        max_ids: Most example ids listed per kind of occurrence (the counts are always complete).
    """
    match = index.lookup(span.text, search_in)
    classes = span_token_classes(span, response)
    containing = set(match.normalized)
    response_words = normalized_words(response.text)
    by_ngram = index.ngram_candidates(response_words, candidates, search_in)
    by_embedding: list[dict[str, Any]] = []
    cosine_of: dict[int, float] = {}
    if embeddings is not None and query_embedding is not None and len(index):
        rows, scores = top_k(embeddings, query_embedding[None, :], candidates)
        for row, score in zip(rows[0].tolist(), scores[0].tolist(), strict=True):
            cosine_of[row] = score
            by_embedding.append({"id": index.ids[row], "cosine": rounded(score, 4), "contains_span": row in containing})
    # The chosen source: the most similar example containing the span, else the most similar overall.
    if match.normalized:
        pool = np.asarray(match.normalized)
        how = "contains the span; the most similar of those"
    else:
        pool = None
        how = "the span is not in the training set; the most similar example"
    source_row: int | None = None
    if embeddings is not None and query_embedding is not None and len(index):
        if pool is not None:
            scores = embeddings[pool] @ query_embedding
            source_row = int(pool[int(np.argmax(scores))])
        elif by_embedding:
            source_row = index.row_of_id(by_embedding[0]["id"])
    elif pool is not None:
        overlaps = [ngram_overlap(response_words, index.segment_words(int(row), search_in))["mean"] or 0.0
                    for row in pool[:1000]]  # fmt: skip
        source_row = int(pool[int(np.argmax(overlaps))])
    elif by_ngram:
        source_row = by_ngram[0][0]
    source = None
    if source_row is not None:
        cosine = None
        if embeddings is not None and query_embedding is not None:
            cosine = float(embeddings[source_row] @ query_embedding)
        overlap = ngram_overlap(response_words, index.segment_words(source_row, search_in))
        source = {
            "id": index.ids[source_row],
            "how": how if embeddings is not None else how.replace("most similar", "highest n-gram overlap"),
            "cosine": rounded(cosine, 4),
            "ngram_overlap": {key: rounded(value, 4) for key, value in overlap.items()},
        }
    at_shifted = classes["shifted"] + classes["marginal"]
    return {
        "span": span.number,
        "example_id": span.example_id,
        "start": span.start,
        "end": span.end,
        "text": span.text,
        "label": span.label,
        "source": span.source,
        "normalized_words": match.words,
        "found_exact": bool(match.exact),
        "found_normalized": bool(match.normalized),
        "n_examples_exact": len(match.exact),
        "n_examples_normalized": len(match.normalized),
        "exact_ids": _ids(index, match.exact, max_ids),
        "normalized_ids": _ids(index, match.normalized, max_ids),
        "ids_truncated": len(match.normalized) > max_ids,
        **classes,
        "shifted_or_marginal_share": rounded(at_shifted / classes["n_tokens"]) if classes["n_tokens"] else None,
        "candidates_by_embedding": by_embedding,
        "candidates_by_ngram": [
            {
                "id": index.ids[row],
                "ngram_overlap": {key: rounded(value, 4) for key, value in overlap.items()},
                "contains_span": row in containing,
            }
            for row, overlap in by_ngram
        ],
        "source_example": source,
    }


def _aggregate(records: list[dict[str, Any]], bootstrap_samples: int, seed: int) -> dict[str, Any]:
    n = len(records)
    boot = Resampling(bootstrap_samples, seed)
    ones = np.ones((n, 1))

    def share(values: list[float], counts: np.ndarray | None = None) -> dict[str, Any]:
        sums = np.asarray(values, dtype=float).reshape(n, 1)
        [estimate] = boot.ratios(sums, ones if counts is None else counts)
        return share_entry(estimate)

    tokens = np.asarray([[r["n_tokens"]] for r in records], dtype=float)
    out: dict[str, Any] = {
        "n_spans": n,
        "found_exact": share([r["found_exact"] for r in records]),
        "found_normalized": share([r["found_normalized"] for r in records]),
        "span_tokens_shifted_or_marginal": share([r["shifted"] + r["marginal"] for r in records], tokens),
        "n_span_tokens": int(tokens.sum()),
    }
    for key, pick in (
        ("mean_cosine_to_source", lambda s: s["cosine"]),
        ("mean_ngram_overlap", lambda s: s["ngram_overlap"]["mean"]),
    ):
        values = [
            pick(r["source_example"]) for r in records if r["source_example"] and pick(r["source_example"]) is not None
        ]
        out[key] = rounded(float(np.mean(values)), 4) if values else None
    return out


def attribution_summary(
    records: list[dict[str, Any]], *, bootstrap_samples: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """The aggregates of spans.jsonl, overall and per label, beside the paper's numbers."""
    labels = sorted({r["label"] for r in records if r["label"] is not None})
    return {
        "note": APPROXIMATION_NOTE,
        **_aggregate(records, bootstrap_samples, seed),
        "by_label": {
            label: _aggregate([r for r in records if r["label"] == label], bootstrap_samples, seed) for label in labels
        },
        "paper": PAPER_ATTRIBUTION,
    }
