"""A shift run's files, and reading a finished run back: each response's text, tokens, spans and classes.

Later stages (borrowing, the report) find a run's files by these names and read a run with
:func:`read_shift_run`: ``examples.jsonl`` (the response text each token's ``char_start`` and
``char_end`` point into), the identity, span and class columns of ``tokens.parquet``, and the run's
settings (base and tuned model, responses file, mode, thresholds).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tunescope.errors import UserError
from tunescope.rundir import CONFIG_FILE, DONE_FILE, saved_config

TOKENS_FILE = "tokens.parquet"
"""One row per scored response token (columns: :mod:`tunescope.shift.columns`)."""
SUMMARY_FILE = "summary.json"
"""The run's numbers: class shares, means with intervals, curves by position, settings."""
EXAMPLES_FILE = "examples.jsonl"
"""Per response, the exact token ids and text each model read."""
VIEWER_FILE = "viewer.html"
"""Every response with its tokens coloured by class."""
RESPONSE_COLUMNS = ["example_id", "example_index", "position", "token_id", "token", "char_start", "char_end", "klass"]
"""The tokens.parquet columns :func:`read_shift_run` reads."""


@dataclass(frozen=True)
class ShiftResponse:
    """One scored response of a shift run."""

    example_id: str
    """The response's id (the prompt's id in the responses file)."""
    index: int
    """0-based position in the responses file."""
    text: str
    """The decoded response, as in examples.jsonl; token spans and span offsets refer to it."""
    token_ids: np.ndarray
    """The response's token ids, in order."""
    tokens: list[str]
    """Each token decoded on its own."""
    char_start: np.ndarray
    """Where each token's text starts in ``text``."""
    char_end: np.ndarray
    """Where it ends."""
    klass: np.ndarray
    """unshifted / marginal / shifted, per token."""


@dataclass(frozen=True)
class ShiftRun:
    """A finished shift run, read."""

    directory: Path
    """The run directory."""
    settings: dict[str, Any]
    """Its config.yaml: base, tuned, responses, mode, thresholds, ..."""
    responses: list[ShiftResponse]
    """Scored responses, in responses-file order."""

    @property
    def mode(self) -> str:
        """The shift mode: ``exact`` or ``aligntds``."""
        return str(self.settings.get("mode", "exact"))

    def by_id(self) -> dict[str, ShiftResponse]:
        """Responses keyed by id."""
        return {response.example_id: response for response in self.responses}


def per_response_shift(directory: str | Path) -> dict[str, dict[str, Any]]:
    """Per response id of a finished shift run: position, scored tokens, mean KL and shifted share.

    ``index`` is the response's position in the responses file, and viewer.html's anchor ``#response-<index>``.
    """
    table = pq.read_table(Path(directory) / TOKENS_FILE, columns=["example_id", "example_index", "kl", "klass"])
    table = table.append_column("shifted", pc.equal(table["klass"], "shifted").cast(pa.float64()))
    grouped = table.group_by(["example_id", "example_index"]).aggregate(
        [("kl", "mean"), ("shifted", "mean"), ("klass", "count")]
    )
    return {
        str(row["example_id"]): {
            "index": int(row["example_index"]),
            "n_tokens": int(row["klass_count"]),
            "kl": None if row["kl_mean"] is None else float(row["kl_mean"]),
            "shifted": float(row["shifted_mean"]),
        }
        for row in grouped.to_pylist()
    }


def read_shift_run(path: str | Path) -> ShiftRun:
    """Read the shift run in ``path``.

    Raises:
        UserError: when ``path`` is not a finished shift run or its files are damaged.
    """
    directory = Path(path).expanduser()
    where = f"--shift {directory}"
    if not directory.is_dir():
        raise UserError(f"{where}: no such directory")
    for name in (CONFIG_FILE, EXAMPLES_FILE, TOKENS_FILE):
        if not (directory / name).is_file():
            raise UserError(f"{where}: not a tunescope shift run (no {name})")
    if not (directory / DONE_FILE).is_file():
        raise UserError(f"{where}: the shift run is unfinished (no {DONE_FILE}); run `tunescope shift` again")
    settings = saved_config(directory) or {}
    texts: dict[int, tuple[str, str]] = {}
    with (directory / EXAMPLES_FILE).open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                texts[int(record["index"])] = (str(record["id"]), str(record["response"]))
            except (ValueError, KeyError, TypeError):
                raise UserError(f"{directory / EXAMPLES_FILE} line {number}: not a shift example record") from None
    try:
        table = pq.read_table(directory / TOKENS_FILE, columns=RESPONSE_COLUMNS)
    except (OSError, KeyError, ValueError) as err:
        raise UserError(f"{directory / TOKENS_FILE}: cannot read it ({str(err).splitlines()[0]})") from None
    columns = {name: table.column(name).to_numpy(zero_copy_only=False) for name in RESPONSE_COLUMNS}
    order = np.lexsort((columns["position"], columns["example_index"]))
    columns = {name: values[order] for name, values in columns.items()}
    cuts = np.flatnonzero(np.diff(columns["example_index"])) + 1
    responses = []
    for rows in np.split(np.arange(len(order)), cuts):
        if not len(rows):
            continue
        index = int(columns["example_index"][rows[0]])
        if index not in texts:
            raise UserError(f"{directory}: {TOKENS_FILE} has response {index}, which {EXAMPLES_FILE} lacks")
        example_id, text = texts[index]
        responses.append(
            ShiftResponse(
                example_id=example_id,
                index=index,
                text=text,
                token_ids=columns["token_id"][rows].astype(np.int64),
                tokens=[str(token) for token in columns["token"][rows]],
                char_start=columns["char_start"][rows].astype(np.int64),
                char_end=columns["char_end"][rows].astype(np.int64),
                klass=columns["klass"][rows].astype(str),
            )
        )
    return ShiftRun(directory, settings, responses)
