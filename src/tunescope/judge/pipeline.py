"""`judge(config)`: from answer files to judgements, a summary and plots in one directory.

The steps, each a plain function a notebook can call on its own:

1. :func:`~tunescope.judge.responses.read_response_sets` reads the answers;
2. :func:`build_backend` makes the judge; :func:`build_tasks` the requests;
3. :func:`~tunescope.judge.requests.run_tasks` sends them (parallel, cached, resumable);
4. :func:`summarize` turns the records into ``judge_summary.json``; :func:`draw_plots` draws.

Everything is checked before the output directory is touched, so bad input leaves nothing behind.
A run in which some requests got no reply (the endpoint down, timeouts, overload) keeps what it
judged, writes the summary with ``"complete": false`` and the failures by reason, and draws no
plot; rerunning the same command asks only what is missing (see :func:`incomplete_message`).
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunescope.config import config_to_dict, upgraded_settings
from tunescope.distributed import gather_counts, model_device, part_file, process_state, require_parts_visible, shard
from tunescope.errors import UserError
from tunescope.files import write_json, write_jsonl
from tunescope.generate.store import ResponseRecord
from tunescope.judge import aggregate, plots
from tunescope.judge.config import RUNTIME_SETTINGS, JudgeConfig
from tunescope.judge.justeval import export_justeval, import_justeval
from tunescope.judge.prompts import TEMPLATES, pairwise_messages, reply_schema, score_messages
from tunescope.judge.requests import JudgeTask, RunStats, is_done, read_judgements, run_tasks, unanswered
from tunescope.judge.responses import ResponseSet, answer_tokens, answer_words, read_response_sets
from tunescope.llm import Backend, JsonModeMemory, ReplyCache, backend_from_settings, request_key
from tunescope.locks import output_lock
from tunescope.progress import progress as show_progress
from tunescope.rundir import check_run_dir, config_differences, saved_config, start_run_dir

JUDGEMENTS_FILE = "judgements.jsonl"
SUMMARY_FILE = "judge_summary.json"
JUSTEVAL_EXPORT_FILE = "judgements.justeval.json"
PARTS_DIR = "judgements.parts"
PLOT_FILES = frozenset({"radar.png", "bars.png", "pairwise.png"})
SUMMARY_SCHEMA = "tunescope.judge_summary/1"


@dataclass
class JudgeResult:
    """What a judge run produced."""

    out: Path
    """The output directory."""
    judgements: Path
    """The per-request log, one JSON record per line."""
    summary_path: Path
    """``judge_summary.json``."""
    summary: dict[str, Any]
    """Its contents."""
    plots: list[Path] = field(default_factory=list)
    """The PNG files drawn."""
    stats: RunStats | None = None
    """What this run sent, resumed and read from the cache (None for an import)."""

    @property
    def complete(self) -> bool:
        """Whether every request got a reply (False: rerun the same command to complete the run)."""
        return bool(self.summary.get("complete", True))


def incomplete_message(summary: dict[str, Any], out: Path) -> str | None:
    """One line on a judge run whose requests did not all get a reply: how many, why, and what to do; else None."""
    missing = summary.get("unanswered") or {}
    if summary.get("complete", True) or not missing.get("count"):
        return None
    reasons = ", ".join(f"{reason}: {count}" for reason, count in missing["by_reason"].items())
    return (
        f"{missing['count']} of {missing['of']} judge requests got no reply ({reasons}); the judgements so far are "
        f"kept in {out}, and rerunning the same command asks only for the missing ones"
    )


def stand_in_note(judge: dict[str, Any]) -> str:
    """The label every stand-in judge's summary carries."""
    size = f", {judge['parameters'] / 1e6:.0f}M parameters" if judge.get("parameters") else ""
    return (
        f"Scores come from a small stand-in judge ({judge['model']}{size}). They show that the pipeline works; "
        "they do not measure answer quality. Use a strong judge for real comparisons."
    )


# ------------------------------------------------------------------------------------------
# Building blocks


