"""Progress of a long step: a bar with an ETA on a terminal, a plain line now and then in a log.

tqdm draws the bar; redrawn in a file it leaves a line per refresh full of carriage returns, so
where stderr is not a terminal a plain line with the same numbers is written every
:data:`LINE_EVERY_S` seconds instead (the training loop does the same in
:mod:`tunescope.train.callbacks`).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

LINE_EVERY_S = 30.0
"""Seconds between plain progress lines when stderr is not a terminal."""


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def progress_line(what: str, done: int, total: int, unit: str, elapsed: float) -> str:
    """``shift: 1200/5000 tokens (24%), 310 tokens/s, about 0:12 left`` (rate and ETA once something is done)."""
    line = f"{what}: {done}/{total} {unit}" + (f" ({done / total:.0%})" if total else "")
    if done and elapsed > 0:
        rate = done / elapsed
        line += f", {rate:.3g} {unit}/s"
        if total > done:
            line += f", about {_duration((total - done) / rate)} left"
    return line


class _Lines:
    """Plain lines at most every ``every_s`` seconds, and one at the end when any was written."""

    def __init__(self, what: str, total: int, unit: str, stream: Any, every_s: float):
        self.what, self.total, self.unit, self.stream, self.every_s = what, total, unit, stream, every_s
        self.done = 0
        self.started = self.last = time.monotonic()
        self.wrote = False

    def update(self, count: int) -> None:
        self.done += count
        now = time.monotonic()
        if now - self.last >= self.every_s:
            self.last = now
            self._write(now)

    def _write(self, now: float) -> None:
        print(progress_line(self.what, self.done, self.total, self.unit, now - self.started), file=self.stream)
        self.stream.flush()
        self.wrote = True

    def close(self) -> None:
        if self.wrote and self.done:  # a step too short for one line stays silent
            self._write(time.monotonic())


@contextmanager
def progress(
    what: str, total: int, unit: str, *, enabled: bool = True, stream: Any = None, every_s: float | None = None
) -> Iterator[Callable[[int], None]]:
    """Show the progress of ``total`` units of work; yields the function to call with each amount done.

    Args:
        what: The step's name, first on the bar or line (``generate``, ``shift``, ...).
        total: Units to do.
        unit: Their name (``responses``, ``tokens``, ...).
        enabled: False shows nothing (another process of a distributed run shows it).
        stream: Where to write (default: stderr).
        every_s: Seconds between plain lines when ``stream`` is not a terminal (default: :data:`LINE_EVERY_S`).
    """
    stream = stream or sys.stderr
    every_s = LINE_EVERY_S if every_s is None else every_s
    if not enabled or total <= 0:
        yield lambda count: None
        return
    if stream.isatty():
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc=what, unit=f" {unit}", file=stream, dynamic_ncols=True, leave=False)
        try:
            yield bar.update
        finally:
            bar.close()
        return
    lines = _Lines(what, total, unit, stream, every_s)
    try:
        yield lines.update
    finally:
        lines.close()
