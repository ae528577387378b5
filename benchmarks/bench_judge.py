"""Judge throughput: 8 parallel requests against sequential ones, in one run, on one loopback endpoint.

A local OpenAI-compatible server answers every chat request after a fixed latency (200 ms by
default) with a valid five-aspect judgement. The same answers are judged through the whole
library path (`tunescope.judge.judge`: read the answers, build prompts, send, parse, append to the
log, summarise; cache and plots off, so every judgement is a real request) once with
``concurrency=1`` and once with ``concurrency=8``, in A B B A order after one uncounted warm-up.
Throughput is judgements per second; the target is a ratio of at least 6.

    python benchmarks/bench_judge.py [--items 48] [--latency 0.2] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tunescope.judge import ASPECTS, JudgeConfig, judge

REPLY = json.dumps({aspect: {"reason": "fine", "score": 4} for aspect in ASPECTS})


def start_server(latency: float) -> tuple[ThreadingHTTPServer, str]:
    """A chat-completions endpoint on 127.0.0.1 that answers after ``latency`` seconds."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # As real servers do: otherwise Nagle's algorithm and delayed ACKs add ~40 ms to every
        # keep-alive reply, which would flatter the parallel run.
        disable_nagle_algorithm = True

        def log_message(self, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            time.sleep(latency)
            body = json.dumps(
                {
                    "choices": [{"message": {"role": "assistant", "content": REPLY}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 500, "completion_tokens": 60},
                }
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/v1"


def run_once(url: str, responses: Path, workdir: Path, concurrency: int, round_name: str) -> float:
    """Judge every answer once; return judgements per second."""
    config = JudgeConfig(
        responses=[str(responses)], out=str(workdir / f"out-{round_name}"), backend="openai", judge_base_url=url,
        judge_model="bench-judge", concurrency=concurrency, cache=False, plots=False, bootstrap_samples=200,
    )  # fmt: skip
    started = time.perf_counter()
    result = judge(config)
    elapsed = time.perf_counter() - started
    assert result.stats is not None and result.stats.sent == result.summary["calls"]["judgements"]
    assert result.summary["models"]["answers"]["complete"] == result.stats.sent, "every reply should parse"
    return result.stats.sent / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=48)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()

    server, url = start_server(args.latency)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        responses = workdir / "answers.jsonl"
        rows = [
            {"id": f"q{i}", "messages": [{"role": "user", "content": f"Question {i}?"}], "output": f"Answer {i}. " * 40}
            for i in range(args.items)
        ]
        responses.write_text("".join(json.dumps(row) + "\n" for row in rows))
        run_once(url, responses, workdir, args.concurrency, "warmup")
        rates: dict[int, list[float]] = {1: [], args.concurrency: []}
        for index, concurrency in enumerate([1, args.concurrency, args.concurrency, 1]):
            rates[concurrency].append(run_once(url, responses, workdir, concurrency, f"round{index}"))
    server.shutdown()

    sequential, parallel = statistics.median(rates[1]), statistics.median(rates[args.concurrency])
    bound = args.concurrency / args.latency
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, python {platform.python_version()}")
    print(f"{args.items} judgements per round, {args.latency * 1000:.0f} ms server latency, medians of 2 rounds")
    print(f"sequential: {sequential:.2f} judgements/s (rounds {', '.join(f'{r:.2f}' for r in rates[1])})")
    print(
        f"{args.concurrency} parallel: {parallel:.2f} judgements/s "
        f"(rounds {', '.join(f'{r:.2f}' for r in rates[args.concurrency])}; bound {bound:.1f})"
    )
    print(f"ratio: {parallel / sequential:.2f} (target >= 6)")


if __name__ == "__main__":
    main()
