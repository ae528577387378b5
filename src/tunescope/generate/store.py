"""The responses file: JSON lines that grow by whole records, so a crash loses at most one batch.

Each batch of responses is appended with one write and flushed to disk. After a crash the file
may end with part of a line; reading it drops that fragment (the response is generated again),
so every line in the file is always a complete record.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

from tunescope.errors import UserError


class ResponseFile:
    """A JSON-lines file of responses keyed by ``id``."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def load(self) -> list[dict[str, Any]]:
        """The complete records already in the file, after cutting off an interrupted last line.

        Raises:
            UserError: for a line that is not a JSON object with an ``id``.
        """
        if not self.path.exists():
            return []
        if not self.path.is_file():
            raise UserError(f"--out {self.path}: exists and is not a file")
        data = self.path.read_bytes()
        complete = data[: data.rfind(b"\n") + 1]
        if len(complete) < len(data):
            warnings.warn(f"{self.path}: dropped an incomplete last line (an interrupted run)", stacklevel=2)
            os.truncate(self.path, len(complete))
        records = []
        for number, line in enumerate(complete.decode("utf-8", errors="replace").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise UserError(f"{self.path} line {number}: invalid JSON ({err.msg}); not a responses file?") from None
            if not isinstance(record, dict) or "id" not in record:
                raise UserError(f"{self.path} line {number}: not a response record (no 'id')")
            records.append(record)
        return records

    def append(self, records: list[dict[str, Any]]) -> None:
        """Add ``records`` at the end of the file and flush them to disk."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write("".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records))
            handle.flush()
            os.fsync(handle.fileno())
