"""`tunescope shift` end to end: responses → both models → tokens.parquet, summary.json, viewer.html.

The output directory is built under a temporary name and renamed when complete, so a crash
leaves either no directory or a finished one. Memory is bounded per batch: rows are streamed to
tokens.parquet and examples.jsonl as each batch is scored, and the viewer is rendered from those
files one response at a time.
"""

from __future__ import annotations

import json
import shutil
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tunescope.config import config_to_dict
from tunescope.distributed import model_device, process_state, require_visible, shard
from tunescope.errors import UserError
from tunescope.files import atomic_path, sha256_file, write_json, write_jsonl, write_yaml
from tunescope.generate.store import ResponseRecord
from tunescope.locks import output_lock
from tunescope.rundir import CONFIG_FILE, DONE_FILE, check_run_dir
from tunescope.shift.columns import viewer_columns
from tunescope.shift.config import ShiftConfig, ShiftReportSettings
from tunescope.shift.initiation import initiation_mask, sentence_of_tokens
from tunescope.shift.inputs import ShiftInput, build_inputs, read_responses
from tunescope.shift.output import EXAMPLES_FILE, SUMMARY_FILE, TOKENS_FILE, VIEWER_FILE
from tunescope.shift.pair import ModelPair, load_pair
from tunescope.shift.scoring import ScoringSettings, score_batch
from tunescope.shift.summary import BOOTSTRAP_METHOD, TR_CAP, summarize_table
from tunescope.shift.table import TokenTableWriter, response_table
from tunescope.shift.text import TokenTexts, token_spans
from tunescope.shift.viewer import ExampleView, example_view, render_viewer

PARTS_KEY_FILE = "parts.json"


@dataclass(frozen=True)
class ShiftResult:
    """Where a finished shift run's outputs are, and its summary."""

    out: Path
    """The output directory."""
    tokens: Path
    """tokens.parquet: one row per response token."""
    examples: Path
    """examples.jsonl: per response, the exact token ids and text each model read."""
    viewer: Path
    """viewer.html."""
    summary: dict[str, Any]
    """Contents of summary.json."""


def scoring_settings(config: ShiftConfig) -> ScoringSettings:
    """The per-position part of the settings."""
    return ScoringSettings(
        mode=config.mode,
        top_k=config.top_k,
        unshifted_max_rank=config.unshifted_max_rank,
        marginal_max_rank=config.marginal_max_rank,
        chunk_tokens=config.chunk_tokens,
        aligntds=config.aligntds_settings(),
    )


def definitions(config: ShiftConfig) -> dict[str, str]:
    """What the summary's numbers mean under ``config``, written into summary.json."""
    u, m = config.unshifted_max_rank, config.marginal_max_rank
    rank = "1-indexed exact base rank of the response token" if config.mode == "exact" else "TR + 1"
    out = {
        "classes": f"by {rank}: unshifted <= {u} < marginal <= {m} < shifted",
        "averaging": "top-level and 'micro' values pool all tokens (the paper's); 'macro' averages per-response means",
        "ci95": f"bootstrap over responses, {config.bootstrap_samples} resamples, seed {config.seed}, "
        f"{BOOTSTRAP_METHOD} intervals (percentile where BCa is undefined)",
        "by_position": "position 1 is the first response token",
        "initiation": f"first {config.initiation_fraction:g} of each sentence's tokens (at least one) vs the rest",
    }
    if config.mode == "exact":
        out |= {
            "kl": "KL(base‖tuned) over the full vocabulary, nats; kl_reverse_mean is KL(tuned‖base)",
            "base_rank": "1-indexed, exact, uncapped: 1 + number of base logits strictly larger (ties rank together)",
            "base_prob": "full-vocabulary base probability of the response token",
            "tr_mean": f"min(base_rank - 1, {TR_CAP}): AlignTDS's 0-indexed, capped axis (the paper's Fig. 1 'Base "
            "Rank'), for setting beside published numbers; tr_median is its median",
        }
    else:
        k = config.aligntds_settings()
        out |= {
            "kl": f"AlignTDS KL@{k.kl_k}: top-{k.top_k} lists renormalised, summed over shared candidates "
            f"(matched by {k.match}); truncated and may be negative",
            "base_rank": f"AlignTDS TR: 0-indexed rank of the tuned top-1 in the base top-{k.top_k}, "
            f"{k.rank_cap} when absent",
            "base_prob": "AlignTDS TP: renormalised base weight of the tuned top-1, 0 when absent",
            "tr_mean": "the same as base_rank_mean: AlignTDS's TR is already 0-indexed and capped",
        }
    return out


