"""Several processes, one result: what tunescope's commands share when run under ``accelerate launch``.

Every command runs unchanged as one process or as many (``accelerate launch -m tunescope ...``).
Training hands the processes to the Trainer, which runs DDP, FSDP or DeepSpeed as the launcher's
config says. The analysis commands (generate, shift, judge) are data parallel, after lm-eval: each
process holds a whole model, takes a contiguous share of the work (``split_between_processes``)
and writes what it finishes to a part file of its own, so that a rerun skips whatever any process
finished; the main process then joins the parts, in the order one process would have written
them, into the usual outputs. The part files live beside the output, so on several machines the
output must be on a filesystem they all see (as it must for training checkpoints).

On a machine without GPUs, ``torchrun`` (or ``accelerate launch --multi_gpu``) starts the processes
but accelerate connects them only when told they are CPU processes: set ``ACCELERATE_USE_CPU=1``.
(``accelerate launch --cpu --num_processes N`` starts a single process unless given an MPI hostfile;
see docs/scaling.md.)
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from tunescope.errors import UserError

T = TypeVar("T")

_joined_a_group = False
"""Whether this process has joined a process group of several (see :func:`exit_process`)."""


def process_state() -> Any:
    """The ``accelerate.PartialState`` of this process (one process unless launched as several).

    Raises:
        UserError: when the launcher started several processes that did not join one group (on a
            machine without GPUs, unless ``ACCELERATE_USE_CPU=1``), which would otherwise each run
            the whole job into the same files.
    """
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    state = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched > 1 and state.num_processes == 1:
        raise UserError(
            f"started as {launched} processes, but they did not join one process group; on a machine without "
            "GPUs set ACCELERATE_USE_CPU=1 so that accelerate connects them over gloo"
        )
    if state.num_processes > 1:
        global _joined_a_group
        _joined_a_group = True
    return state


def is_main_process() -> bool:
    """Whether this process prints results and writes the final outputs (always, when it is alone)."""
    return bool(process_state().is_main_process)


def end_processes() -> None:
    """At the end of a command, leave the process group together (torch warns when a process exits in one)."""
    state = process_state()
    if state.num_processes > 1:
        state.wait_for_everyone()
        state.destroy_process_group()


def exit_process(code: int) -> NoReturn:
    """Leave the process with ``code``; one that joined a process group skips the interpreter's finalization.

    PyTorch's gloo backend frees a collective's tensors on its own worker thread, which can still be
    doing so after :func:`end_processes` returns. Freeing a tensor that Python once held needs the GIL;
    while the interpreter finalizes, a thread that asks for it is ended, and the C++ runtime aborts
    the process (SIGABRT, exit 134) after all its work was done: about one launch in eight on the
    project's CPU machines with torch 2.13. Every output is written and closed by then, so such a
    process flushes its standard streams and exits at once.
    """
    if _joined_a_group:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def model_device(state: Any) -> str | None:
    """Where this process should put its model: its own accelerator when there are several, else the default."""
    return str(state.device) if state.num_processes > 1 else None


def shard(state: Any, items: Sequence[T]) -> list[T]:
    """This process's contiguous share of ``items`` (the first processes take one more when they do not divide)."""
    with state.split_between_processes(list(items)) as mine:
        return list(mine)


def gather_counts(state: Any, counts: dict[str, int]) -> dict[str, int]:
    """The sum over all processes of each count (every process must call this)."""
    from accelerate.utils import gather_object

    totals: dict[str, int] = dict.fromkeys(counts, 0)
    for part in gather_object([counts]):
        for key, value in part.items():
            totals[key] += value
    return totals


def broadcast(state: Any, value: T) -> T:
    """The main process's ``value``, on every process (every process must call this)."""
    if state.num_processes == 1:
        return value
    from accelerate.utils import broadcast_object_list

    return broadcast_object_list([value])[0]


def part_file(directory: Path, state: Any, suffix: str = ".jsonl") -> Path:
    """This process's part file in ``directory`` (``rank-00001.jsonl``)."""
    return directory / f"rank-{state.process_index:05d}{suffix}"


def busy_part_files(directory: Path, state: Any, n_items: int, suffix: str = ".jsonl") -> list[Path]:
    """The part files of the processes that :func:`shard` gave at least one of ``n_items`` items."""
    return [directory / f"rank-{rank:05d}{suffix}" for rank in range(min(n_items, state.num_processes))]


def require_parts_visible(directory: Path, state: Any, n_items: int, suffix: str = ".jsonl") -> None:
    """Refuse to join the parts of ``n_items`` items when a process's part file is not visible here.

    Raises:
        UserError: as :func:`require_visible`, for the :func:`busy_part_files`.
    """
    require_visible(busy_part_files(directory, state, n_items, suffix))


def require_visible(paths: Sequence[Path]) -> None:
    """Refuse to join parts that the main process cannot see.

    Raises:
        UserError: naming the first missing part; on several machines it means the output is not
            on a shared filesystem.
    """
    if missing := [path for path in paths if not path.exists()]:
        raise UserError(
            f"{missing[0]}: written by another process but not visible here; with several machines the "
            "output must be on a filesystem that all of them share"
        )
