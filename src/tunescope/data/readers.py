"""Read instruction data from files or Hugging Face datasets into plain records.

Each record comes with a *locator* ("train.jsonl line 17", "data.parquet row 3") so that every
later complaint about it can say exactly where to look. JSON and JSON lines are parsed here rather
than through ``datasets``, because pyarrow's errors for a malformed line do not say which line.

Plain text (a ``.txt`` file, or a directory of them) is read as documents for continued
pre-training, one record ``{"text": ...}`` per document (:func:`split_documents`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunescope.errors import UserError
from tunescope.files import sha256_file

FILE_SUFFIXES = (".json", ".jsonl", ".parquet", ".csv", ".txt")
MIN_DOCUMENT_WORDS = 8
"""A paragraph shorter than this (a heading, a caption) is joined to the one after it."""
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*(?:\n[ \t]*)+|\f")


@dataclass(frozen=True)
class RawRecord:
    """One row of input data, before it is understood as a conversation."""

    row: int
    """0-based position in the source; the example's id when the record has no ``id`` field."""
    locator: str
    """Human-readable position for error messages, e.g. ``train.jsonl line 17``."""
    fields: dict[str, Any]
    """The row's fields as read."""


@dataclass(frozen=True)
class RawDataset:
    """All records of one source plus what identifies the source."""

    source: str
    """The path or dataset id the records came from."""
    records: list[RawRecord]
    """The rows, in source order."""
    fingerprint: str
    """SHA-256 of the file, or the Hugging Face dataset fingerprint: the data hash in provenance."""


def read_dataset(source: str, split: str = "train") -> RawDataset:
    """Read ``source``: a .json/.jsonl/.parquet/.csv file, a dataset directory, or a hub id.

    Raises:
        UserError: when the source does not exist, cannot be read, or a line is not valid JSON.
    """
    path = Path(source).expanduser()
    if path.is_file():
        return RawDataset(str(path), list(_read_file(path)), sha256_file(path))
    if path.is_dir() and not _is_saved_dataset(path) and (texts := sorted(path.rglob("*.txt"))):
        return _read_text_directory(path, texts)
    if path.is_dir():
        return _read_hf(str(path), split, local=True)
    if path.suffix in FILE_SUFFIXES or os.sep in source and not _looks_like_hub_id(source):
        raise UserError(f"{source}: data file not found")
    return _read_hf(source, split, local=False)


def _looks_like_hub_id(source: str) -> bool:
    parts = source.split("/")
    return len(parts) == 2 and all(parts) and not source.startswith((".", "/", "~"))


def _read_file(path: Path) -> Iterator[RawRecord]:
    suffix = path.suffix.lower()
    try:
        if suffix == ".jsonl":
            yield from read_jsonl_objects(path)
        elif suffix == ".json":
            yield from _read_json(path)
        elif suffix == ".parquet":
            yield from _read_table(path, "parquet")
        elif suffix == ".csv":
            yield from _read_table(path, "csv")
        elif suffix == ".txt":
            yield from _read_text(path, path, start_row=0, required=True)
        else:
            raise UserError(
                f"{path}: unknown data file type '{path.suffix}' (expected one of {', '.join(FILE_SUFFIXES)})"
            )
    except PermissionError:
        raise UserError(f"{path}: cannot read data file: permission denied") from None
    except UnicodeDecodeError as err:
        raise UserError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None


def read_jsonl_objects(path: Path) -> Iterator[RawRecord]:
    """The JSON objects of a JSONL file, one per non-blank line, each with its locator ("FILE line N").

    Raises:
        UserError: naming the file and line of invalid JSON or of a line that is not an object.
    """
    row = 0
    with path.open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            locator = f"{path} line {line_number}"
            try:
                fields = json.loads(line)
            except json.JSONDecodeError as err:
                raise UserError(f"{locator}: invalid JSON: {err.msg} (column {err.colno})") from None
            if not isinstance(fields, dict):
                raise UserError(f"{locator}: expected a JSON object, got {type(fields).__name__}")
            yield RawRecord(row, locator, fields)
            row += 1


def _read_json(path: Path) -> Iterator[RawRecord]:
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        # A .json file that is really JSON lines is common enough to accept.
        if err.msg == "Extra data":
            yield from read_jsonl_objects(path)
            return
        raise UserError(f"{path} line {err.lineno}: invalid JSON: {err.msg} (column {err.colno})") from None
    if isinstance(data, dict) and len(data) == 1 and isinstance(next(iter(data.values())), list):
        data = next(iter(data.values()))  # {"data": [...]} wrappers
    if not isinstance(data, list):
        raise UserError(f"{path}: expected a JSON list of records")
    for row, fields in enumerate(data):
        locator = f"{path} record {row + 1}"
        if not isinstance(fields, dict):
            raise UserError(f"{locator}: expected a JSON object, got {type(fields).__name__}")
        yield RawRecord(row, locator, fields)


