"""`borrow(config)`: from a shift run and the training data to borrow.json, spans.jsonl and an HTML section.

The phases, each a plain function a notebook can call on its own:

1. :func:`read_inputs`: the shift run (:func:`~tunescope.shift.output.read_shift_run`), the tuned
   answers and the spans, all checked; then :func:`claim_output`;
2. :func:`~tunescope.borrow.index.open_index` opens (or builds once) the training-set index;
3. :func:`style_tokens`: which tokens shift, style or content;
4. :func:`get_base_answers`, then :func:`words_found`: borrowed words, with the unshifted and base baselines;
5. :func:`lengths`: response lengths (Table 11);
6. :func:`attribute_spans`: where each span could come from, and the counterfactual check;
7. :func:`shift_section`, :func:`training_section`, :func:`borrow_summary` and :func:`write_outputs`.

Inputs are all checked before anything is written. Generated answers (the base model's, the
counterfactuals) are appended to files in the output directory as they come, so rerunning the
same command after a crash generates only what is missing.
"""

from __future__ import annotations

import hashlib
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tunescope.borrow.answers import ask, generation_settings, read_answers
from tunescope.borrow.attribution import Span, attribute_span, attribution_summary, read_spans
from tunescope.borrow.config import RUNTIME_SETTINGS, BorrowConfig
from tunescope.borrow.counterfactual import counterfactual_summary, persistence, prompt_id, rephrased_messages
from tunescope.borrow.embeddings import SentenceEmbedder, cached_embeddings
from tunescope.borrow.imitation import imitation_summary, length_stats
from tunescope.borrow.index import RESPONSE, TrainingIndex, open_index
from tunescope.borrow.lexicon import tag_tokens
from tunescope.borrow.report import render_page
from tunescope.borrow.style import style_token_summary
from tunescope.borrow.words import borrowed_words, plain_words, words_by_class
from tunescope.config import config_to_dict, upgraded_settings
from tunescope.data import DataSettings
from tunescope.data.dataset import check_local_source
from tunescope.errors import UserError
from tunescope.files import atomic_path, write_json, write_jsonl, write_text, write_yaml
from tunescope.generate.store import ResponseRecord
from tunescope.locks import output_lock
from tunescope.models import load_tokenizer
from tunescope.paths import recorded_path
from tunescope.progress import progress as show_progress
from tunescope.rundir import (
    CONFIG_FILE,
    DONE_FILE,
    check_run_dir,
    config_differences,
    recorded_settings,
    saved_config,
    start_run_dir,
)
from tunescope.shift.output import ShiftRun, read_shift_run

BORROW_FILE = "borrow.json"
SPANS_FILE = "spans.jsonl"
HTML_FILE = "borrow.html"
BASE_RESPONSES_FILE = "base-responses.jsonl"
COUNTERFACTUAL_FILE = "counterfactual-responses.jsonl"
SCHEMA = "tunescope.borrow/1"
TOKENIZE_BATCH = 8192


@dataclass(frozen=True)
class BorrowResult:
    """What a borrow run produced."""

    out: Path
    """The output directory."""
    borrow: dict[str, Any]
    """Contents of borrow.json."""
    spans: list[dict[str, Any]]
    """Records of spans.jsonl (empty without --spans)."""

    @property
    def borrow_path(self) -> Path:
        """borrow.json."""
        return self.out / BORROW_FILE

    @property
    def spans_path(self) -> Path:
        """spans.jsonl."""
        return self.out / SPANS_FILE

    @property
    def html_path(self) -> Path:
        """borrow.html: the report section on a page of its own."""
        return self.out / HTML_FILE


# ------------------------------------------------------------------------------------------
# Building blocks


def claim_output(config: BorrowConfig, overwrite: bool) -> Path:
    """Check ``config.out`` may receive this run; keep it (and its generated answers) for the same settings.

    Raises:
        UserError: for a directory holding something else, or a borrow run with other settings
            (unless ``overwrite``).
    """
    out = Path(config.out).expanduser()
    settings = config_to_dict(config)
    previous = saved_config(out) if out.is_dir() else None
    if previous is not None:
        previous = upgraded_settings(BorrowConfig, previous)
    if previous is not None and not overwrite and not config_differences(previous, settings, RUNTIME_SETTINGS):
        # The same analysis again (after a crash, or to refresh it): keep the answers generated so far.
        (out / DONE_FILE).unlink(missing_ok=True)
        write_yaml(out / CONFIG_FILE, recorded_settings(settings, out))
        return out
    check_run_dir(out, settings, resume=False, overwrite=overwrite, settings_class=BorrowConfig)
    start_run_dir(out, settings)
    return out


