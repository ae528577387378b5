"""Send judge requests in parallel, append each judgement as it arrives, resume after a crash.

A :class:`JudgeTask` is one request with a stable ``key`` (mode, model and item id, plus the
order for pairwise) and its ``request_key`` (the cache key: judge identity + exact messages).
:func:`run_tasks`:

1. reads the judgements log (``judgements.jsonl``) and skips every task whose latest record has
   the same request key and a reply: a rerun resumes, and a record for changed answers or a
   changed prompt is simply superseded;
2. answers what it can from the reply cache without sending anything;
3. sends the rest through a bounded thread pool (the requests spend their time waiting on the
   network, so threads are enough), each reply stored in the cache by the worker that got it;
4. appends one JSON line per judgement as it completes, flushed at once, so killing the process
   loses at most the requests in flight.

A request that fails for good is recorded with its error, the reason failures are grouped by
(``connection refused``, ``timeout``, ``HTTP 503``, ...) and whether the server refused it or no
reply came; the next run asks it again. When many fail in a row the endpoint is presumed down and
the run stops sending, instead of writing a failure for every remaining item: those tasks are left
without a record, and :func:`unanswered` counts them with the failures for the summary.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tunescope.errors import UserError
from tunescope.judge.parsing import REQUEST_FAILURE, ParsedReply, parse_reply
from tunescope.llm import Backend, Reply, ReplyCache, RequestFailed

RECORD_SCHEMA = "tunescope.judgement/1"


@dataclass(frozen=True)
class JudgeTask:
    """One judge request and what its record should say about it."""

    key: str
    """Stable name of the judgement, e.g. ``score/lora/item-7`` or ``pairwise/lora|full/item-7/ba``."""
    mode: str
    """``score``, ``safety`` or ``pairwise``."""
    aspects: tuple[str, ...]
    """Aspects the reply must cover."""
    messages: list[dict[str, str]]
    """The exact messages sent to the judge."""
    request_key: str
    """Cache key of the request (see :func:`tunescope.llm.request_key`)."""
    schema: dict[str, Any] | None = None
    """JSON schema of a valid reply, for backends that constrain output."""
    meta: dict[str, Any] = field(default_factory=dict)
    """Copied into the record: item id, model or pair, tags, answer length, ..."""


@dataclass
class RunStats:
    """What one call of :func:`run_tasks` did."""

    records: dict[str, dict[str, Any]]
    """The current record of every task, by task key."""
    resumed: int = 0
    """Tasks already judged in the log."""
    cache_hits: int = 0
    """Tasks answered from the cache."""
    sent: int = 0
    """Tasks sent to the backend."""
    request_errors: int = 0
    """Sent tasks that got no reply."""
    stopped: str | None = None
    """Why sending stopped before every task was sent (too many failures in a row), if it did."""


# ------------------------------------------------------------------------------------------
# The judgements log


def read_judgements(path: Path) -> dict[str, dict[str, Any]]:
    """The latest record per task key in a judgements log, repairing a torn last line.

    A process killed while writing can leave the last line incomplete; that line is dropped and
    the file truncated after the last complete line, so that new records start on a line of their
    own. Any other malformed line means the file was damaged or edited, and is an error.

    Raises:
        UserError: naming the line that is not a judgement record.
    """
    if not path.is_file():
        return {}
    data = path.read_bytes()
    complete_end = data.rfind(b"\n") + 1
    if complete_end < len(data):
        tail = data[complete_end:]
        try:
            json.loads(tail)
            with path.open("ab") as handle:  # a whole record that only lost its newline
                handle.write(b"\n")
            complete_end = len(data) + 1
            data += b"\n"
        except ValueError:
            os.truncate(path, complete_end)
            data = data[:complete_end]
    records: dict[str, dict[str, Any]] = {}
    for number, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as err:
            raise UserError(f"{path} line {number}: not a judgement record ({err})") from None
        if not isinstance(record, dict) or not isinstance(record.get("key"), str):
            raise UserError(f"{path} line {number}: not a judgement record (no 'key')")
        records[record["key"]] = record
    return records


def is_done(record: dict[str, Any] | None, task: JudgeTask) -> bool:
    """Whether ``record`` already judges ``task``: same request, and the judge replied."""
    return record is not None and record.get("request_sha256") == task.request_key and record.get("status") != "error"


NOT_SENT = "not sent (stopped after too many failures in a row)"
"""The reason of a task that has no record because the run stopped sending."""


def unanswered(tasks: list[JudgeTask], records: dict[str, dict[str, Any]]) -> dict[str, int]:
    """How many tasks got no reply, by reason: never sent, or failed without a reply after the retries.

    A request the server refused (a 4xx, an unsupported parameter) is a reply: it is counted as a
    failed judgement, not here, since asking again would change nothing.
    """
    reasons: dict[str, int] = {}
    for task in tasks:
        record = records.get(task.key)
        if record is None or record.get("request_sha256") != task.request_key:
            reason = NOT_SENT
        elif record.get("status") == "error" and not record.get("refused"):
            reason = record.get("error_reason") or "no reply"
        else:
            continue
        reasons[reason] = reasons.get(reason, 0) + 1
    return dict(sorted(reasons.items(), key=lambda item: -item[1]))


# ------------------------------------------------------------------------------------------
# Records


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def judgement_record(
    task: JudgeTask,
    judge: dict[str, Any],
    prompt: dict[str, Any],
    *,
    reply: Reply | None = None,
    error: RequestFailed | None = None,
    cached: bool = False,
) -> dict[str, Any]:
    """The log record of one judgement: what was asked, the raw reply, and what it parsed to."""
    record: dict[str, Any] = {
        "schema": RECORD_SCHEMA,
        "key": task.key,
        "mode": task.mode,
        **task.meta,
        "judge": judge,
        "prompt": prompt,
        "request_sha256": task.request_key,
    }
    if reply is None:
        parsed = ParsedReply(failures=dict.fromkeys(task.aspects, REQUEST_FAILURE))
        record |= {
            "status": "error",
            "error": str(error),
            "error_reason": error.reason if error else "no reply",
            "refused": bool(error and error.refused),
            "attempts": error.attempts if error else 0,
        }
    else:
        parsed = parse_reply(task.mode, reply.text, task.aspects)
        record["status"] = parsed.status
    values = {"choices": parsed.choices} if task.mode == "pairwise" else {"scores": parsed.scores}
    record |= {**values, "reasons": parsed.reasons, "failures": parsed.failures, "repairs": parsed.repairs}
    if reply is not None:
        record |= {
            "raw": reply.text,
            "finish_reason": reply.finish_reason,
            "usage": reply.usage,
            "cached": cached,
            "attempts": reply.attempts,
            "latency_s": round(reply.latency_s, 3),
            "json_mode": reply.json_mode,
        }
    record["time"] = _now()
    return record


# ------------------------------------------------------------------------------------------
# Running


def run_tasks(
    tasks: list[JudgeTask],
    backend: Backend,
    log_path: Path,
    *,
    judge: dict[str, Any],
    prompts: dict[str, dict[str, Any]],
    cache: ReplyCache | None = None,
    concurrency: int = 8,
    max_consecutive_errors: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> RunStats:
    """Judge every task not yet judged in ``log_path``, appending records as they complete.

    Args:
        tasks: The requests; keys must be unique.
        backend: Where replies come from.
        log_path: The judgements log (created if missing).
        judge: Public description of the judge, copied into every record.
        prompts: Template identity per mode, copied into every record.
        cache: Reply cache to read before sending and write after each reply.
        concurrency: Most requests in flight at once (the backend may allow fewer).
        max_consecutive_errors: Stop sending after this many requests in a row got no reply
            (default: twice the concurrency, at least 8); the rest are left for the next run.
        progress: Called with the number of tasks finished since the last call.

    Raises:
        BackendError: when the backend refuses every request (a refused key, an unknown model).
    """
    existing = read_judgements(log_path)
    stats = RunStats(records={})
    pending: list[JudgeTask] = []
    for task in tasks:
        if is_done(existing.get(task.key), task):
            stats.records[task.key] = existing[task.key]
            stats.resumed += 1
        else:
            pending.append(task)
    if progress and stats.resumed:
        progress(stats.resumed)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("a", encoding="utf-8") as log:

        def write(record: dict[str, Any]) -> None:
            log.write(json.dumps(record, ensure_ascii=False) + "\n")
            log.flush()  # a killed process keeps every line written so far
            stats.records[record["key"]] = record
            if progress:
                progress(1)

        to_send = []
        for task in pending:
            reply = cache.get(task.request_key) if cache else None
            if reply is None:
                to_send.append(task)
                continue
            stats.cache_hits += 1
            write(judgement_record(task, judge, prompts[task.mode], reply=reply, cached=True))
        if to_send:
            _send(to_send, backend, write, judge, prompts, cache, concurrency, max_consecutive_errors, stats)
    return stats


def _send(
    tasks: list[JudgeTask],
    backend: Backend,
    write: Callable[[dict[str, Any]], None],
    judge: dict[str, Any],
    prompts: dict[str, dict[str, Any]],
    cache: ReplyCache | None,
    concurrency: int,
    max_consecutive_errors: int | None,
    stats: RunStats,
) -> None:
    workers = max(1, min(concurrency, backend.max_concurrency or concurrency, len(tasks)))
    give_up_after = max_consecutive_errors or max(8, 2 * workers)
    model = str(judge.get("model", ""))

    def ask(task: JudgeTask) -> Reply:
        reply = backend.complete(task.messages, task.schema)
        if cache is not None:
            cache.put(task.request_key, model, reply)  # before the record: a kill now costs nothing
        return reply

    # Identical requests (e.g. two models that gave the same answer, compared in both orders) are
    # sent once; the others share the reply.
    same_request: dict[str, list[JudgeTask]] = {}
    for task in tasks:
        same_request.setdefault(task.request_key, []).append(task)
    executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="judge")
    consecutive_errors = 0
    try:
        # Tasks are submitted in order; the pool holds back all but `workers` of them, so at most
        # that many requests are ever in flight.
        futures: dict[Future[Reply], list[JudgeTask]] = {
            executor.submit(ask, group[0]): group for group in same_request.values()
        }
        for future in as_completed(futures):
            group = futures[future]
            stats.sent += 1
            try:
                reply = future.result()
            except RequestFailed as err:
                stats.request_errors += 1
                consecutive_errors = 0 if err.refused else consecutive_errors + 1
                for task in group:
                    write(judgement_record(task, judge, prompts[task.mode], error=err))
                if consecutive_errors >= give_up_after:
                    stats.stopped = f"{consecutive_errors} requests in a row got no reply (last: {err})"
                    break
                continue
            consecutive_errors = 0
            for index, task in enumerate(group):
                write(judgement_record(task, judge, prompts[task.mode], reply=reply, cached=index > 0))
    finally:
        # On an error or Ctrl-C: drop what has not started; requests in flight finish on their own.
        executor.shutdown(wait=False, cancel_futures=True)
