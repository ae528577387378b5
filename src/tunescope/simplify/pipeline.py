"""`simplify(config)`: rewrite every response of a dataset concisely, resumably, with provenance.

Progress lives in ``<out stem>.part.jsonl``: a header line with the settings that decide the
rewrites, then one line per finished record (its row and the new text of each response), appended
and flushed as records finish. A crash loses only the requests in flight; rerunning the same
command checks the header, skips every finished row and asks only for the rest. When every record
is done the dataset is written in one atomic step, followed by its provenance, and the part file
becomes ``<out stem>.rewrites.jsonl`` (each response before and after, and why).
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunescope import __version__
from tunescope.data.dataset import resolve_data_source
from tunescope.data.formats import detect_format, to_messages
from tunescope.data.readers import RawDataset, RawRecord, read_dataset
from tunescope.errors import IncompleteRun, UserError
from tunescope.files import atomic_path, write_json
from tunescope.llm import Backend, RequestFailed, backend_from_settings
from tunescope.locks import output_lock
from tunescope.simplify.config import RUNTIME_SETTINGS, SimplifyConfig
from tunescope.simplify.rules import (
    PROMPT_HASH,
    PROMPT_TEMPLATE,
    PROMPT_VERSION,
    SYSTEM_MESSAGE,
    clean_reply,
    keep_reason,
    response_slots,
    rewrite_messages,
    with_responses,
)

SCHEMA = "tunescope.simplify/1"
REWRITTEN = "rewritten"
"""The action of a response the rewriter's reply replaced; every other action keeps the original."""


@dataclass(frozen=True)
class SimplifyResult:
    """What a simplify run produced."""

    out: Path
    """The simplified dataset (JSONL)."""
    provenance: dict[str, Any]
    """Contents of the provenance file: source, rewriter, prompt, rules, counts and lengths."""

    @property
    def provenance_path(self) -> Path:
        """``<out stem>.provenance.json``."""
        return sibling(self.out, "provenance.json")

    @property
    def rewrites_path(self) -> Path:
        """``<out stem>.rewrites.jsonl``: each response before and after."""
        return sibling(self.out, "rewrites.jsonl")


def sibling(out: Path, suffix: str) -> Path:
    """``out`` with its ``.jsonl`` replaced by ``.<suffix>``."""
    return out.with_name(out.name.removesuffix(".jsonl") + "." + suffix)


def build_backend(config: SimplifyConfig) -> Backend:
    """The rewriter backend the settings name (plain-text replies)."""
    return backend_from_settings(
        config, config.resolved_rewriter_model, json_mode="none", device=config.device, model_flag="--rewriter-model"
    )


def _header(config: SimplifyConfig, fingerprint: str, data_format: str, backend: Backend) -> dict[str, Any]:
    """Everything that decides the rewrites: a resumed run must match it exactly."""
    settings = {key: value for key, value in config.model_dump(mode="json").items() if key not in RUNTIME_SETTINGS}
    return {
        "kind": "header",
        "schema": SCHEMA,
        "fingerprint": fingerprint,
        "format": data_format,
        "rewriter": backend.identity(),
        "prompt": {"version": PROMPT_VERSION, "sha256": PROMPT_HASH},
        "settings": settings,
    }


