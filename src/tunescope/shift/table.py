"""tokens.parquet: one row per scored response token, written one batch of responses at a time.

Rows of a response are contiguous and in position order; responses appear in the order they were
scored (longest first), and ``example_index`` gives their place in the responses file. The file's
metadata records the mode and what each column means in it. The columns themselves are defined in
:mod:`tunescope.shift.columns`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tunescope.shift.columns import column_definitions, token_columns, token_schema


def _list_array(matrix: np.ndarray, value_type: pa.DataType) -> pa.Array:
    rows, k = matrix.shape
    offsets = pa.array(np.arange(0, rows * k + 1, k, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(matrix.reshape(-1), type=value_type))


def response_table(columns: dict[str, Any]) -> pa.Table:
    """One response's rows from per-position arrays; columns a mode does not compute are null."""
    n = len(columns["token_id"])
    arrays = []
    for column in token_columns():
        value = columns.get(column.name)
        if value is None:
            arrays.append(pa.nulls(n, column.type))
        elif column.labels is not None:
            arrays.append(pa.array(np.asarray(column.labels)[value], type=column.type))
        elif pa.types.is_list(column.type):
            arrays.append(_list_array(np.asarray(value), column.type.value_type))
        elif isinstance(value, str):
            arrays.append(pa.array([value] * n, type=column.type))
        else:
            arrays.append(pa.array(np.asarray(value), type=column.type))
    return pa.Table.from_arrays(arrays, schema=token_schema())


class TokenTableWriter:
    """Appends responses to tokens.parquet, one row group per batch, so memory stays per batch."""

    def __init__(self, path: str | Path, mode: str, metadata: dict[str, Any]) -> None:
        schema = token_schema().with_metadata(
            {
                "tunescope.mode": mode,
                "tunescope.columns": json.dumps(column_definitions(mode), ensure_ascii=False),
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