def _example_record(x: ShiftInput, response_text: str, pair: ModelPair) -> dict[str, Any]:
    options = {"skip_special_tokens": False, "clean_up_tokenization_spaces": False}
    return {
        "id": x.example_id,
        "index": x.index,
        "ids_source": x.ids_source,
        "n_tokens": len(x.response_ids),
        "tuned_prompt": pair.tuned_tokenizer.decode(x.tuned_prompt_ids, **options),
        "base_prompt": pair.base_tokenizer.decode(x.base_prompt_ids, **options),
        "response": response_text,
        "tuned_prompt_token_ids": x.tuned_prompt_ids,
        "base_prompt_token_ids": x.base_prompt_ids,
        "response_token_ids": x.response_ids,
    }


def _token_columns(x: ShiftInput, pair: ModelPair, texts: TokenTexts, fraction: float) -> tuple[str, dict[str, Any]]:
    """Identity, text position and sentence of each response token."""
    n = len(x.response_ids)
    text, starts, ends = token_spans(pair.tuned_tokenizer, x.response_ids)
    sentence = sentence_of_tokens(text, starts, ends)
    sentence[np.isin(x.response_ids, pair.tuned_tokenizer.all_special_ids)] = -1  # e.g. a scored end of turn
    return text, {
        "example_id": x.example_id,
        "example_index": np.full(n, x.index),
        "position": np.arange(n),
        "relative_position": np.arange(n) / n,
        "token_id": np.asarray(x.response_ids),
        "token": texts(x.response_ids),
        "char_start": starts,
        "char_end": ends,
        "sentence_index": sentence,
        "initiation": initiation_mask(sentence, fraction),
    }


# ------------------------------------------------------------------------------------------
# Scoring in batches, each kept as a part file until the run is joined


def parts_dir(out: Path) -> Path:
    """Where scored batches wait until the run is joined into ``out`` (they survive a crash, for the rerun)."""
    return out.with_name(out.name + ".parts")


def scoring_batches(inputs: list[ShiftInput], batch_size: int) -> list[list[ShiftInput]]:
    """The batches in scoring order, which is also the order of tokens.parquet.

    Longest first: batches of similar length waste little on padding, and running out of memory
    happens at the start rather than after an hour.
    """
    order = sorted(inputs, key=lambda x: -(max(len(x.tuned_prompt_ids), len(x.base_prompt_ids)) + len(x.response_ids)))
    return [order[first : first + batch_size] for first in range(0, len(order), batch_size)]


