"""tokens.parquet: one row per scored response token, written one batch of responses at a time.

Rows of a response are contiguous and in position order; responses appear in the order they were
scored (longest first), and ``example_index`` gives their place in the responses file. The file's
metadata records the mode and what each column means in it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tunescope.distributions import CLASSES

SCHEMA = pa.schema(
    [
        ("example_id", pa.string()),
        ("example_index", pa.int32()),
        ("position", pa.int32()),
        ("relative_position", pa.float32()),
        ("token_id", pa.int32()),
        ("token", pa.string()),
        ("char_start", pa.int32()),
        ("char_end", pa.int32()),
        ("klass", pa.string()),
        ("base_rank", pa.int64()),
        ("base_prob", pa.float32()),
        ("tuned_prob", pa.float32()),
        ("kl", pa.float32()),
        ("kl_reverse", pa.float32()),
        ("tuned_rank", pa.int64()),
        ("base_entropy", pa.float32()),
        ("tuned_entropy", pa.float32()),
        ("tuned_top1", pa.int32()),
        ("is_tuned_top1", pa.bool_()),
        ("base_rank_of_tuned_top1", pa.int64()),
        ("sentence_index", pa.int32()),
        ("initiation", pa.bool_()),
        ("base_top_ids", pa.list_(pa.int32())),
        ("base_top_probs", pa.list_(pa.float32())),
        ("tuned_top_ids", pa.list_(pa.int32())),
        ("tuned_top_probs", pa.list_(pa.float32())),
    ]
)

_COMMON = {
    "example_id": "the response's id",
    "example_index": "0-based position of the response in the responses file",
    "position": "0-based index of the token in the response (output_token_ids)",
    "relative_position": "position / number of scored tokens in the response",
    "token_id": "the response token (fed to both models)",
    "token": "the token decoded on its own",
    "char_start": "start of the token's text in the decoded response (examples.jsonl 'response')",
    "char_end": "end of the token's text; equal to char_start for a partial character",
    "tuned_top1": "argmax of the tuned distribution",
    "is_tuned_top1": "the response token is the tuned argmax (false under sampling or changed numerics)",
    "sentence_index": "0-based sentence of the response the token belongs to; -1 for white space",
    "initiation": "the token is among the first 5% (at least one) of its sentence's tokens",
}

DEFINITIONS: dict[str, dict[str, str]] = {
    "exact": {
        **_COMMON,
        "klass": "unshifted / marginal / shifted, from base_rank and the configured thresholds",
        "base_rank": "1-indexed exact rank of the response token among base logits: 1 + #(strictly larger)",
        "base_prob": "p_base(response token), full vocabulary",
        "tuned_prob": "p_tuned(response token), full vocabulary",
        "kl": "KL(base‖tuned) = Σ_v p_base(v) log(p_base(v) / p_tuned(v)), nats, full vocabulary",
        "kl_reverse": "KL(tuned‖base), nats, full vocabulary",
        "tuned_rank": "1-indexed exact rank of the response token among tuned logits",
        "base_entropy": "entropy of p_base, nats",
        "tuned_entropy": "entropy of p_tuned, nats",
        "base_rank_of_tuned_top1": "1-indexed exact base rank of the tuned argmax",
        "base_top_ids": "the base model's top-k token ids, best first",
        "base_top_probs": "their full-vocabulary base probabilities",
        "tuned_top_ids": "the tuned model's top-k token ids, best first",
        "tuned_top_probs": "their full-vocabulary tuned probabilities",
    },
    "aligntds": {
        **_COMMON,
        "klass": "unshifted / marginal / shifted, from TR + 1 and the configured thresholds",
        "base_rank": "AlignTDS's TR: 0-indexed position of the tuned top-1 text in the base top list, or the cap",
        "base_prob": "AlignTDS's TP: renormalised base weight of the tuned top-1 text, 0 when absent",
        "tuned_prob": "renormalised tuned weight of its own top-1",
        "kl": "AlignTDS's KL@k: renormalised top lists, summed over texts in both; truncated, may be negative",
        "kl_reverse": "null (AlignTDS has no reverse KL)",
        "tuned_rank": "null",
        "base_entropy": "null",
        "tuned_entropy": "null",
        "base_rank_of_tuned_top1": "null (base_rank already ranks the tuned top-1)",
        "base_top_ids": "the first k of the base model's stored top list",
        "base_top_probs": "their weights renormalised over the stored list",
        "tuned_top_ids": "the first k of the tuned model's stored top list",
        "tuned_top_probs": "their weights renormalised over the stored list",
    },
}


def _list_array(matrix: np.ndarray, value_type: pa.DataType) -> pa.Array:
    rows, k = matrix.shape
    offsets = pa.array(np.arange(0, rows * k + 1, k, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(matrix.reshape(-1), type=value_type))


def response_table(columns: dict[str, Any]) -> pa.Table:
    """One response's rows from per-position arrays; columns a mode does not compute are null."""
    n = len(columns["token_id"])
    arrays = []
    for schema_field in SCHEMA:
        value = columns.get(schema_field.name)
        if value is None:
            arrays.append(pa.nulls(n, schema_field.type))
        elif schema_field.name == "klass":
            arrays.append(pa.array(np.asarray(CLASSES)[value], type=pa.string()))
        elif pa.types.is_list(schema_field.type):
            arrays.append(_list_array(np.asarray(value), schema_field.type.value_type))
        elif isinstance(value, str):
            arrays.append(pa.array([value] * n, type=schema_field.type))
        else:
            arrays.append(pa.array(np.asarray(value), type=schema_field.type))
    return pa.Table.from_arrays(arrays, schema=SCHEMA)


class TokenTableWriter:
    """Appends responses to tokens.parquet, one row group per batch, so memory stays per batch."""

    def __init__(self, path: str | Path, mode: str, metadata: dict[str, Any]) -> None:
        schema = SCHEMA.with_metadata(
            {
                "tunescope.mode": mode,
                "tunescope.columns": json.dumps(DEFINITIONS[mode], ensure_ascii=False),
                "tunescope.run": json.dumps(metadata, ensure_ascii=False),
            }
        )
        self._writer = pq.ParquetWriter(str(path), schema)
        self._schema = schema

    def write(self, tables: list[pa.Table]) -> None:
        """Write the rows of a batch of responses as one row group."""
        if tables:
            self._writer.write_table(pa.concat_tables(tables).replace_schema_metadata(self._schema.metadata))

    def close(self) -> None:
        """Finish the file (its footer is written here)."""
        self._writer.close()