def check_training_source(settings: DataSettings) -> None:
    """Fail now, before anything is written, when the training data names a local file that is not there.

    Raises:
        UserError: naming the missing file.
    """
    check_local_source(settings.data, "--data")


def base_answers_path(config: BorrowConfig, out: Path) -> Path:
    """Where the base model's answers are read from or generated into."""
    return Path(config.base_responses).expanduser() if config.base_responses else out / BASE_RESPONSES_FILE


def get_base_answers(
    config: BorrowConfig,
    run: ShiftRun,
    tuned: dict[str, ResponseRecord],
    out: Path,
    log: Callable[[str], None],
) -> tuple[dict[str, ResponseRecord] | None, dict[str, Any] | None]:
    """The base model's answers to the scored prompts: read from a file, or generated (resumably).

    Returns:
        The answers by id (None: no baseline) and a description for borrow.json.
    """
    path = base_answers_path(config, out)
    wanted = [response.example_id for response in run.responses]
    if config.base_responses and path.is_file():
        answers = read_answers(path)
        return answers, {"path": recorded_path(str(path), out), "generated": False, "model": None}
    if not config.generate_base:
        return None, None
    model = config.base or str(run.settings.get("base"))
    generation = generation_settings(tuned)
    max_new_tokens = config.max_new_tokens or generation["max_new_tokens"]
    prompts = [{"id": example_id, "messages": tuned[example_id].messages or []} for example_id in wanted]
    log(f"base answers: {len(prompts)} prompts with {model} (max {max_new_tokens} new tokens) into {path}")
    answers = ask(model, prompts, path, max_new_tokens=max_new_tokens, template=generation["template"],
                  batch_size=config.batch_size, precision=config.precision)  # fmt: skip
    described = {"path": recorded_path(str(path), out), "generated": True, "model": recorded_path(model, out)}
    return answers, {**described, "max_new_tokens": max_new_tokens}


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """A short hash that changes whenever the tokenizer's vocabulary or rules change."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    description = backend.to_str() if backend is not None else repr(tokenizer)
    return hashlib.sha256(description.encode("utf-8")).hexdigest()[:16]


def token_counts(tokenizer: Any, texts: list[str]) -> np.ndarray:
    """Tokens in each text, without special tokens, tokenized in batches."""
    counts = np.zeros(len(texts), dtype=np.int64)
    for first in range(0, len(texts), TOKENIZE_BATCH):
        batch = tokenizer(texts[first : first + TOKENIZE_BATCH], add_special_tokens=False)["input_ids"]
        counts[first : first + len(batch)] = [len(ids) for ids in batch]
    return counts


def training_response_lengths(index: TrainingIndex, tokenizer: Any) -> dict[str, Any]:
    """Length statistics of every response turn of the training set; token counts cached per tokenizer."""
    texts = [turn for row in range(len(index)) for turn in index.turns(row, RESPONSE)]
    cache = index.directory / f"response-tokens-{tokenizer_fingerprint(tokenizer)}.npy"
    counts = np.load(cache, allow_pickle=False) if cache.is_file() else None
    if counts is None or len(counts) != len(texts):
        counts = token_counts(tokenizer, texts)
        with atomic_path(cache) as tmp, tmp.open("wb") as handle:
            np.save(handle, counts, allow_pickle=False)
    return length_stats(texts, counts)


def _embeddings(
    config: BorrowConfig, index: TrainingIndex, queries: list[str], log: Callable[[str], None]
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    embedder = SentenceEmbedder(
        max_length=config.embed_max_length, batch_size=config.embed_batch_size, device=config.device
    )
    started = time.perf_counter()
    log(f"embeddings of {len(index)} training examples (cached in {index.directory})")
    with show_progress("borrow: embeddings", len(index), "examples") as shown:
        matrix = cached_embeddings(
            index.directory, lambda a, b: [index.plain_text(row) for row in range(a, b)], len(index), embedder, shown
        )
    return matrix, embedder.embed(queries), {**embedder.describe(), "seconds": round(time.perf_counter() - started, 3)}


def _counterfactuals(
    config: BorrowConfig,
    run: ShiftRun,
    spans: list[Span],
    tuned: dict[str, ResponseRecord],
    out: Path,
    log: Callable[[str], None],
) -> tuple[dict[int, dict[str, Any]], dict[str, Any] | None]:
    asked = [span for span in spans if span.rephrased]
    if not asked:
        return {}, None
    model = config.tuned or str(run.settings.get("tuned"))
    generation = generation_settings(tuned)
    max_new_tokens = config.max_new_tokens or generation["max_new_tokens"]
    prompts = {}
    for span in asked:
        messages = rephrased_messages(tuned.get(span.example_id), span.rephrased or "")
        prompts[span.number] = {"id": prompt_id(messages), "messages": messages}
    log(f"counterfactual check: {len(asked)} rephrased instructions with {model}")
    unique = list({prompt["id"]: prompt for prompt in prompts.values()}.values())
    answers = ask(model, unique, out / COUNTERFACTUAL_FILE, max_new_tokens=max_new_tokens,
                  template=generation["template"], batch_size=config.batch_size,
                  precision=config.precision)  # fmt: skip
    results = {}
    for span in asked:
        answer = answers[prompts[span.number]["id"]].output or ""
        results[span.number] = {
            "rephrased": span.rephrased,
            "answer": answer,
            "persists": persistence(span.text, answer),
        }
    summary = counterfactual_summary(list(results.values()))
    summary |= {"model": model, "answers": COUNTERFACTUAL_FILE}
    return results, summary


# ------------------------------------------------------------------------------------------
# The phases of a run, in order


@dataclass(frozen=True)
class BorrowInputs:
    """Everything a run reads before it writes anything, checked."""

    run: ShiftRun
    """The shift run: tuned responses, their tokens and classes."""
    tuned: dict[str, ResponseRecord]
    """The tuned answers by id (their prompts, finish reasons and generation settings)."""
    spans: list[Span]
    """The marked spans to attribute (none without --spans)."""
    data: DataSettings
    """The training data."""


class Laps:
    """Seconds spent in each phase, for borrow.json."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self._clock = time.perf_counter()

    def __call__(self, name: str) -> None:
        """Close the phase ``name``: the time since the previous phase ended."""
        now = time.perf_counter()
        self.timings[name] = round(now - self._clock, 3)
        self._clock = now