def build_backend(
    config: JudgeConfig, *, device: str | None = None, json_mode_memory: JsonModeMemory | None = None
) -> Backend:
    """The judge backend the settings name.

    Args:
        config: The judge's settings.
        device: Where a local judge goes unless the settings say.
        json_mode_memory: Where ``--json-mode auto`` remembers the mode a server accepts (the reply cache).
    """
    return backend_from_settings(
        config,
        config.resolved_judge_model,
        json_mode=config.json_mode,
        device=config.device or device,
        model_flag="--judge-model",
        json_mode_memory=json_mode_memory,
    )


def judge_description(backend: Backend, stand_in: bool | None) -> dict[str, Any]:
    """The backend's public description plus the stand-in label (automatic unless forced)."""
    automatic = bool(getattr(backend, "stand_in", False))
    return {**backend.describe(), "stand_in": automatic if stand_in is None else stand_in}


def _schema(mode: str, backend: Backend) -> dict[str, Any] | None:
    # Only passed (and so only part of the cache key) when the backend uses it.
    return reply_schema(mode) if backend.uses_schema else None  # type: ignore[arg-type]


def _answer_meta(response: ResponseRecord) -> dict[str, Any]:
    return {
        "tags": list(response.tags),
        "response_words": answer_words(response),
        "response_tokens": answer_tokens(response),
    }


def build_tasks(mode: str, response_sets: list[ResponseSet], backend: Backend) -> list[JudgeTask]:
    """One request per answer (score, safety), or two per shared item, one per order (pairwise).

    Raises:
        UserError: for pairwise files that share no item, or give one item different prompts.
    """
    identity, schema, aspects = backend.identity(), _schema(mode, backend), TEMPLATES[mode].aspects

    def task(key: str, messages: list[dict[str, str]], meta: dict[str, Any]) -> JudgeTask:
        return JudgeTask(key, mode, aspects, messages, request_key(identity, messages, schema), schema, meta)

    if mode != "pairwise":
        return [
            task(
                f"{mode}/{response_set.label}/{response.id}",
                score_messages(mode, response.messages, response.output),  # type: ignore[arg-type]
                {"item_id": response.id, "model": response_set.label, **_answer_meta(response)},
            )
            for response_set in response_sets
            for response in response_set.responses
        ]
    first, second = response_sets
    others = second.by_id()
    shared = [response for response in first.responses if response.id in others]
    if not shared:
        raise UserError(f"--responses: {first.path} and {second.path} share no item id")
    unmatched = len(first.responses) + len(second.responses) - 2 * len(shared)
    if unmatched:
        warnings.warn(f"{unmatched} answers are in only one of the two responses files: not compared", stacklevel=2)
    pair = f"{first.label}|{second.label}"
    tasks = []
    for answer_first in shared:
        answer_second = others[answer_first.id]
        if answer_first.messages != answer_second.messages:
            raise UserError(
                f"item {answer_first.id!r} has different prompts in {answer_first.locator} and {answer_second.locator}"
            )
        words = {first.label: answer_words(answer_first), second.label: answer_words(answer_second)}
        orders = {"ab": (answer_first, answer_second), "ba": (answer_second, answer_first)}
        for order, (shown_a, shown_b) in orders.items():
            labels = (first.label, second.label) if order == "ab" else (second.label, first.label)
            meta = {
                "item_id": answer_first.id,
                "pair": {"first": first.label, "second": second.label},
                "order": order,
                "shown_as_a": labels[0],
                "shown_as_b": labels[1],
                "tags": list(answer_first.tags),
                "response_words": words,
            }
            messages = pairwise_messages(answer_first.messages, shown_a.output, shown_b.output)  # type: ignore[arg-type]
            tasks.append(task(f"pairwise/{pair}/{answer_first.id}/{order}", messages, meta))
    return tasks


