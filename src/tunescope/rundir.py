"""Output directories: claim one for a run, refuse to clobber another run, support resume, trace ancestry.

A directory is a tunescope run when it holds ``config.yaml``; it is finished when it also holds
``run.json``, which is always written last. A training run that started from another run (continued
pre-training, then instruction tuning) records the chain of runs before it (:func:`run_lineage`).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from enum import Enum
from pathlib import Path
from typing import Any

import yaml

from tunescope.errors import UserError
from tunescope.files import write_yaml
from tunescope.locks import is_lock_file

CONFIG_FILE = "config.yaml"
DONE_FILE = "run.json"
PROVENANCE_FILE = "provenance.json"
ARTIFACTS = ("adapter", "model")
"""Names of a finished training run's output directory: a LoRA adapter, or a whole model."""


class RunState(Enum):
    """What to do with a claimed directory."""

    NEW = "new"
    RESUME = "resume"
    DONE = "done"


def saved_config(out: Path) -> dict[str, Any] | None:
    """The resolved settings stored in run directory ``out``, if it is one."""
    path = out / CONFIG_FILE
    if not path.is_file():
        return None
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def config_differences(old: dict[str, Any], new: dict[str, Any], ignore: frozenset[str]) -> list[str]:
    """Names of settings whose values differ, as ``name (old -> new)``."""
    keys = [key for key in {**old, **new} if key not in ignore]
    return [f"{key} ({old.get(key)!r} -> {new.get(key)!r})" for key in keys if old.get(key) != new.get(key)]


def check_run_dir(
    out: Path,
    config: dict[str, Any],
    *,
    resume: bool,
    overwrite: bool,
    may_change_on_resume: frozenset[str] = frozenset({"out"}),
) -> RunState:
    """Decide, without writing anything, whether ``out`` may receive this run.

    Raises:
        UserError: for a path that is not a directory, a directory holding something else, a run
            that is already there (without ``overwrite``), or a resume whose settings differ from
            the saved run's.
    """
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a directory")
    previous = saved_config(out) if out.is_dir() else None
    occupied = out.is_dir() and any(not is_lock_file(path) for path in out.iterdir())
    if occupied and previous is None:
        raise UserError(f"--out {out}: directory is not empty and is not a tunescope run; choose another --out")
    if resume:
        if previous is None:
            raise UserError(f"--resume: {out} holds no run to resume")
        if changed := config_differences(previous, config, may_change_on_resume):
            raise UserError(f"--resume: settings differ from the run in {out}: {', '.join(changed)}")
        return RunState.DONE if (out / DONE_FILE).is_file() else RunState.RESUME
    if previous is not None and not overwrite:
        changed = config_differences(previous, config, frozenset({"out"}))
        if changed:
            what = f"a different run ({', '.join(changed[:3])}{', ...' if len(changed) > 3 else ''})"
        elif (out / DONE_FILE).is_file():
            what = "this run, finished"
        else:
            what = "this run, unfinished (pass --resume to continue it)"
        raise UserError(f"--out {out}: already holds {what}; pass --overwrite to replace it")
    return RunState.NEW


def start_run_dir(out: Path, config: dict[str, Any]) -> None:
    """Empty ``out`` (a run being overwritten) or create it, and save the run's settings.

    Raises:
        UserError: when the directory cannot be created or written.
    """
    try:
        if saved_config(out) is not None:
            shutil.rmtree(out)
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".write-test-"):
            pass
    except OSError as err:
        raise UserError(f"--out {out}: cannot write there ({err.strerror})") from None
    write_yaml(out / CONFIG_FILE, config)


def run_directory(spec: str | Path) -> Path | None:
    """The finished tunescope run that ``spec`` names (the run directory, or its adapter or model), if any."""
    path = Path(spec).expanduser()
    if (path / DONE_FILE).is_file():
        return path.resolve()
    if path.name in ARTIFACTS and (path.parent / DONE_FILE).is_file():
        return path.parent.resolve()
    return None


def lineage_entry(run_dir: Path) -> dict[str, Any]:
    """How one run in a chain is recorded: its directory, what it started from, its method and data."""
    settings = saved_config(run_dir) or {}
    provenance = _read_json(run_dir / PROVENANCE_FILE) or {}
    data = provenance.get("data", {})
    return {
        "run": str(run_dir),
        "model": settings.get("model"),
        "method": settings.get("method"),
        "data": {
            "source": data.get("source", settings.get("data")),
            "format": data.get("format", settings.get("format")),
            "sha256": data.get("sha256"),
        },
    }


def run_lineage(run_dir: Path) -> list[dict[str, Any]]:
    """The runs ``run_dir`` descends from, oldest first (empty for a run trained from a base model).

    Read from the run's ``provenance.json`` (its ``lineage``), where training recorded it.
    """
    provenance = _read_json(run_dir / PROVENANCE_FILE) or {}
    return list(provenance.get("lineage", []))


def _read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