def read_inputs(config: BorrowConfig) -> BorrowInputs:
    """Read and check the shift run, the tuned answers, the spans and the training source.

    Raises:
        UserError: for a missing or empty shift run, a missing responses file, tuned answers without
            the prompts the base model must answer, bad spans, or a missing training file.
    """
    run = read_shift_run(config.shift)
    if not run.responses:
        raise UserError(f"--shift {run.directory}: the run scored no response")
    responses_path = config.responses or run.settings.get("responses")
    tuned: dict[str, ResponseRecord] = {}
    if responses_path and Path(responses_path).expanduser().is_file():
        tuned = read_answers(responses_path)
    elif config.responses:
        raise UserError(f"--responses {responses_path}: file not found")
    missing = [r.example_id for r in run.responses if r.example_id not in tuned]
    needs_prompts = config.generate_base and not (config.base_responses and Path(config.base_responses).is_file())
    if missing and needs_prompts:
        raise UserError(
            f"the tuned responses file {responses_path!r} lacks the prompt of '{missing[0]}', needed to generate the "
            "base model's answers; pass --responses, --base-responses, or --no-generate-base"
        )
    spans = read_spans(config.spans, run.by_id()) if config.spans else []
    data = config.data_settings()
    check_training_source(data)
    return BorrowInputs(run, tuned, spans, data)


def style_tokens(config: BorrowConfig, run: ShiftRun) -> dict[str, Any]:
    """Which tokens shift, tagged style or content (the ``style_tokens`` section)."""
    tags = [tag_tokens(r.text, r.char_start.tolist(), r.char_end.tolist()) for r in run.responses]
    return style_token_summary(
        run.responses, tags, top_n=config.top_tokens, bootstrap_samples=config.bootstrap_samples, seed=config.seed
    )