def summarize(
    mode: str,
    records: list[dict[str, Any]],
    judge: dict[str, Any],
    *,
    bootstrap_samples: int = 2000,
    seed: int = 0,
    justeval_na_as_five: bool = False,
) -> dict[str, Any]:
    """The contents of ``judge_summary.json`` for one mode's records."""
    template = TEMPLATES[mode]
    aspects = template.aspects
    summary: dict[str, Any] = {
        "schema": SUMMARY_SCHEMA,
        "mode": mode,
        "judge": judge,
        "stand_in_judge": bool(judge.get("stand_in")),
        "note": stand_in_note(judge) if judge.get("stand_in") else None,
        "prompt": records[0]["prompt"] if records else template.describe(),
        "aspects": list(aspects),
        "bootstrap": {
            "samples": bootstrap_samples,
            "seed": seed,
            "confidence": aggregate.CONFIDENCE,
            "unit": "items",
            "method": "BCa (percentile where BCa is undefined), tunescope.stats.bootstrap_mean",
        },  # fmt: skip
        "calls": aggregate.call_counts(records),
    }
    if mode == "pairwise":
        first, second = records[0]["pair"]["first"], records[0]["pair"]["second"]
        summary["pairs"] = {
            f"{first} vs {second}": aggregate.pairwise_summary(
                records, aspects, first, second, samples=bootstrap_samples, seed=seed
            )
        }
        return summary
    models: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        models.setdefault(record["model"], []).append(record)
    summary["models"] = {
        label: aggregate.score_summary(
            model_records, aspects, samples=bootstrap_samples, seed=seed, justeval_na_as_five=justeval_na_as_five
        )
        for label, model_records in models.items()
    }
    return summary


def draw_plots(summary: dict[str, Any], out: Path) -> list[Path]:
    """The radar and grouped bars (score, safety) or the win/tie/loss bars (pairwise)."""
    aspects, stand_in = summary["aspects"], summary["stand_in_judge"]
    if summary["mode"] == "pairwise":
        return [
            plots.plot_pairwise(pair, aspects, out / "pairwise.png", stand_in=stand_in)
            for pair in summary["pairs"].values()
        ]
    drawn = [plots.plot_grouped_bars(summary["models"], aspects, out / "bars.png", stand_in=stand_in)]
    if len(aspects) >= 3:  # a radar needs at least three axes; safety has one
        drawn.insert(0, plots.plot_radar(summary["models"], aspects, out / "radar.png", stand_in=stand_in))
    return drawn


# ------------------------------------------------------------------------------------------
# The whole run


def _claim_output(config: JudgeConfig, overwrite: bool, state: Any = None) -> Path:
    """Check ``config.out`` may receive this run; start it unless it resumes one with the same settings.

    Every process checks; only the main one writes, after all have checked.
    """
    state = state or process_state()
    out = Path(config.out).expanduser()
    settings = config_to_dict(config)
    previous = saved_config(out) if out.is_dir() else None
    if previous is not None:
        previous = upgraded_settings(JudgeConfig, previous)
    resume = previous is not None and not overwrite
    if resume and (changed := config_differences(previous, settings, RUNTIME_SETTINGS)):
        raise UserError(
            f"--out {out}: holds a run with other settings ({', '.join(changed[:3])}); "
            "pass --overwrite to replace it, or choose another --out"
        )
    check_run_dir(
        out, settings, resume=resume, overwrite=overwrite, may_change_on_resume=RUNTIME_SETTINGS,
        settings_class=JudgeConfig,
    )  # fmt: skip
    state.wait_for_everyone()
    if not resume and state.is_main_process:
        start_run_dir(out, settings)
    state.wait_for_everyone()
    return out


# ------------------------------------------------------------------------------------------
# Several processes: each judges a share into a part log, which the main process joins