def read_part(path: Path, header: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """The finished records of an earlier, interrupted run (by row), after checking its settings.

    A last line cut short by a crash is dropped (and cut off the file) so that appending continues
    cleanly; a bad line anywhere else is an error.

    Raises:
        UserError: for a part file of other settings or a damaged one.
    """
    lines = path.read_bytes().split(b"\n")
    done: dict[int, dict[str, Any]] = {}
    good_bytes = 0
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            good_bytes += len(line) + 1
            continue
        try:
            record = json.loads(line)
        except ValueError:
            if number == len(lines):  # the unterminated last line of a crashed run
                with path.open("r+b") as handle:
                    handle.truncate(good_bytes)
                break
            raise UserError(f"{path} line {number}: not a JSON record; delete the file to start again") from None
        if number == 1:
            if record != header:
                changed = sorted(key for key in header if record.get(key) != header[key]) or ["header"]
                raise UserError(
                    f"{path}: holds rewrites made with other settings ({', '.join(changed)} differ); "
                    "pass --overwrite to start again, or rerun with the same settings"
                )
        else:
            done[int(record["row"])] = record
        good_bytes += len(line) + 1
    return done


class Plan:
    """The records of the dataset and, for each, which responses need a request."""

    def __init__(self, records: list[RawRecord], data_format: str, config: SimplifyConfig) -> None:
        self.records = records
        self.format = data_format
        self.slots = []
        self.keep: list[list[str | None]] = []
        for record in records:
            to_messages(record.fields, data_format, record.locator)  # one-line error for a malformed record
            slots = response_slots(record.fields, data_format)
            self.slots.append(slots)
            self.keep.append(
                [
                    keep_reason(
                        slot.query,
                        slot.text,
                        keep_code=config.keep_code,
                        keep_summaries=config.keep_summaries,
                        min_chars=config.min_chars,
                    )
                    for slot in slots
                ]  # fmt: skip
            )


def read_plan(config: SimplifyConfig) -> tuple[RawDataset, Plan]:
    """Read the dataset and decide, response by response, what to ask the rewriter.

    Raises:
        UserError: for a missing or empty dataset, or a malformed record.
    """
    raw = read_dataset(resolve_data_source(config.data), config.split)
    if not raw.records:
        raise UserError(f"{raw.source}: the dataset is empty")
    data_format = config.format
    if data_format == "auto":
        data_format = detect_format(raw.records[0].fields, raw.records[0].locator)
    return raw, Plan(raw.records, data_format, config)


def _rewrite_record(
    row: int, plan: Plan, backend: Backend, config: SimplifyConfig, stop: threading.Event
) -> dict[str, Any] | None:
    """Rewrite the responses of one record; its part-file line (None when the run is stopping)."""
    responses = []
    for slot, reason in zip(plan.slots[row], plan.keep[row], strict=True):
        if stop.is_set():
            return None
        original = slot.text
        entry: dict[str, Any] = {"original": original, "text": original, "action": f"kept_{reason}" if reason else ""}
        if reason is None:
            reply = backend.complete(rewrite_messages(slot.query, original))
            rewritten = clean_reply(reply.text)
            if reply.finish_reason == "length":
                entry["action"] = "kept_reply_cut"
            elif not rewritten:
                entry["action"] = "kept_empty_reply"
            elif len(rewritten) > len(original) and not config.keep_longer:
                entry["action"] = "kept_reply_longer"
            else:
                entry |= {"text": rewritten, "action": REWRITTEN}
            entry["reply_chars"] = len(rewritten)
        responses.append(entry)
    record = plan.records[row]
    return {"row": row, "id": record.fields.get("id", row), "responses": responses}


def _lengths(entries: list[dict[str, Any]], key: str) -> float | None:
    return round(sum(len(entry[key]) for entry in entries) / len(entries), 2) if entries else None


def rewrite_all(
    plan: Plan,
    todo: list[int],
    done: dict[int, dict[str, Any]],
    part: Path,
    header: dict[str, Any],
    backend: Backend,
    config: SimplifyConfig,
    progress: Callable[[int], None] | None,
) -> list[tuple[int, RequestFailed]]:
    """Rewrite the records ``todo`` in parallel, appending each finished one to ``part`` and ``done``.

    Returns:
        The record row of every request that failed for good, with the failure; the others are done.

    Raises:
        BackendError: when the backend refuses every request (requests in flight finish and are kept).
    """
    failures: list[tuple[int, RequestFailed]] = []
    stop = threading.Event()
    lock = threading.Lock()
    part.parent.mkdir(parents=True, exist_ok=True)
    workers = max(1, min(config.concurrency, backend.max_concurrency or config.concurrency))
    with part.open("a", encoding="utf-8") as handle:
        if not done and handle.tell() == 0:
            handle.write(json.dumps(header, ensure_ascii=False) + "\n")
            handle.flush()

        def work(row: int) -> None:
            try:
                line = _rewrite_record(row, plan, backend, config, stop)
            except RequestFailed as err:
                with lock:
                    failures.append((row, err))
                return
            except BaseException:
                stop.set()  # a crash or a refusing backend: the other workers start nothing new
                raise
            if line is None:
                return
            with lock:
                # Flushed per record: after a crash, every line in the file is a finished record.
                handle.write(json.dumps(line, ensure_ascii=False, default=str) + "\n")
                handle.flush()
                done[row] = line
            if progress:
                progress(1)

        executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="simplify")
        futures: list[Future] = []
        try:
            futures = [executor.submit(work, row) for row in todo]
            finished, _ = wait(futures, return_when=FIRST_EXCEPTION)
            for future in finished:
                if future.exception() is not None:
                    raise future.exception()  # type: ignore[misc]
        except BaseException:
            stop.set()  # requests in flight finish and are kept; nothing new starts
            executor.shutdown(wait=True, cancel_futures=True)
            raise
        finally:
            executor.shutdown(wait=True)
    return failures


def write_dataset(out: Path, raw: RawDataset, data_format: str, done: dict[int, dict[str, Any]]) -> None:
    """The simplified dataset: every record as it was, with its responses' new texts (one atomic write)."""
    with atomic_path(out) as tmp, tmp.open("w", encoding="utf-8") as writer:
        for row, record in enumerate(raw.records):
            texts = [entry["text"] for entry in done[row]["responses"]]
            writer.write(json.dumps(with_responses(record.fields, data_format, texts), ensure_ascii=False,
                                    default=_jsonable) + "\n")  # fmt: skip