def matched_base_answers(
    run: ShiftRun, base: dict[str, ResponseRecord] | None, description: dict[str, Any] | None
) -> list[ResponseRecord] | None:
    """The base answers to the scored prompts, in the shift run's order (a warning when some have none)."""
    if base is None:
        return None
    matched = [base[r.example_id] for r in run.responses if r.example_id in base]
    if len(matched) < len(run.responses):
        warnings.warn(
            f"{len(run.responses) - len(matched)} of {len(run.responses)} scored prompts have no base answer in "
            f"{description['path'] if description else ''}: the base baseline covers the others",
            stacklevel=3,
        )
    if description is not None:
        description["n_matched"] = len(matched)
    return matched


def words_found(
    config: BorrowConfig, run: ShiftRun, index: TrainingIndex, base: list[ResponseRecord] | None
) -> dict[str, Any]:
    """Shifted, unshifted and base-model words found in the training set (the ``borrowed_words`` section)."""
    tuned_words = [words_by_class(r.text, r.char_start, r.char_end, r.klass) for r in run.responses]
    base_words = [plain_words(answer.output or "") for answer in base] if base is not None else None
    return borrowed_words(tuned_words, base_words or None, index, search_in=config.search_in,
                          bootstrap_samples=config.bootstrap_samples, seed=config.seed,
                          ids=[response.example_id for response in run.responses])  # fmt: skip


def lengths(
    config: BorrowConfig, inputs: BorrowInputs, index: TrainingIndex, base: list[ResponseRecord] | None, out: Path
) -> dict[str, Any]:
    """Response lengths of the training data, the tuned and the base model (the ``imitation`` section, Table 11)."""
    run, tuned = inputs.run, inputs.tuned
    tuned_model = config.tuned or str(run.settings.get("tuned"))
    tokenizer = load_tokenizer(tuned_model)
    tuned_texts = [r.text for r in run.responses]
    tuned_truncated = [tuned[r.example_id].finish_reason == "length" if r.example_id in tuned else False
                       for r in run.responses]  # fmt: skip
    base_texts = [answer.output or "" for answer in base or []]
    return imitation_summary(
        training_response_lengths(index, tokenizer),
        length_stats(tuned_texts, token_counts(tokenizer, tuned_texts), truncated=tuned_truncated),
        length_stats(base_texts, token_counts(tokenizer, base_texts),
                     truncated=[answer.finish_reason == "length" for answer in base]) if base is not None else None,
        tokenizer_name=recorded_path(tuned_model, out),
    )  # fmt: skip


@dataclass
class SpanResults:
    """What the analysis found for the marked spans."""

    records: list[dict[str, Any]]
    """One record per span, for spans.jsonl."""
    attribution: dict[str, Any] | None = None
    """The ``attribution`` section."""
    counterfactual: dict[str, Any] | None = None
    """The ``counterfactual`` section."""
    embedder: dict[str, Any] | None = None
    """The sentence embedder's description, when embeddings were used."""


def attribute_spans(
    config: BorrowConfig, inputs: BorrowInputs, index: TrainingIndex, out: Path, say: Callable[[str], None], lap: Laps
) -> SpanResults:
    """Where each marked span could come from in the training set, and whether it survives a rephrased prompt."""
    run, spans, tuned = inputs.run, inputs.spans, inputs.tuned
    if not spans:
        return SpanResults([])
    by_id = run.by_id()
    instructions = {example_id: answer.instruction or "" for example_id, answer in tuned.items()}
    matrix = queries = embedder = None
    if config.embeddings:
        query_texts = [f"{instructions.get(span.example_id, '')}\n{by_id[span.example_id].text}" for span in spans]
        matrix, queries, embedder = _embeddings(config, index, query_texts, say)
        lap("embeddings")
    records = [
        attribute_span(
            span,
            by_id[span.example_id],
            index,
            search_in=config.search_in,
            embeddings=matrix,
            query_embedding=queries[span.number] if queries is not None else None,
            candidates=config.candidates,
            max_ids=config.max_ids,
        )
        for span in spans
    ]
    attribution = attribution_summary(records, bootstrap_samples=config.bootstrap_samples, seed=config.seed)
    lap("attribution")
    results, counterfactual = _counterfactuals(config, run, spans, tuned, out, say)
    for record in records:
        record["counterfactual"] = results.get(record["span"])
    lap("counterfactual")
    return SpanResults(records, attribution, counterfactual, embedder)


TRAINING_FIELDS = (
    "source",
    "fingerprint",
    "format",
    "selection",
    "n_examples",
    "n_turns",
    "n_words",
    "vocabulary_size",
)
"""What borrow.json repeats of the training index's manifest."""