def _join_judgement_parts(log_path: Path, parts: Path, tasks: list[JudgeTask]) -> None:
    """Append the part logs' records to the judgements log, in task order, then remove them.

    Appending again after a crash is harmless: the log's latest record per task is the one read.
    """
    if not parts.is_dir():
        return
    found: dict[str, dict[str, Any]] = {}
    for part in sorted(parts.glob("rank-*.jsonl")):
        found |= read_judgements(part)
    rank = {task.key: index for index, task in enumerate(tasks)}
    ordered = sorted(found.values(), key=lambda record: rank.get(record["key"], len(rank)))
    if ordered:
        read_judgements(log_path)  # cuts a torn last line, so that the first record starts a line
        with log_path.open("a", encoding="utf-8") as log:
            log.write("".join(json.dumps(record, ensure_ascii=False) + "\n" for record in ordered))
            log.flush()
            os.fsync(log.fileno())
    shutil.rmtree(parts)


def _run_sharded(
    state: Any, tasks: list[JudgeTask], out: Path, run: Callable[[list[JudgeTask], Path], RunStats]
) -> tuple[RunStats, list[dict[str, Any]]] | None:
    """Judge the tasks still open, each process a contiguous share; the main process gets stats and records."""
    log_path, parts = out / JUDGEMENTS_FILE, out / PARTS_DIR
    if state.is_main_process:
        _join_judgement_parts(log_path, parts, tasks)  # what a crashed run left
    state.wait_for_everyone()
    existing = read_judgements(log_path)
    state.wait_for_everyone()  # everyone has read the log before anything is added
    pending = [task for task in tasks if not is_done(existing.get(task.key), task)]
    parts.mkdir(exist_ok=True)
    stats = run(shard(state, pending), part_file(parts, state))
    counts = gather_counts(
        state, {"cache_hits": stats.cache_hits, "sent": stats.sent, "request_errors": stats.request_errors}
    )
    if not state.is_main_process:
        return None
    require_parts_visible(parts, state, len(pending))
    _join_judgement_parts(log_path, parts, tasks)
    latest = read_judgements(log_path)
    # A run that stopped sending left some tasks without a record of this request.
    current = {
        task.key: latest[task.key]
        for task in tasks
        if task.key in latest and latest[task.key].get("request_sha256") == task.request_key
    }
    records = list(current.values())
    total = RunStats(records=current, resumed=len(tasks) - len(pending))
    total.cache_hits, total.sent, total.request_errors = counts["cache_hits"], counts["sent"], counts["request_errors"]
    return total, records


def _written_result(out: Path) -> JudgeResult:
    """The result of a run another process finished, read back from its files."""
    summary = json.loads((out / SUMMARY_FILE).read_text(encoding="utf-8"))
    plots = [out / name for name in summary.get("files", {}).get("plots", [])]
    return JudgeResult(out, out / JUDGEMENTS_FILE, out / SUMMARY_FILE, summary, plots)


def judge(config: JudgeConfig, *, overwrite: bool = False) -> JudgeResult:
    """Judge the answers the settings name (or import a just-eval file) and write everything to ``out``.

    Rerunning into the same directory resumes: finished judgements are kept, cached replies are
    reused, and only what is missing is sent. Under ``accelerate launch`` each process judges a
    contiguous share of what is missing (a local judge on its own GPU; an endpoint gets each
    process's ``concurrency`` requests at once) into a part log, and the main process appends the
    parts to ``judgements.jsonl`` in task order and writes the summary; a rerun after a crash
    skips whatever any process finished.

    Raises:
        UserError: for bad input or an output directory that holds something else.
        BackendError: when the judge refuses every request.
        OutputBusy: when another process is writing into ``config.out``.
    """
    state = process_state()
    with output_lock(config.out, state=state):  # covers judgements.jsonl and its part logs
        return _judge(config, state, overwrite=overwrite)


