"""Paths recorded in output files, so that a run or experiment directory can be moved, copied or shared.

A file records a local path it was given relative to the working directory (which means nothing once
the command has ended) relative to the directory that holds the file instead. An absolute path given
by the user, a ``~`` path, and a name that is not a local path (an asset, a Hugging Face id) are
recorded as given; a reader reports them if they are missing. Readers resolve a recorded path against
the holder's directory; one that is not there is returned as recorded, which also reads files written
before paths were recorded this way, when read from the directory they were written from.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def recorded_path(value: str, holder: str | Path) -> str:
    """How a file in directory ``holder`` records the path ``value`` (relative to the working directory)."""
    path = Path(value)
    if path.is_absolute() or value.startswith("~") or not path.exists():
        return value
    return Path(os.path.relpath(path.absolute(), Path(holder).expanduser().absolute())).as_posix()


def resolved_path(value: str, holder: str | Path) -> str:
    """The path ``value`` recorded in a file in directory ``holder``, usable from the working directory."""
    path = Path(value)
    if path.is_absolute() or value.startswith("~"):
        return value
    # Lexically, as the path was recorded: ".." steps out of the holder even through a link.
    candidate = os.path.normpath(Path(holder).expanduser() / path)
    return candidate if Path(candidate).exists() else value


def recorded_model(description: dict[str, Any], holder: str | Path) -> dict[str, Any]:
    """A model description (``spec``, ``location``, an adapter's ``base``) as a file in ``holder`` records it."""
    recorded = {**description}
    for key in ("spec", "location"):
        if isinstance(recorded.get(key), str):
            recorded[key] = recorded_path(recorded[key], holder)
    if isinstance(recorded.get("base"), dict):
        recorded["base"] = recorded_model(recorded["base"], holder)
    return recorded
