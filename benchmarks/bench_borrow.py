"""Borrowing index: build time and span look-ups per second on a synthetic 326k-example training set.

The issue's targets (2-core machine): index build ≤ 60 s and ≥ 1,000 span look-ups per second. The
in-run baseline is the fastest scan that needs no index: every example's text normalised once in
advance (case-folded words joined by single spaces, kept in memory, not timed), then each span
checked with Python's C substring search (``" span words " in text``) against every example. Both
must return the same examples for every span; that is checked.

The synthetic set mimics Tulu-V2-Mix's size (326k examples) with Zipf-distributed words (a 60k-word
vocabulary, exponent 1.07, as natural text): instructions of 5-30 words, responses of 20-120 words.
Spans are 2-6 consecutive words of random responses (so every span occurs at least once), plus the
same number of spans made of random vocabulary words (mostly absent, as invented phrases are).

    python benchmarks/bench_borrow.py [--examples 326000] [--lookups 2000] [--baseline-lookups 20] [--embed 256]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from tunescope.borrow.index import TrainingIndex, open_index
from tunescope.borrow.text import normalized_words
from tunescope.data import DataSettings


def synthetic_dataset(path: Path, n: int, seed: int = 0) -> Path:
    """Write ``n`` alpaca records of Zipf-distributed random words to ``path`` (kept between runs)."""
    if path.is_file():
        return path
    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    vocabulary = np.array(["".join(rng.choice(letters, size)) for size in rng.integers(2, 10, 60_000)])
    weights = 1.0 / np.arange(1, len(vocabulary) + 1) ** 1.07
    instruction_words, response_words = rng.integers(5, 31, n), rng.integers(20, 121, n)
    words = vocabulary[rng.choice(len(vocabulary), int(instruction_words.sum() + response_words.sum()),
                                  p=weights / weights.sum())]  # fmt: skip
    position = 0
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        for i in range(n):
            instruction = " ".join(words[position : position + instruction_words[i]])
            position += instruction_words[i]
            response = " ".join(words[position : position + response_words[i]])
            position += response_words[i]
            record = {"id": f"s{i}", "instruction": instruction.capitalize() + "?", "input": "",
                      "output": response.capitalize() + "."}  # fmt: skip
            handle.write(json.dumps(record) + "\n")
    tmp.replace(path)
    return path


def sample_spans(path: Path, count: int, seed: int = 1) -> list[str]:
    """Half real response fragments (2-6 words), half random word sequences (mostly absent)."""
    rng = random.Random(seed)
    lines = path.read_text(encoding="utf-8").splitlines()
    vocabulary = sorted({word for line in rng.sample(lines, 2000) for word in json.loads(line)["output"].split()})
    spans = []
    for _ in range(count // 2):
        words = json.loads(rng.choice(lines))["output"].split()
        size = rng.randint(2, 6)
        start = rng.randint(0, len(words) - size)
        spans.append(" ".join(words[start : start + size]))
        spans.append(" ".join(rng.choice(vocabulary) for _ in range(rng.randint(2, 4))))
    return spans


def scan_texts(index: TrainingIndex) -> list[str]:
    """Every example's normalised text, padded with spaces, for the substring-scan baseline."""
    # Turns are joined by a separator no span contains, so that no match crosses from one turn to the next.
    return [" " + " | ".join(" ".join(words) for words in index.segment_words(row)) + " " for row in range(len(index))]


def scan_lookup(texts: list[str], span: str) -> list[int]:
    """The baseline: C substring search of the normalised span in every example."""
    needle = " " + " ".join(normalized_words(span)) + " "
    return [row for row, text in enumerate(texts) if needle in text]


def main() -> None:
    """Run the benchmark and print a JSON report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=326_000)
    parser.add_argument("--lookups", type=int, default=2000)
    parser.add_argument("--baseline-lookups", type=int, default=20)
    parser.add_argument("--embed", type=int, default=256, help="examples embedded to measure embedding speed")
    parser.add_argument("--workdir", default=str(Path(tempfile.gettempdir()) / "tunescope-bench-borrow"))
    args = parser.parse_args()
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)

    data = synthetic_dataset(workdir / f"synthetic-{args.examples}.jsonl", args.examples)
    cache = Path(tempfile.mkdtemp(prefix="index-", dir=workdir))
    started = time.perf_counter()
    index, built = open_index(DataSettings(data=str(data)), cache)
    whole_build = time.perf_counter() - started
    assert built
    build_seconds = index.manifest["build_seconds"]
    started = time.perf_counter()
    reopened, built_again = open_index(DataSettings(data=str(data)), cache)
    reopen_seconds = time.perf_counter() - started
    assert not built_again and len(reopened) == len(index)
    index_bytes = sum(file.stat().st_size for file in index.directory.iterdir())

    spans = sample_spans(data, args.lookups)
    index.lookup(spans[0])  # page the arrays in once
    times = []
    found = 0
    for span in spans:
        started = time.perf_counter()
        match = index.lookup(span)
        times.append(time.perf_counter() - started)
        found += bool(match.normalized)
    lookups_per_s = len(spans) / sum(times)

    texts = scan_texts(index)
    baseline_spans = spans[: args.baseline_lookups]
    started = time.perf_counter()
    baseline_rows = [scan_lookup(texts, span) for span in baseline_spans]
    baseline_per_s = len(baseline_spans) / (time.perf_counter() - started)
    for span, rows in zip(baseline_spans, baseline_rows, strict=True):
        assert index.lookup(span).normalized == rows, span

    embedding = None
    if args.embed:
        from tunescope.borrow.embeddings import SentenceEmbedder

        embedder = SentenceEmbedder()
        sample = [index.plain_text(row) for row in range(args.embed)]
        embedder.embed(sample[:16])  # warm-up
        started = time.perf_counter()
        embedder.embed(sample)
        per_s = args.embed / (time.perf_counter() - started)
        embedding = {
            "examples_per_s": round(per_s, 1),
            "projected_hours_for_dataset": round(len(index) / per_s / 3600, 2),
        }

    report = {
        "machine": {
            "arch": platform.machine(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_1_5_15_min_at_end": [round(load, 2) for load in os.getloadavg()],
        },
        "dataset": {
            "examples": len(index),
            "words": index.manifest["n_words"],
            "vocabulary": index.manifest["vocabulary_size"],
            "jsonl_mb": round(data.stat().st_size / 1e6, 1),
        },
        "index": {
            "build_seconds": build_seconds,
            "read_and_build_seconds": round(whole_build, 2),
            "reopen_cached_seconds": round(reopen_seconds, 3),
            "size_mb": round(index_bytes / 1e6, 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        },
        "lookups": {
            "n": len(spans),
            "found": found,
            "per_s": round(lookups_per_s, 1),
            "median_ms": round(statistics.median(times) * 1e3, 3),
            "p99_ms": round(float(np.quantile(times, 0.99)) * 1e3, 3),
        },
        "baseline_substring_scan": {"n": len(baseline_spans), "per_s": round(baseline_per_s, 3)},
        "ratio_index_over_scan": round(lookups_per_s / baseline_per_s, 1),
        "embedding": embedding,
    }
    print(json.dumps(report, indent=2))
    shutil.rmtree(cache, ignore_errors=True)  # about 4x the JSONL's size; the synthetic data is kept for reruns


if __name__ == "__main__":
    main()