def _files_fingerprint(description: dict[str, Any]) -> list[Any]:
    """Names, sizes and modification times of a model's weight files (and its base's), or its hub id."""
    location = Path(description["location"])
    files = sorted(location.glob("*.safetensors")) if location.is_dir() else []
    own = [[f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in files] or [description["location"]]
    return [own, *([_files_fingerprint(description["base"])] if "base" in description else [])]


def _parts_key(config: ShiftConfig, pair: ModelPair) -> dict[str, Any]:
    """What the scored batches depend on: a leftover batch is reused only when all of it is unchanged."""
    report_only = set(ShiftReportSettings.model_fields) - {"initiation_fraction"}
    return {
        "settings": {k: v for k, v in config_to_dict(config).items() if k != "out" and k not in report_only},
        "responses_sha256": sha256_file(Path(config.responses).expanduser()),
        "weights": {side: _files_fingerprint(pair.description[side]) for side in ("base", "tuned")},
    }


def _prepare_parts(parts: Path, key: dict[str, Any]) -> None:
    """Keep the batches of an interrupted run with the same key; start afresh otherwise."""
    key_file = parts / PARTS_KEY_FILE
    if parts.is_dir():
        try:
            same = json.loads(key_file.read_text(encoding="utf-8")) == key
        except (OSError, ValueError):
            same = False
        if same:
            return
        warnings.warn(f"{parts}: scored batches of a run with other inputs or settings; starting again", stacklevel=3)
        shutil.rmtree(parts)
    parts.mkdir(parents=True)
    write_json(key_file, key)


def _batch_path(parts: Path, index: int, suffix: str) -> Path:
    return parts / f"batch-{index:06d}{suffix}"


def _score_to_part(
    pair: ModelPair,
    batch: list[ShiftInput],
    config: ShiftConfig,
    parts: Path,
    index: int,
    texts: tuple[TokenTexts, TokenTexts],
    progress: Callable[[int], None] | None,
) -> None:
    """Score one batch into its part files: the examples' records, then its rows (whose presence marks it done)."""
    tables, examples = [], []
    for x, metrics in zip(batch, score_batch(pair, batch, scoring_settings(config), texts=texts, on_chunk=progress),
                          strict=True):  # fmt: skip
        text, columns = _token_columns(x, pair, texts[1], config.initiation_fraction)
        tables.append(response_table({**metrics, **columns}))
        examples.append(_example_record(x, text, pair))
    write_jsonl(_batch_path(parts, index, ".jsonl"), examples)
    with atomic_path(_batch_path(parts, index, ".parquet")) as tmp:
        pq.write_table(pa.concat_tables(tables), str(tmp))


def _join_parts(parts: Path, n_batches: int, config: ShiftConfig, pair: ModelPair, directory: Path) -> None:
    """tokens.parquet (one row group per batch) and examples.jsonl from the batches, in batch order."""
    tables = [_batch_path(parts, index, ".parquet") for index in range(n_batches)]
    require_visible(tables)
    writer = TokenTableWriter(
        directory / TOKENS_FILE, config.mode, {"settings": config_to_dict(config), "models": pair.description}
    )
    with (directory / EXAMPLES_FILE).open("w", encoding="utf-8") as examples_file:
        for index, table in enumerate(tables):
            writer.write([pq.read_table(str(table))])
            examples_file.write(_batch_path(parts, index, ".jsonl").read_text(encoding="utf-8"))
    writer.close()


def _example_rows(tokens_path: Path) -> Iterator[dict[str, np.ndarray]]:
    """The rows of tokens.parquet grouped by response, in file order, a batch at a time."""
    pending: dict[str, np.ndarray] | None = None
    shown = viewer_columns()
    for batch in pq.ParquetFile(tokens_path).iter_batches(columns=shown):
        columns = {name: batch.column(name).to_numpy(zero_copy_only=False) for name in shown}
        if pending is not None:
            columns = {name: np.concatenate([pending[name], columns[name]]) for name in shown}
        starts = [0, *(np.flatnonzero(np.diff(columns["example_index"])) + 1)]
        for a, b in zip(starts[:-1], starts[1:], strict=True):
            yield {name: values[a:b] for name, values in columns.items()}
        pending = {name: values[starts[-1] :] for name, values in columns.items()}
    if pending is not None and len(pending["example_index"]):
        yield pending


def _views(directory: Path, decode: TokenTexts, limit: int | None) -> Iterator[ExampleView]:
    """The viewer's responses, built one at a time from examples.jsonl and tokens.parquet (same order)."""
    with (directory / EXAMPLES_FILE).open(encoding="utf-8") as examples_file:
        for number, (line, rows) in enumerate(zip(examples_file, _example_rows(directory / TOKENS_FILE), strict=False)):
            if limit is not None and number >= limit:
                return
            yield example_view(json.loads(line), rows, decode)


def _responses_description(
    config: ShiftConfig, records: list[ResponseRecord], inputs: list[ShiftInput]
) -> dict[str, Any]:
    """What was scored, and how the responses were generated (when their records say)."""
    generations = []
    for record in records:
        if record.generation is not None and record.generation not in generations:
            generations.append(record.generation)
    return {
        "path": config.responses,
        "n_records": len(records),
        "n_scored": len(inputs),
        "n_empty": len(records) - len(inputs),
        "n_ids_built_from_text": sum(x.ids_source == "built" for x in inputs),
        "generation": generations,
    }


def compute_shift(
    config: ShiftConfig,
    *,
    overwrite: bool = False,
    pair: ModelPair | None = None,
    progress: Callable[[int], None] | None = None,
) -> ShiftResult:
    """Measure, token by token, how the tuned model's distribution differs from the base model's.

    Each batch of responses is scored into a part file beside ``config.out`` (``<out>.parts``), so
    a rerun after a crash scores only the batches still missing. Under ``accelerate launch`` the
    processes share the missing batches (whole batches, so every number is computed beside the same
    padding as in one process); the main process then joins them, in the one-process order, into
    ``config.out`` and removes the parts.

    Args:
        config: Validated settings.
        overwrite: Replace a shift run already in ``config.out``.
        pair: Models already loaded with :func:`tunescope.shift.pair.load_pair` (else loaded here).
        progress: Called with the number of positions scored by this process, chunk by chunk.

    Raises:
        UserError: for bad input, reported before any model is loaded where possible.
        OutputBusy: when another process is writing ``config.out``.
    """
    state = process_state()
    with output_lock(config.out, state=state):  # covers the output and its part files
        return _compute_shift(config, state, overwrite=overwrite, pair=pair, progress=progress)


def _compute_shift(
    config: ShiftConfig,
    state: Any,
    *,
    overwrite: bool,
    pair: ModelPair | None,
    progress: Callable[[int], None] | None,
) -> ShiftResult:
    out = Path(config.out).expanduser()
    resolved = config_to_dict(config)
    check_run_dir(out, resolved, resume=False, overwrite=overwrite)
    records = read_responses(config.responses)
    if pair is None:
        pair = load_pair(
            config.base, config.tuned, precision=config.precision, share_base_weights=config.share_base_weights,
            trust_remote_code=config.trust_remote_code, device=model_device(state),
        )  # fmt: skip
    inputs = build_inputs(
        records, pair.tuned_tokenizer, pair.base_tokenizer, vocab_size=pair.vocab_size,
        base_prompt=config.base_prompt, template=config.template, include_stop_token=config.include_stop_token,
    )  # fmt: skip
    if not inputs:
        raise UserError(f"{config.responses}: every response is empty; nothing to score")

    batches, parts = scoring_batches(inputs, config.batch_size), parts_dir(out)
    if state.is_main_process:
        _prepare_parts(parts, _parts_key(config, pair))
    state.wait_for_everyone()
    todo = [index for index in range(len(batches)) if not _batch_path(parts, index, ".parquet").is_file()]
    state.wait_for_everyone()  # everyone has listed the missing batches before any is written
    texts = (TokenTexts(pair.base_tokenizer), TokenTexts(pair.tuned_tokenizer))
    started = time.perf_counter()
    for index in shard(state, todo):
        _score_to_part(pair, batches[index], config, parts, index, texts, progress)
    state.wait_for_everyone()
    seconds = time.perf_counter() - started
    scored_now = sum(len(x.response_ids) for index in todo for x in batches[index])

    if state.is_main_process:
        with atomic_path(out) as directory:
            directory.mkdir()
            write_yaml(directory / CONFIG_FILE, resolved)
            _join_parts(parts, len(batches), config, pair, directory)
            summary = summarize_table(
                str(directory / TOKENS_FILE), relative_buckets=config.relative_buckets,
                max_position=config.max_position, top_tokens=config.top_tokens,
                bootstrap_samples=config.bootstrap_samples, seed=config.seed,
            )  # fmt: skip
            summary |= {
                "definitions": definitions(config),
                "models": pair.description,
                "responses": _responses_description(config, records, inputs),
                "throughput": {
                    "seconds": round(seconds, 3),
                    "tokens_per_s": round(scored_now / seconds, 1) if scored_now and seconds > 0 else None,
                    "tokens_scored": scored_now,
                    "processes": state.num_processes,
                },
                "settings": resolved,
            }
            write_json(directory / SUMMARY_FILE, summary)
            shown = min(summary["n_examples"], config.viewer_max_examples or summary["n_examples"])
            decode = TokenTexts(pair.tuned_tokenizer)
            render_viewer(
                directory / VIEWER_FILE, summary=summary, examples=_views(directory, decode, shown), shown=shown
            )
            write_json(directory / DONE_FILE, {"status": "complete", "command": "shift", "mode": config.mode})
        shutil.rmtree(parts)
        agreement = summary["micro"]["tuned_top1_agreement"]["value"]
        if agreement is not None and agreement < 0.99:
            warnings.warn(
                f"only {agreement:.1%} of response tokens are the tuned model's top choice: the responses are not "
                "greedy outputs of this tuned model at this precision (sampling, a repetition penalty, or another "
                "model?)",
                stacklevel=2,
            )
    state.wait_for_everyone()
    summary = json.loads((out / SUMMARY_FILE).read_text(encoding="utf-8"))
    return ShiftResult(out, out / TOKENS_FILE, out / EXAMPLES_FILE, out / VIEWER_FILE, summary)