def _read_table(path: Path, kind: str) -> Iterator[RawRecord]:
    import pyarrow as pa

    try:
        if kind == "parquet":
            import pyarrow.parquet as pq

            table = pq.read_table(path)
        else:
            import pyarrow.csv as pacsv

            table = pacsv.read_csv(path)
    except pa.ArrowInvalid as err:
        raise UserError(f"{path}: cannot read {kind} file: {str(err).splitlines()[0]}") from None
    # CSV rows are named by their line (header is line 1); Parquet rows by their 1-based number.
    for row, fields in enumerate(table.to_pylist()):
        locator = f"{path} line {row + 2}" if kind == "csv" else f"{path} row {row + 1}"
        yield RawRecord(row, locator, fields)


def split_documents(text: str, min_words: int = MIN_DOCUMENT_WORDS) -> list[tuple[int, str]]:
    """Split plain text into documents: ``(first line number, document)``, in order.

    Paragraphs are separated by blank lines (lines holding only spaces or tabs) or by form feeds
    (page breaks); each paragraph is a document. A paragraph of fewer than ``min_words`` words is
    joined to the next one, so that a heading or a caption stays with the text it introduces (a short
    last paragraph is joined to the one before). Lines inside a paragraph keep their line breaks.
    """
    pieces: list[tuple[int, str]] = []
    line, position = 1, 0
    for match in [*_PARAGRAPH_BREAK.finditer(text), None]:
        end = match.start() if match else len(text)
        chunk = text[position:end]
        stripped = chunk.strip()
        if stripped:
            leading = chunk[: len(chunk) - len(chunk.lstrip())].count("\n")
            pieces.append((line + leading, stripped))
        if match is None:
            break
        line += text[position : match.end()].count("\n")
        position = match.end()
    documents: list[tuple[int, str]] = []
    pending: tuple[int, str] | None = None
    for start, paragraph in pieces:
        if pending is not None:
            start, paragraph = pending[0], f"{pending[1]}\n\n{paragraph}"
        pending = (start, paragraph) if len(paragraph.split()) < min_words else None
        if pending is None:
            documents.append((start, paragraph))
    if pending is not None:
        if documents:
            start, previous = documents.pop()
            pending = (start, f"{previous}\n\n{pending[1]}")
        documents.append(pending)
    return documents


def _read_text(path: Path, shown: Path, start_row: int, required: bool) -> Iterator[RawRecord]:
    """One record per document of a UTF-8 text file; ``shown`` is how locators name the file."""
    text = path.read_text(encoding="utf-8")
    if not text.strip():
        if required:
            raise UserError(f"{shown}: the text file is empty")
        return
    for row, (line, document) in enumerate(split_documents(text), start=start_row):
        yield RawRecord(row, f"{shown} line {line}", {"text": document})


def _read_text_directory(directory: Path, files: list[Path]) -> RawDataset:
    """Every .txt file under ``directory`` (in path order), split into documents; empty files are skipped."""
    records: list[RawRecord] = []
    digest = hashlib.sha256()
    for file in files:
        try:
            records += _read_text(file, file, start_row=len(records), required=False)
        except PermissionError:
            raise UserError(f"{file}: cannot read text file: permission denied") from None
        except UnicodeDecodeError as err:
            raise UserError(f"{file}: not UTF-8 text ({err.reason} at byte {err.start})") from None
        digest.update(f"{file.relative_to(directory)}\0{sha256_file(file)}\n".encode())
    if not records:
        raise UserError(f"{directory}: no documents: every .txt file in it is empty")
    return RawDataset(str(directory), records, digest.hexdigest())


def _is_saved_dataset(path: Path) -> bool:
    return (path / "dataset_info.json").exists() or (path / "state.json").exists()


def _read_hf(source: str, split: str, local: bool) -> RawDataset:
    import datasets

    try:
        if local and _is_saved_dataset(Path(source)):
            loaded = datasets.load_from_disk(source)
        else:
            loaded = datasets.load_dataset(source, split=split)
    except Exception as err:  # datasets raises many unrelated types for "not there"
        what = "dataset directory" if local else "dataset"
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        hint = "" if local else " (not a local file, and the Hugging Face hub could not provide it)"
        raise UserError(f"{source}: cannot load {what}{hint}: {reason}") from None
    if isinstance(loaded, datasets.DatasetDict):
        if split not in loaded:
            raise UserError(f"{source}: no split '{split}' (available: {', '.join(loaded)})")
        loaded = loaded[split]
    records = [RawRecord(row, f"{source} row {row + 1}", fields) for row, fields in enumerate(loaded)]
    return RawDataset(source, records, loaded._fingerprint)
