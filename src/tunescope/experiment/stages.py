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
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunescope.errors import IncompleteRun
from tunescope.files import write_json

STAGE_FORMAT = 2
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


class StageRunner:
    """Runs stages under one experiment directory, skipping finished ones."""

    def __init__(self, root: Path, total: int, stream: Any = None):
        self.root = root
        self.total = total
        self.count = 0
        self.stream = stream or sys.stderr
        self.ran: set[str] = set()
        """Slugs of the stages this runner ran (not found finished)."""

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
            print(f"{prefix}: finished earlier, skipped", file=self.stream, flush=True)
            return summary
        print(f"{prefix} ...", file=self.stream, flush=True)
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
            print(f"{prefix}: incomplete: {err}", file=self.stream, flush=True)
            return {**summary, "incomplete": str(err)}
        summary["seconds"] = round(time.perf_counter() - started, 1)
        write_json(self.root / "done" / f"{stage.slug}.json", summary)
        self.ran.add(stage.slug)
        print(f"{prefix}: done in {summary['seconds']:.0f} s", file=self.stream, flush=True)
        return summary
