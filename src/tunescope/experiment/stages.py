"""Stages keyed by what they compute, so a rerun skips finished work and resumes the rest.

A stage's key hashes its name, its settings and the keys of the stages it reads from: change a
learning rate and the training stage and everything downstream of it get new keys (and are
run), while everything else is found finished and skipped. Outputs go to
``stages/<name>-<key>/``; a stage is finished when ``done/<name>-<key>.json`` exists, which is
written last, after the stage's own outputs. A stage that ends incomplete (a judge whose endpoint
did not answer every request) gets no marker, so the next run completes it.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunescope.errors import IncompleteRun
from tunescope.files import write_json

STAGE_FORMAT = 3
"""Bump when a stage's outputs change meaning, so old results are not reused."""


@dataclass
class Stage:
    """One unit of work of an experiment."""

    name: str
    """Kind of work: data, train, generate, shift, borrow, judge or probe."""
    label: str
    """What to call it in progress lines and the report."""
    settings: dict[str, Any]
    """Everything that determines the result (paths of other stages excluded)."""
    run: Callable[[Path], dict[str, Any]]
    """Does the work into the given directory; returns a small summary for the manifest."""
    inputs: list[Stage] = field(default_factory=list)
    """Stages whose outputs it reads."""

    @property
    def key(self) -> str:
        """Short hash of name, settings and inputs."""
        identity = {
            "format": STAGE_FORMAT,
            "name": self.name,
            "settings": self.settings,
            "inputs": [stage.key for stage in self.inputs],
        }
        return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:12]

    @property
    def slug(self) -> str:
        """Directory and marker name."""
        return f"{self.name}-{self.key}"


LOG_FILE = "log.txt"
"""The experiment's progress lines, appended by every run into it."""


def disk_bytes(directory: Path) -> int:
    """Bytes of the files under ``directory`` (links not followed)."""
    return sum(path.lstat().st_size for path in directory.rglob("*") if path.is_file() and not path.is_symlink())


def human_bytes(count: float) -> str:
    """``count`` bytes as 1.2 MB, 3.4 GB (powers of 1000, as ``du --si`` and file managers print them)."""
    for unit in ("B", "kB", "MB", "GB"):
        if abs(count) < 1000:
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} TB"


class StageRunner:
    """Runs stages under one experiment directory, skipping finished ones.

    The stages are handed paths relative to the working directory (``root`` is made so): what they
    record in their outputs is then relative to where it is recorded (:mod:`tunescope.paths`), and
    the experiment can be moved. Progress lines go to ``stream`` and are appended to ``log.txt``.
    """

    def __init__(self, root: Path, total: int, stream: Any = None):
        self.root = Path(os.path.relpath(root.expanduser().absolute()))
        self.total = total
        self.count = 0
        self.stream = stream or sys.stderr
        self.ran: set[str] = set()
        """Slugs of the stages this runner ran (not found finished)."""

    def recorded(self, path: Path) -> str:
        """``path`` as the manifest records it: relative to the experiment directory."""
        return Path(os.path.relpath(path, self.root)).as_posix()

    def say(self, line: str) -> None:
        """Print a progress line and append it, timestamped, to the experiment's log."""
        print(line, file=self.stream, flush=True)
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / LOG_FILE).open("a", encoding="utf-8") as log:
            log.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")

    def directory(self, stage: Stage) -> Path:
        """Where ``stage`` writes its outputs."""
        return self.root / "stages" / stage.slug

    def finished(self, stage: Stage) -> dict[str, Any] | None:
        """The summary of a finished stage, or None."""
        marker = self.root / "done" / f"{stage.slug}.json"
        return json.loads(marker.read_text(encoding="utf-8")) if marker.is_file() else None

    def execute(self, stage: Stage) -> dict[str, Any]:
        """Run ``stage`` unless it is finished; return its summary.

        A stage that raises :class:`~tunescope.errors.IncompleteRun` kept what it finished but is not
        marked done: its summary says ``incomplete`` (why), and the next run runs it again.
        """
        self.count += 1
        prefix = f"[{self.count}/{self.total}] {stage.label}"
        if (summary := self.finished(stage)) is not None:
            self.say(f"{prefix}: finished earlier, skipped")
            return summary
        self.say(f"{prefix} ...")
        started = time.perf_counter()
        directory = self.directory(stage)
        directory.mkdir(parents=True, exist_ok=True)
        summary = {
            "stage": stage.name,
            "label": stage.label,
            "key": stage.key,
            "dir": str(directory.relative_to(self.root)),
        }
        try:
            summary |= stage.run(directory)
        except IncompleteRun as err:
            self.say(f"{prefix}: incomplete: {err}")
            return {**summary, "incomplete": str(err)}
        summary["seconds"] = round(time.perf_counter() - started, 1)
        summary["disk_bytes"] = disk_bytes(directory)
        write_json(self.root / "done" / f"{stage.slug}.json", summary)
        self.ran.add(stage.slug)
        self.say(f"{prefix}: done in {summary['seconds']:.0f} s, {human_bytes(summary['disk_bytes'])} on disk")
        return summary