def _judge(config: JudgeConfig, state: Any, *, overwrite: bool) -> JudgeResult:
    if config.import_justeval:
        records = import_justeval(config.import_justeval)
        out = _claim_output(config, overwrite, state)
        if not state.is_main_process:
            state.wait_for_everyone()
            return _written_result(out)
        write_jsonl(out / JUDGEMENTS_FILE, records)
        judge_info = {**records[0]["judge"], "stand_in": bool(config.stand_in)}
        result = _finish(config, out, records, judge_info, responses={}, stats=None)
        state.wait_for_everyone()
        return result

    response_sets = read_response_sets(config.responses, config.labels)
    if config.limit:
        response_sets = [
            ResponseSet(s.label, s.path, s.fingerprint, s.responses[: config.limit]) for s in response_sets
        ]
    cache = ReplyCache(config.cache_dir) if config.cache else None
    try:
        backend = build_backend(config, device=model_device(state), json_mode_memory=cache)
        judge_info = judge_description(backend, config.stand_in)
        if judge_info["stand_in"] and state.is_main_process:
            warnings.warn(stand_in_note(judge_info), stacklevel=2)
        tasks = build_tasks(config.mode, response_sets, backend)
        out = _claim_output(config, overwrite, state)
    except BaseException:
        if cache is not None:
            cache.close()
        raise
    prompts = {config.mode: TEMPLATES[config.mode].describe()}

    def run(some: list[JudgeTask], log_path: Path, shown: Callable[[int], None]) -> RunStats:
        return run_tasks(
            some,
            backend,
            log_path,
            judge=judge_info,
            prompts=prompts,
            cache=cache,
            concurrency=config.concurrency,
            progress=shown,
        )

    try:
        with show_progress("judge", len(tasks), "judgements", enabled=state.is_main_process) as shown:
            if state.num_processes == 1 and not (out / PARTS_DIR).is_dir():
                stats = run(tasks, out / JUDGEMENTS_FILE, shown)
                records = [stats.records[task.key] for task in tasks if task.key in stats.records]
            else:
                joined = _run_sharded(state, tasks, out, functools.partial(run, shown=shown))
                stats, records = joined if joined is not None else (None, [])
    finally:
        backend.close()
        if cache is not None:
            cache.close()
    if not state.is_main_process:
        state.wait_for_everyone()
        return _written_result(out)
    responses = {(s.label, r.id): r for s in response_sets for r in s.responses}
    missing = unanswered(tasks, stats.records if stats else {})
    result = _finish(
        config, out, records, judge_info, responses=responses, stats=stats,
        missing={"count": sum(missing.values()), "of": len(tasks), "by_reason": missing},
    )  # fmt: skip
    state.wait_for_everyone()
    return result


def _finish(
    config: JudgeConfig,
    out: Path,
    records: list[dict[str, Any]],
    judge_info: dict[str, Any],
    *,
    responses: dict[tuple[str, str], ResponseRecord],
    stats: RunStats | None,
    missing: dict[str, Any] | None = None,
) -> JudgeResult:
    mode = records[0]["mode"] if records else config.mode
    summary = summarize(
        mode,
        records,
        judge_info,
        bootstrap_samples=config.bootstrap_samples,
        seed=config.seed,
        justeval_na_as_five=config.justeval_na_as_five,
    )
    if stats is not None:
        summary["this_run"] = {
            "resumed": stats.resumed,
            "from_cache": stats.cache_hits,
            "sent": stats.sent,
            "request_errors": stats.request_errors,
        }
    summary["unanswered"] = missing or {"count": 0, "of": len(records), "by_reason": {}}
    summary["complete"] = summary["unanswered"]["count"] == 0
    # No figure of a partial run: it would be read as the result. The rerun that completes it draws them.
    drawn = draw_plots(summary, out) if config.plots and records and summary["complete"] else []
    for stale in PLOT_FILES - {path.name for path in drawn}:
        (out / stale).unlink(missing_ok=True)
    summary["files"] = {"judgements": JUDGEMENTS_FILE, "plots": [path.name for path in drawn]}
    if config.export_justeval:
        if mode == "pairwise" or not responses:
            warnings.warn("--export-justeval: just-eval has no format for these records: not exported", stacklevel=2)
        else:
            write_json(out / JUSTEVAL_EXPORT_FILE, export_justeval(records, responses))
            summary["files"]["justeval"] = JUSTEVAL_EXPORT_FILE
    summary_path = out / SUMMARY_FILE
    write_json(summary_path, summary)
    return JudgeResult(out, out / JUDGEMENTS_FILE, summary_path, summary, drawn, stats)
