"""One process at a time per output: a lock beside every directory or file a stage writes.

Two runs writing into one directory both used to "succeed" and interleave their results. Each
stage now takes :func:`output_lock` on its output before it looks at it: a second process on the
same output stops at once with one line naming the output and the process that holds it.

The lock is ``filelock``'s (an ``fcntl.flock`` on Unix), taken without waiting. The kernel drops
a flock when its holder dies, however it dies, so a run killed with ``kill -9`` never blocks the
next one. flock also locks across machines on NFSv4 (and other network filesystems that support
it); on a filesystem without flock, filelock falls back to its own marker-file lock (filelock's
behaviour, not tested here).

The lock file is a hidden sibling of the output, ``.<name>.lock``, so that ``--overwrite``, which
empties or replaces the output, never removes a lock another process may hold; it is left in place
after the run, as filelock intends (removing it would let two processes lock two different files).
While the lock is held, ``.<name>.lock.json`` names the holder (process id, host, command, start
time) for the message the next process prints.

Under ``accelerate launch`` a run takes one lock, not one per process: the main process takes it
and tells the others whether it got it, so a refused launch stops on every process and says so
once. Locks are re-entrant within a process (the experiment runner holds its directory while its
stages lock their own outputs, which may nest).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tunescope.errors import UserError
from tunescope.files import write_json


class OutputBusy(UserError):
    """Another process is writing the same output (exit code 2: wait for it, or choose another output)."""


def lock_path(target: Path) -> Path:
    """The lock file of an output directory or file: ``.<name>.lock`` beside it."""
    target = Path(os.path.abspath(Path(target).expanduser()))
    return target.with_name(f".{target.name}.lock")


def is_lock_file(path: Path) -> bool:
    """Whether ``path`` is one of the lock files (or holder descriptions) this module leaves beside outputs."""
    return path.name.startswith(".") and path.name.endswith((".lock", ".lock.json"))


def holder_path(target: Path) -> Path:
    """Where the process holding ``target``'s lock describes itself."""
    lock = lock_path(target)
    return lock.with_name(lock.name + ".json")


def read_holder(target: Path) -> dict[str, Any] | None:
    """The holder's description, when one can be read (it may be mid-write, or left by a killed process)."""
    try:
        holder = json.loads(holder_path(target).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) else None


def describe_holder(holder: dict[str, Any] | None) -> str:
    """``pid 1234 on host, since 12:00:00: tunescope train ...``, or that it is unknown."""
    if not holder:
        return "another process"
    where = f"pid {holder.get('pid')}" + (f" on {holder['host']}" if holder.get("host") else "")
    since = f", since {holder['started']}" if holder.get("started") else ""
    command = f": {holder['command']}" if holder.get("command") else ""
    return where + since + command


def _holder_record() -> dict[str, Any]:
    program = Path(sys.argv[0]).name if sys.argv else ""
    program = "tunescope" if program in ("__main__.py", "tunescope", "") else program  # python -m tunescope
    command = " ".join([program, *sys.argv[1:]])
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": command[:300],
    }


@contextlib.contextmanager
def _hold(target: Path, flag: str) -> Iterator[None]:
    """Take ``target``'s lock in this process, without waiting.

    Raises:
        OutputBusy: when another process holds it.
        UserError: when the lock file cannot be created.
    """
    from filelock import FileLock, Timeout

    lock_file = lock_path(target)
    try:
        lock_file.parent.mkdir(parents=True, exist_ok=True)
        # One instance per path (is_singleton) shared by every thread of the process, so that a stage
        # nested in another stage on the same output takes it again instead of refusing itself.
        lock = FileLock(lock_file, timeout=0, is_singleton=True, thread_local=False)
        lock.acquire()
    except Timeout:
        raise OutputBusy(
            f"{flag} {target}: in use by {describe_holder(read_holder(target))}; "
            f"wait for it to finish or choose another {flag}"
        ) from None
    except OSError as err:
        raise UserError(f"{flag} {target}: cannot write there ({err.strerror or err}: {lock_file})") from None
    outermost = lock.lock_counter == 1
    try:
        if outermost:
            write_json(holder_path(target), _holder_record())
        yield
    finally:
        if outermost:
            holder_path(target).unlink(missing_ok=True)
        lock.release()


@contextlib.contextmanager
def output_lock(target: str | os.PathLike, *, flag: str = "--out", state: Any = None) -> Iterator[None]:
    """Hold the lock of the output ``target`` (a directory or a file) for the duration of the block.

    Args:
        target: The output the caller is about to read and write.
        flag: The option that named it, for the message.
        state: The ``accelerate`` process state when the caller has one. Without it, a launch of
            several processes (``WORLD_SIZE`` > 1) gets its state here; one process needs none.

    Raises:
        OutputBusy: another process holds the lock (on every process of a launch; only the main
            one prints it).
        UserError: the lock file cannot be created next to ``target``.
    """
    target = Path(target).expanduser()
    if state is None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from tunescope.distributed import process_state

        state = process_state()
    if state is None or state.num_processes == 1:
        with _hold(target, flag):
            yield
        return

    from tunescope.distributed import broadcast

    with contextlib.ExitStack() as stack:
        refusal: tuple[str, bool] | None = None
        if state.is_main_process:
            try:
                stack.enter_context(_hold(target, flag))
            except UserError as err:
                refusal = (str(err), isinstance(err, OutputBusy))
        refusal = broadcast(state, refusal)  # every process learns what the main one found
        if refusal is not None:
            message, busy = refusal
            error = OutputBusy(message) if busy else UserError(message)
            error.quiet = not state.is_main_process  # the main process prints it for the launch
            raise error
        yield