def shift_section(run: ShiftRun, out: Path) -> dict[str, Any]:
    """The shift run the analysis read and how its classes were drawn (the ``shift`` section)."""
    return {
        "directory": recorded_path(str(run.directory), out),
        "mode": run.mode,
        **{side: recorded_path(str(run.settings.get(side)), out) for side in ("base", "tuned")},
        "n_responses": len(run.responses),
        "n_tokens": int(sum(len(r.klass) for r in run.responses)),
        "classes": f"unshifted: base rank <= {run.settings.get('unshifted_max_rank', 1)}, marginal: <= "
        f"{run.settings.get('marginal_max_rank', 3)}, shifted: above",
    }


def training_section(index: TrainingIndex, built: bool, out: Path) -> dict[str, Any]:
    """The training set as indexed, and whether this run built the index (the ``training`` section)."""
    return {key: index.manifest.get(key) for key in TRAINING_FIELDS} | {
        "source": recorded_path(str(index.manifest.get("source")), out),
        "index": recorded_path(str(index.directory), out),
        "index_built_now": built,
        "index_build_seconds": index.manifest["build_seconds"],
        "ids": "each example's id field, else its 0-based row number in the source",
    }


def borrow_summary(
    config: BorrowConfig, sections: dict[str, Any], spans: SpanResults, timings: dict[str, float], out: Path
) -> dict[str, Any]:
    """The contents of borrow.json: the analysis' ``sections`` in order, then the spans', files, timings, settings.

    Paths are recorded relative to ``out``, the directory that holds the file.
    """
    return {
        "schema": SCHEMA,
        **sections,
        "attribution": spans.attribution,
        "counterfactual": spans.counterfactual,
        "embedder": spans.embedder,
        "files": {"spans": SPANS_FILE if spans.records else None, "html": HTML_FILE},
        "timings": timings,
        "settings": recorded_settings(config_to_dict(config), out),
    }


def write_outputs(out: Path, summary: dict[str, Any], span_records: list[dict[str, Any]]) -> None:
    """borrow.json, spans.jsonl (or none), borrow.html, and the marker that the run is complete."""
    if span_records:
        write_jsonl(out / SPANS_FILE, span_records)
    else:
        (out / SPANS_FILE).unlink(missing_ok=True)
    write_json(out / BORROW_FILE, summary)
    write_text(out / HTML_FILE, render_page(summary, span_records))
    write_json(out / DONE_FILE, {"status": "complete", "command": "borrow"})


# ------------------------------------------------------------------------------------------
# The whole run


def borrow(
    config: BorrowConfig,
    *,
    overwrite: bool = False,
    log: Callable[[str], None] | None = None,
) -> BorrowResult:
    """Measure what the tuned model borrowed from its training set; write everything to ``config.out``.

    Args:
        config: Validated settings.
        overwrite: Replace a borrow run with other settings in ``config.out``.
        log: Called with one line per long step (building the index, generating, embedding).

    Raises:
        UserError: for bad input, reported before anything is written where possible.
        OutputBusy: when another process is writing into ``config.out``.
    """
    with output_lock(config.out):
        return _borrow(config, overwrite=overwrite, log=log)


def _borrow(config: BorrowConfig, *, overwrite: bool, log: Callable[[str], None] | None) -> BorrowResult:
    say = log or (lambda message: None)
    lap = Laps()
    inputs = read_inputs(config)
    run = inputs.run
    out = claim_output(config, overwrite)
    lap("read_inputs")
    say(f"training index of {inputs.data.data}")
    index, built = open_index(inputs.data, config.index_dir)
    lap("index")
    style = style_tokens(config, run)
    lap("style_tokens")
    answers, base_description = get_base_answers(config, run, inputs.tuned, out, say)
    lap("base_answers")
    base = matched_base_answers(run, answers, base_description)
    borrowed = words_found(config, run, index, base)
    lap("borrowed_words")
    imitation = lengths(config, inputs, index, base, out)
    lap("imitation")
    spans = attribute_spans(config, inputs, index, out, say, lap)
    sections = {"shift": shift_section(run, out), "training": training_section(index, built, out),
                "style_tokens": style, "borrowed_words": borrowed, "base_responses": base_description,
                "imitation": imitation}  # fmt: skip
    summary = borrow_summary(config, sections, spans, lap.timings, out)
    write_outputs(out, summary, spans.records)
    return BorrowResult(out, summary, spans.records)