def provenance(
    config: SimplifyConfig,
    raw: RawDataset,
    data_format: str,
    done: dict[int, dict[str, Any]],
    backend: Backend,
    seconds: float,
) -> dict[str, Any]:
    """The provenance file: source, rewriter, prompt, rules, what happened to the responses, lengths."""
    entries = [entry for row in range(len(raw.records)) for entry in done[row]["responses"]]
    rewritten = [entry for entry in entries if entry["action"] == REWRITTEN]
    return {
        "schema": SCHEMA,
        "tunescope_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "source": {"data": raw.source, "sha256": raw.fingerprint, "format": data_format, "split": config.split},
        "output": {"path": str(Path(config.out).expanduser()), "n_records": len(raw.records), "format": data_format},
        "rewriter": {**backend.describe(), "stand_in": bool(getattr(backend, "stand_in", False))},
        "prompt": {
            "version": PROMPT_VERSION,
            "sha256": PROMPT_HASH,
            "system": SYSTEM_MESSAGE,
            "template": PROMPT_TEMPLATE,
        },  # fmt: skip
        "rules": {
            "keep_code": config.keep_code,
            "keep_summaries": config.keep_summaries,
            "min_chars": config.min_chars,
            "keep_longer": config.keep_longer,
            "doc": "see tunescope.simplify.rules: fenced code or a code request, summary requests, short and "
            "empty responses are copied verbatim; cut, empty or (unless keep_longer) longer replies keep the original",
        },
        "responses": {
            "n": len(entries),
            "actions": dict(sorted(Counter(entry["action"] for entry in entries).items())),
            "mean_chars_before": _lengths(entries, "original"),
            "mean_chars_after": _lengths(entries, "text"),
            "rewritten_mean_chars_before": _lengths(rewritten, "original"),
            "rewritten_mean_chars_after": _lengths(rewritten, "text"),
        },
        "seconds_this_run": round(seconds, 3),
        "settings": config.model_dump(mode="json"),
    }


def simplify(
    config: SimplifyConfig,
    *,
    overwrite: bool = False,
    backend: Backend | None = None,
    log: Callable[[str], None] | None = None,
    progress: Callable[[int], None] | None = None,
) -> SimplifyResult:
    """Rewrite every response of ``config.data`` concisely into ``config.out``; resumable.

    The phases: :func:`read_plan`, then the progress of an interrupted run (:func:`read_part`),
    :func:`rewrite_all`, and once every record is done :func:`write_dataset`, its
    :func:`provenance`, and the part file kept as the log of rewrites.

    Args:
        config: Validated settings.
        overwrite: Discard an earlier run's output and unfinished progress.
        backend: The rewriter (default: built from the settings); any :class:`~tunescope.llm.Backend` works.
        log: Called with one line per stage.
        progress: Called with the number of records finished.

    Raises:
        UserError: for bad input, or progress made with other settings.
        IncompleteRun: when some responses could not be rewritten (the finished ones are kept;
            rerun to retry the rest).
        BackendError: when the backend refuses every request.
        OutputBusy: when another process is writing ``config.out``.
    """
    with output_lock(config.out):  # covers the dataset, its part file and its provenance
        return _simplify(config, overwrite=overwrite, backend=backend, log=log, progress=progress)


def _simplify(
    config: SimplifyConfig,
    *,
    overwrite: bool,
    backend: Backend | None,
    log: Callable[[str], None] | None,
    progress: Callable[[int], None] | None,
) -> SimplifyResult:
    say = log or (lambda message: None)
    out = Path(config.out).expanduser()
    part = sibling(out, "part.jsonl")
    raw, plan = read_plan(config)
    if overwrite:
        part.unlink(missing_ok=True)
    elif out.exists() and not part.exists():
        raise UserError(f"--out {out}: already exists; pass --overwrite to simplify again")
    backend = backend or build_backend(config)
    header = _header(config, raw.fingerprint, plan.format, backend)
    done = read_part(part, header) if part.is_file() else {}
    todo = [row for row in range(len(raw.records)) if row not in done]
    n_requests = sum(reason is None for row in todo for reason in plan.keep[row])
    say(f"{len(raw.records)} records ({plan.format}): {len(done)} done before, {len(todo)} to go, "
        f"{n_requests} responses to rewrite with {backend.describe().get('model')}")  # fmt: skip
    if progress and done:
        progress(len(done))

    started = time.perf_counter()
    try:
        failures = rewrite_all(plan, todo, done, part, header, backend, config, progress)
    finally:
        backend.close()
    seconds = time.perf_counter() - started
    if failures:
        row, first = min(failures, key=lambda failure: failure[0])
        reasons = Counter(failure.reason for _, failure in failures)
        raise IncompleteRun(
            f"{len(failures)} of {len(raw.records)} records could not be rewritten "
            f"({', '.join(f'{reason}: {count}' for reason, count in reasons.most_common())}; first: "
            f"{raw.records[row].locator}: {first}); {len(done)} finished ones are kept in {part}: "
            "run the same command again to retry the rest"
        )
    # Every record is done: write the dataset, then its provenance, then keep the log of rewrites.
    write_dataset(out, raw, plan.format, done)
    result = SimplifyResult(out, provenance(config, raw, plan.format, done, backend, seconds))
    write_json(result.provenance_path, result.provenance)
    part.replace(result.rewrites_path)
    return result


def _jsonable(value: Any) -> Any:
    """JSON for the values a parquet or Hugging Face record may hold (numpy scalars and arrays, dates)."""
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)
