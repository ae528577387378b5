"""On-disk cache of model replies, so that no request is ever paid for twice.

The key is :func:`request_key`: the SHA-256 of the backend's identity (model and decoding
settings) and the exact messages, which embed the prompt template and its version. The value is
the raw reply text with its finish reason and token usage; parsing happens after the cache, so a
better parser re-reads old replies for free.

The store is one SQLite file (standard library, transactional, safe across threads and across
processes writing at once). It lives under tunescope's cache directory by default, so a rerun
into another output directory still finds its replies. Only replies are stored: never a request
header, so never an API key. Beside the replies it remembers which JSON mode each server accepts
(see ``json_mode="auto"`` in :mod:`tunescope.llm.http`), keyed by the server's public URL and model.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from tunescope.assets import cache_dir
from tunescope.errors import UserError
from tunescope.llm.base import Reply

CACHE_FILE = "replies.sqlite"


def request_key(identity: dict[str, Any], messages: list[dict[str, str]], schema: dict[str, Any] | None) -> str:
    """The cache key of one request: SHA-256 of the backend's identity, the messages and the reply schema."""
    # The identity's key is "judge" because the judge's caches were the first: keys stay the same.
    payload = json.dumps({"judge": identity, "messages": messages, "schema": schema}, sort_keys=True)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def default_cache_dir() -> Path:
    """``<tunescope cache>/judge`` (the judge's replies, where caches have always been)."""
    return cache_dir() / "judge"


class ReplyCache:
    """A persistent map from request key to :class:`~tunescope.llm.base.Reply`."""

    def __init__(self, directory: str | Path | None = None) -> None:
        """Open (creating if needed) the cache in ``directory`` (default: :func:`default_cache_dir`).

        Raises:
            UserError: when the directory cannot be created or the file is not a usable cache.
        """
        directory = Path(directory).expanduser() if directory else default_cache_dir()
        self.path = directory / CACHE_FILE
        self._lock = threading.Lock()
        try:
            directory.mkdir(parents=True, exist_ok=True)
            # One connection shared by the worker threads, serialised by the lock; the timeout
            # lets a second process wait for a write lock instead of failing.
            self._db = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS replies (key TEXT PRIMARY KEY, judge_model TEXT, text TEXT, "
                "finish_reason TEXT, usage TEXT, created REAL, json_mode TEXT)"
            )
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(replies)")}
            if "json_mode" not in columns:  # a cache written before replies recorded their JSON mode
                self._db.execute("ALTER TABLE replies ADD COLUMN json_mode TEXT")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS json_modes "
                "(server TEXT, model TEXT, mode TEXT, PRIMARY KEY (server, model))"
            )
            self._db.commit()
        except (OSError, sqlite3.Error) as err:
            raise UserError(f"--cache-dir {directory}: cannot use the judge cache there ({err})") from None

    def get(self, key: str) -> Reply | None:
        """The cached reply for ``key``, or None."""
        with self._lock:
            row = self._db.execute(
                "SELECT text, finish_reason, usage, json_mode FROM replies WHERE key = ?", (key,)
            ).fetchone()
        if row is None:
            return None
        return Reply(text=row[0], finish_reason=row[1], usage=json.loads(row[2] or "{}"), attempts=0, json_mode=row[3])

    def put(self, key: str, judge_model: str, reply: Reply) -> None:
        """Store ``reply`` under ``key`` (the first reply for a key wins)."""
        with self._lock:
            self._db.execute(
                "INSERT OR IGNORE INTO replies (key, judge_model, text, finish_reason, usage, created, json_mode) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (key, judge_model, reply.text, reply.finish_reason, json.dumps(reply.usage), time.time(),
                 reply.json_mode),
            )  # fmt: skip
            self._db.commit()

    def json_mode(self, server: str, model: str) -> str | None:
        """The JSON mode ``server`` accepted for ``model`` in an earlier run, or None."""
        with self._lock:
            row = self._db.execute(
                "SELECT mode FROM json_modes WHERE server = ? AND model = ?", (server, model)
            ).fetchone()
        return row[0] if row else None

    def remember_json_mode(self, server: str, model: str, mode: str | None) -> None:
        """Remember the JSON mode ``server`` accepts for ``model`` (None forgets it)."""
        with self._lock:
            self._db.execute("DELETE FROM json_modes WHERE server = ? AND model = ?", (server, model))
            if mode is not None:
                self._db.execute("INSERT INTO json_modes VALUES (?, ?, ?)", (server, model, mode))
            self._db.commit()

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM replies").fetchone()[0]

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()
