"""The columns of tokens.parquet, defined once: one row per scored response token.

:data:`TOKEN_COLUMNS` lists every column in file order with its Arrow type, what it means,
whether the viewer reads it, and, for an exact-mode metric, the function of
:mod:`tunescope.shift.metrics` that computes it. What a column means in AlignTDS mode, where that
differs, is :data:`tunescope.shift.aligntds.COLUMN_MEANINGS`, beside that mode's formulas. The Parquet
schema, the column meanings written into the file's metadata, the exact-mode metrics of a chunk
and the viewer's columns are all derived from it, so adding a metric is one entry here and one
function there. The functions below read the registry each time they are called.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pyarrow as pa
from torch import Tensor

from tunescope.distributions import CLASSES
from tunescope.shift import metrics
from tunescope.shift.aligntds import COLUMN_MEANINGS
from tunescope.shift.metrics import Positions


@dataclass(frozen=True)
class TokenColumn:
    """One column of tokens.parquet."""

    name: str
    """Column name."""
    type: pa.DataType
    """Arrow type in the file."""
    definition: str
    """What the column holds (in AlignTDS mode too, unless :data:`.aligntds.COLUMN_MEANINGS` says otherwise)."""
    viewer: bool = False
    """Whether viewer.html reads the column."""
    compute: Callable[[Positions], Tensor] | None = None
    """Exact mode: the column's values at a chunk of positions (None: filled from the response itself)."""
    labels: tuple[str, ...] | None = None
    """For a categorical column: the names its computed indices stand for."""


def _metric(
    name: str,
    type: pa.DataType,
    definition: str,
    *,
    viewer: bool = False,
    labels: tuple[str, ...] | None = None,
) -> TokenColumn:
    """An exact-mode metric column: computed by the function of :mod:`tunescope.shift.metrics` with its name."""
    return TokenColumn(name, type, definition, viewer, getattr(metrics, name), labels)


TOKEN_COLUMNS: tuple[TokenColumn, ...] = (
    TokenColumn("example_id", pa.string(), "the response's id"),
    TokenColumn("example_index", pa.int32(), "0-based position of the response in the responses file", viewer=True),
    TokenColumn("position", pa.int32(), "0-based index of the token in the response (output_token_ids)"),
    TokenColumn("relative_position", pa.float32(), "position / number of scored tokens in the response"),
    TokenColumn("token_id", pa.int32(), "the response token (fed to both models)", viewer=True),
    TokenColumn("token", pa.string(), "the token decoded on its own", viewer=True),
    TokenColumn("char_start", pa.int32(), "start of the token's text in the decoded response (examples.jsonl "
                "'response')", viewer=True),
    TokenColumn("char_end", pa.int32(), "end of the token's text; equal to char_start for a partial character",
                viewer=True),
    _metric("klass", pa.string(), "unshifted / marginal / shifted, from base_rank and the configured thresholds",
            viewer=True, labels=CLASSES),
    _metric("base_rank", pa.int64(), "1-indexed exact rank of the response token among base logits: "
            "1 + #(strictly larger)", viewer=True),
    _metric("base_prob", pa.float32(), "p_base(response token), full vocabulary", viewer=True),
    _metric("tuned_prob", pa.float32(), "p_tuned(response token), full vocabulary", viewer=True),
    _metric("kl", pa.float32(), "KL(base‖tuned) = Σ_v p_base(v) log(p_base(v) / p_tuned(v)), nats, full vocabulary",
            viewer=True),
    _metric("kl_reverse", pa.float32(), "KL(tuned‖base), nats, full vocabulary", viewer=True),
    _metric("tuned_rank", pa.int64(), "1-indexed exact rank of the response token among tuned logits"),
    _metric("base_entropy", pa.float32(), "entropy of p_base, nats", viewer=True),
    _metric("tuned_entropy", pa.float32(), "entropy of p_tuned, nats", viewer=True),
    _metric("tuned_top1", pa.int32(), "argmax of the tuned distribution"),
    _metric("is_tuned_top1", pa.bool_(), "the response token is the tuned argmax (false under sampling or changed "
            "numerics)"),
    _metric("base_rank_of_tuned_top1", pa.int64(), "1-indexed exact base rank of the tuned argmax"),
    TokenColumn("sentence_index", pa.int32(), "0-based sentence of the response the token belongs to; -1 for white "
                "space"),
    TokenColumn("initiation", pa.bool_(), "the token is among the first 5% (at least one) of its sentence's tokens"),
    _metric("base_top_ids", pa.list_(pa.int32()), "the base model's top-k token ids, best first", viewer=True),
    _metric("base_top_probs", pa.list_(pa.float32()), "their full-vocabulary base probabilities", viewer=True),
    _metric("tuned_top_ids", pa.list_(pa.int32()), "the tuned model's top-k token ids, best first", viewer=True),
    _metric("tuned_top_probs", pa.list_(pa.float32()), "their full-vocabulary tuned probabilities", viewer=True),
)  # fmt: skip
"""Every column of tokens.parquet, in file order."""


def token_columns() -> tuple[TokenColumn, ...]:
    """The registry as it stands when called (a column registered later reaches every use)."""
    return TOKEN_COLUMNS


def token_schema() -> pa.Schema:
    """The Arrow schema of tokens.parquet."""
    return pa.schema([(column.name, column.type) for column in token_columns()])


def column_definitions(mode: str) -> dict[str, str]:
    """What each column means in ``mode`` ("exact" or "aligntds"), written into the file's metadata.

    Columns that mean the same in both modes come first, then those whose meaning depends on the
    mode, each group in file order.
    """
    same = [column for column in token_columns() if column.name not in COLUMN_MEANINGS]
    differs = [column for column in token_columns() if column.name in COLUMN_MEANINGS]
    meanings = COLUMN_MEANINGS if mode == "aligntds" else {}
    return {column.name: meanings.get(column.name, column.definition) for column in [*same, *differs]}


def viewer_columns() -> list[str]:
    """The columns viewer.html reads."""
    return [column.name for column in token_columns() if column.viewer]


def exact_metrics(positions: Positions) -> dict[str, Tensor]:
    """Every exact-mode metric column at a chunk of positions, by column name."""
    return {column.name: column.compute(positions) for column in token_columns() if column.compute is not None}
