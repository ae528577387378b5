"""The judge against a real OpenAI-compatible HTTP server on 127.0.0.1, started by the tests.

The server's replies are scripted by markers written into the answers being judged
(``BEHAVIOUR=<name>``), so every request carries its own script; it records every request it
receives, which is what the resume and cache tests count.

Its ``dialect`` mimics how real servers refuse a ``response_format`` they do not support:

* ``llama.cpp``: llama.cpp's server (and its forks, e.g. ik_llama.cpp) answers ``json_schema``
  with HTTP 500 and ``{"error": {"code": 500, "message": "response_format type must be one of
  \"text\" or \"json_object\", but got: json_schema", "type": "server_error"}}``; a
  ``json_object`` with a ``schema`` is its own dialect, which it accepts.
* ``vllm``: vLLM answers a schema its grammar backend cannot compile with HTTP 400 and
  ``{"object": "error", "message": "The provided JSON schema contains features not supported by
  xgrammar.", "type": "BadRequestError", "param": null, "code": 400}``; a ``json_object`` (the
  extra ``schema`` key ignored) it accepts.
* ``plain``: a server that knows no ``response_format`` at all and says so with HTTP 400.
* ``openai`` (default): accepts every mode.
"""

import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tunescope.cli import main
from tunescope.judge import ASPECTS, JudgeConfig, judge, read_judgements
from tunescope.judge.prompts import reply_schema

from conftest import write_jsonl

SECRET = "sk-test-DO-NOT-LEAK-4f9a1c"


def good_reply(scores):
    pairs = zip(ASPECTS, scores, strict=True)
    return json.dumps({aspect: {"reason": f"{aspect} looks fine", "score": score} for aspect, score in pairs})


class ScriptedJudge:
    """An OpenAI-compatible /v1/chat/completions endpoint with scripted behaviours."""

    def __init__(self, latency: float = 0.0, dialect: str = "openai", port: int = 0):
        self.latency = latency
        self.dialect = dialect
        self.down: set[str] = set()  # items answered with 503 for as long as they are listed
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        judge = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as real servers do
            disable_nagle_algorithm = True

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                try:
                    judge.handle(self, body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up on a slow reply

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    # -- bookkeeping -----------------------------------------------------------------------

    def record(self, handler, body) -> int:
        """Log the request; return how many times this exact request was seen (1 = first)."""
        digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
        with self.lock:
            self.requests.append(
                {
                    "time": time.monotonic(),
                    "digest": digest,
                    "item": self.item_of(body),
                    "authorization": handler.headers.get("Authorization"),
                    "body": body,
                }
            )
            return sum(1 for r in self.requests if r["digest"] == digest)

    @staticmethod
    def item_of(body) -> str | None:
        match = re.search(r"ITEM=(\w+)", body["messages"][-1]["content"])
        return match.group(1) if match else None

    def count(self, item=None) -> int:
        with self.lock:
            return sum(1 for r in self.requests if item is None or r["item"] == item)

    # -- replies ---------------------------------------------------------------------------

    def send(self, handler, status, payload, headers=None):
        data = json.dumps(payload).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            handler.send_header(key, value)
        handler.end_headers()
        handler.wfile.write(data)

    def reply(self, handler, text):
        self.send(
            handler,
            200,
            {
                "id": "chatcmpl-test",
                "object": "chat.completion",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120},
            },
        )

    def refusal(self, body) -> tuple[int, dict] | None:
        """The status and body with which this server's dialect refuses the request's response_format."""
        kind = (body.get("response_format") or {}).get("type")
        if kind is None or self.dialect == "openai":
            return None
        if self.dialect == "plain":
            return 400, {"error": {"message": "Unrecognized request argument supplied: response_format",
                                   "type": "invalid_request_error"}}  # fmt: skip
        if kind != "json_schema":
            return None
        if self.dialect == "llama.cpp":
            message = 'response_format type must be one of "text" or "json_object", but got: json_schema'
            return 500, {"error": {"code": 500, "message": message, "type": "server_error"}}
        message = "The provided JSON schema contains features not supported by xgrammar."
        return 400, {"object": "error", "message": message, "type": "BadRequestError", "param": None, "code": 400}

    def format_of(self, item: str | None = None) -> list[str]:
        """The response_format type (or 'none') of each request, in arrival order."""
        with self.lock:
            return [
                (r["body"].get("response_format") or {}).get("type", "none")
                + ("+schema" if "schema" in (r["body"].get("response_format") or {}) else "")
                for r in self.requests
                if item is None or r["item"] == item
            ]

    def handle(self, handler, body):
        seen = self.record(handler, body)
        if self.latency:
            time.sleep(self.latency)
        if (refused := self.refusal(body)) is not None:
            return self.send(handler, *refused)
        prompt = body["messages"][-1]["content"]
        if self.item_of(body) in self.down:
            return self.send(handler, 503, {"error": {"message": "service unavailable"}})
        behaviour = (re.search(r"BEHAVIOUR=(\w+)", prompt) or [None, "good"])[1]
        scores = [int(s) for s in (re.search(r"SCORES=([1-5,]+)", prompt) or [None, "4,4,4,4,4"])[1].split(",")]
        if behaviour == "err500x2" and seen <= 2:
            return self.send(handler, 500, {"error": {"message": "overloaded"}})
        if behaviour == "always500":
            return self.send(handler, 503, {"error": {"message": "service unavailable"}})
        if behaviour == "r429" and seen == 1:
            return self.send(handler, 429, {"error": {"message": "slow down"}}, {"Retry-After": "1"})
        if behaviour == "slow_once" and seen == 1:
            time.sleep(1.5)
        if behaviour == "auth":
            return self.send(handler, 401, {"error": {"message": f"Incorrect API key provided: {SECRET}"}})
        if behaviour == "unsupported500":  # a parameter the server does not support, reported as a server error
            return self.send(handler, 500, {"error": {"message": "Unsupported parameter: 'max_tokens'"}})
        if behaviour == "toolong400":  # this request, not the server: vLLM's context-length refusal
            message = "This model's maximum context length is 2048 tokens. However, you requested 4000 tokens."
            return self.send(handler, 400, {"object": "error", "message": message, "type": "BadRequestError"})
        if "## Output A:" in prompt:
            return self.reply(handler, self.pairwise(prompt, behaviour))
        replies = {
            "good": good_reply(scores),
            "fenced": "Here is my evaluation:\n```json\n" + good_reply(scores) + "\n```\nThanks!",
            "python": str({a: {"reason": "it's ok", "score": str(s)} for a, s in zip(ASPECTS, scores, strict=True)}),
            "garbage": "I think this answer is quite good overall.",
            "na": good_reply(scores).replace('"depth": {"reason": "depth looks fine", "score": 4}', '"depth": "N/A"'),
            "range": good_reply(scores[:4] + [9]),
            "empty": "",
        }
        self.reply(handler, replies.get(behaviour, good_reply(scores)))

    @staticmethod
    def pairwise(prompt, behaviour):
        if behaviour == "always_a":
            choice = "A"  # a judge that only looks at position
        else:
            answer_b_starts = prompt.index("## Output B:")
            good_at = prompt.find("GOOD", prompt.index("## Output A:"))
            choice = "tie" if good_at < 0 else ("B" if good_at > answer_b_starts else "A")
        return json.dumps({"reason": "compared", **dict.fromkeys(ASPECTS, choice)})


@pytest.fixture
def server():
    judge_server = ScriptedJudge()
    yield judge_server
    judge_server.close()


def responses_file(path: Path, answers: dict[str, str], prompt_extra: str = "") -> Path:
    rows = [
        {
            "id": item,
            "messages": [{"role": "user", "content": f"Question ITEM={item} {prompt_extra}".strip()}],
            "output": answer,
            "output_token_ids": list(range(len(answer.split()))),
        }
        for item, answer in answers.items()
    ]
    return write_jsonl(path, rows)


def config(server, tmp_path, responses, **overrides):
    settings = {
        "responses": [str(path) for path in responses],
        "out": str(tmp_path / "judge"),
        "backend": "openai",
        "base_url": server.url,
        "judge_model": "scripted-judge",
        "api_key_env": "TUNESCOPE_TEST_JUDGE_KEY",
        "cache_dir": str(tmp_path / "cache"),
        "backoff": 0.05,
        "timeout": 5.0,
        "bootstrap_samples": 200,
        **overrides,
    }
    return JudgeConfig(**settings)


def assert_no_secret(*directories):
    for directory in directories:
        for file in Path(directory).rglob("*"):
            if file.is_file():
                assert SECRET.encode() not in file.read_bytes(), file


def test_scores_parses_repairs_and_counts_failures(server, tmp_path, monkeypatch):
    monkeypatch.setenv("TUNESCOPE_TEST_JUDGE_KEY", SECRET)
    answers = {
        "a": "BEHAVIOUR=good SCORES=5,5,5,5,5 A full answer with several words.",
        "b": "BEHAVIOUR=good SCORES=1,2,3,2,1 Short.",
        "c": "BEHAVIOUR=fenced SCORES=3,3,3,3,3",
        "d": "BEHAVIOUR=python SCORES=4,4,4,4,4",
        "e": "BEHAVIOUR=na SCORES=4,4,4,4,4",
        "f": "BEHAVIOUR=range SCORES=2,2,2,2,2",
        "g": "BEHAVIOUR=garbage",
        "h": "BEHAVIOUR=empty",
    }
    data = responses_file(tmp_path / "lora.jsonl", answers)
    result = judge(config(server, tmp_path, [data], concurrency=4, export_justeval=True))

    records = {r["item_id"]: r for r in (json.loads(line) for line in result.judgements.read_text().splitlines())}
    assert {item: records[item]["status"] for item in answers} == {
        "a": "ok", "b": "ok", "c": "ok", "d": "ok", "e": "partial", "f": "partial", "g": "failed", "h": "failed",
    }  # fmt: skip
    assert records["c"]["repairs"] == ["code fence removed"] and records["c"]["scores"]["depth"] == 3
    assert "Python-style literal read" in records["d"]["repairs"] and records["d"]["scores"]["clarity"] == 4
    assert records["e"]["failures"] == {"depth": "na"} and "depth" not in records["e"]["scores"]
    assert records["f"]["failures"] == {"engagement": "out_of_range"}
    assert records["g"]["raw"] == "I think this answer is quite good overall."  # kept for inspection
    assert records["g"]["failures"] == dict.fromkeys(ASPECTS, "unparseable")
    assert records["h"]["failures"] == dict.fromkeys(ASPECTS, "empty")
    prompt = records["a"]["prompt"]
    assert prompt["version"] == "score-v1" and len(prompt["sha256"]) == 64
    assert all(r["prompt"] == prompt and r["judge"]["model"] == "scripted-judge" for r in records.values())

    model = result.summary["models"]["lora"]
    # Means over valid scores only: N/A, out-of-range, unparseable and empty are never imputed.
    assert model["aspects"]["helpfulness"]["mean"] == pytest.approx((5 + 1 + 3 + 4 + 4 + 2) / 6, abs=1e-4)
    assert model["aspects"]["depth"]["n"] == 5 and model["aspects"]["depth"]["mean"] == pytest.approx(16 / 5, abs=1e-4)
    assert model["aspects"]["engagement"]["n"] == 5
    assert model["aspects"]["helpfulness"]["histogram"] == {"1": 1, "2": 1, "3": 1, "4": 2, "5": 1}
    low, high = model["aspects"]["helpfulness"]["ci95"]
    assert low <= model["aspects"]["helpfulness"]["mean"] <= high and low < high
    assert model["failures"]["by_kind"] == {"empty": 5, "na": 1, "out_of_range": 1, "unparseable": 5}
    assert model["complete"] == 4 and model["items"] == 8
    assert model["response_length"]["tokens_mean"] is not None
    assert result.summary["stand_in_judge"] is False and result.summary["note"] is None

    # One request per answer, each with the key in the Authorization header only.
    assert server.count() == 8 and {r["authorization"] for r in server.requests} == {f"Bearer {SECRET}"}
    assert [p.name for p in result.plots] == ["radar.png", "bars.png"]
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in result.plots)
    exported = json.loads((result.out / "judgements.justeval.json").read_text())
    by_id = {row["id"]: row for row in exported}
    assert by_id["e"]["parsed_result"]["depth"]["score"] == "N/A" and by_id["g"]["parsed_result"] is None
    assert by_id["a"]["eval_config"]["mode"] == "score_multi"
    assert_no_secret(result.out, tmp_path / "cache")


def test_retries_server_errors_rate_limits_and_timeouts(server, tmp_path):
    answers = {
        "e500": "BEHAVIOUR=err500x2",
        "r429": "BEHAVIOUR=r429",
        "slow": "BEHAVIOUR=slow_once",
        "down": "BEHAVIOUR=always500",
        "fine": "BEHAVIOUR=good",
    }
    data = responses_file(tmp_path / "answers.jsonl", answers)
    settings = config(server, tmp_path, [data], timeout=0.5, max_retries=2, concurrency=5)
    result = judge(settings)
    records = {r["item_id"]: r for r in result.stats.records.values()}

    assert records["e500"]["status"] == "ok" and records["e500"]["attempts"] == 3
    assert records["r429"]["status"] == "ok" and records["r429"]["attempts"] == 2
    first, second = [r["time"] for r in server.requests if r["item"] == "r429"]
    assert second - first >= 0.9  # the server's Retry-After: 1 was honoured
    assert records["slow"]["status"] == "ok" and records["slow"]["attempts"] == 2  # timed out once, then answered
    assert records["down"]["status"] == "error" and "HTTP 503 after 3 attempts" in records["down"]["error"]
    assert records["down"]["failures"] == dict.fromkeys(ASPECTS, "request")
    assert server.count("down") == 3
    calls = result.summary["calls"]
    assert calls["request_errors"] == 1 and calls["retries"] == 2 + 1 + 1 + 2
    assert result.summary["models"]["answers"]["aspects"]["helpfulness"]["n"] == 4

    # A rerun asks again only what got no reply; the four answered items are not sent again.
    before = {item: server.count(item) for item in answers}
    rerun = judge(settings)
    assert {item: server.count(item) - before[item] for item in answers} == {
        "e500": 0, "r429": 0, "slow": 0, "down": 3, "fine": 0,
    }  # fmt: skip
    assert rerun.stats.resumed == 4 and rerun.stats.sent == 1

    # Another output directory with the same cache pays for nothing that was answered.
    before_total = server.count()
    elsewhere = judge(settings.model_copy(update={"out": str(tmp_path / "judge-again")}))
    assert elsewhere.stats.cache_hits == 4 and server.count() - before_total == 3  # only "down" again
    assert elsewhere.summary["calls"]["from_cache"] == 4


def test_pairwise_runs_both_orders_and_cancels_position_bias(server, tmp_path):
    first = responses_file(tmp_path / "lora.jsonl", {"p": "GOOD answer", "q": "GOOD answer", "r": "meh", "s": "meh"})
    second = responses_file(tmp_path / "full.jsonl", {"p": "meh", "q": "meh", "r": "GOOD answer", "s": "meh"})
    result = judge(config(server, tmp_path, [first, second], mode="pairwise"))
    pair = result.summary["pairs"]["lora vs full"]
    helpfulness = pair["aspects"]["helpfulness"]
    assert (helpfulness["wins"], helpfulness["ties"], helpfulness["losses"]) == (2, 1, 1)
    assert helpfulness["win_rate"] == pytest.approx((2 + 0.5) / 4)
    assert helpfulness["consistency"] == 1.0 and helpfulness["first_shown_preferred"] == 0.5
    # Two requests per item, with the answers swapped between them; item s has the same answer from
    # both models, so both orders are the same request, sent once.
    assert server.count() == 7 and server.count("s") == 1
    assert sorted(r["cached"] for r in result.stats.records.values() if r["item_id"] == "s") == [False, True]
    shown = [r["body"]["messages"][-1]["content"] for r in server.requests if r["item"] == "p"]
    assert sorted(text.index("GOOD") < text.index("## Output B:") for text in shown) == [False, True]
    assert [p.name for p in result.plots] == ["pairwise.png"]

    # A judge that always picks the first answer shown: every verdict flips with the order -> ties.
    biased_first = responses_file(tmp_path / "a.jsonl", {"p": "GOOD", "q": "meh"}, "BEHAVIOUR=always_a")
    biased_second = responses_file(tmp_path / "b.jsonl", {"p": "meh", "q": "GOOD"}, "BEHAVIOUR=always_a")
    biased = judge(
        config(server, tmp_path, [biased_first, biased_second], mode="pairwise", out=str(tmp_path / "biased"))
    )
    stats = biased.summary["pairs"]["a vs b"]["aspects"]["clarity"]
    assert (stats["wins"], stats["ties"], stats["losses"]) == (0, 2, 0)
    assert stats["consistency"] == 0.0 and stats["first_shown_preferred"] == 1.0


def test_refused_key_stops_with_one_line_and_never_shows_the_key(server, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TUNESCOPE_TEST_JUDGE_KEY", SECRET)
    data = responses_file(tmp_path / "answers.jsonl", {"x": "BEHAVIOUR=auth", "y": "BEHAVIOUR=auth"})
    out = tmp_path / "judge"
    code = main(
        ["judge", "--responses", str(data), "--out", str(out), "--backend", "openai", "--base-url", server.url,
         "--judge-model", "m", "--api-key-env", "TUNESCOPE_TEST_JUDGE_KEY", "--cache-dir", str(tmp_path / "cache")]
    )  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 1
    lines = [line for line in err.splitlines() if not line.startswith("warning:")]
    assert len(lines) == 1 and "HTTP 401" in lines[0] and "TUNESCOPE_TEST_JUDGE_KEY" in lines[0], err
    assert SECRET not in err and "***" in lines[0]
    assert_no_secret(out, tmp_path / "cache")


def judge_command(server, data, out):
    return [
        sys.executable, "-m", "tunescope", "judge", "--responses", str(data), "--out", str(out),
        "--backend", "openai", "--base-url", server.url, "--judge-model", "scripted-judge",
        "--concurrency", "2", "--no-cache", "--no-plots", "--bootstrap-samples", "100",
    ]  # fmt: skip


def test_killed_run_resumes_without_asking_anything_finished_again(tmp_path):
    server = ScriptedJudge(latency=0.3)
    try:
        items = {f"i{index:02d}": f"Answer number {index}." for index in range(12)}
        data = responses_file(tmp_path / "answers.jsonl", items)
        out = tmp_path / "judge"
        log = out / "judgements.jsonl"
        env = {**os.environ, "TUNESCOPE_CACHE": str(tmp_path / "cache")}
        process = subprocess.Popen(judge_command(server, data, out), env=env, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None:
            if log.is_file() and log.read_text().count("\n") >= 4:
                break
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
        process.wait()
        finished = {json.loads(line)["item_id"] for line in log.read_text().splitlines() if line.endswith("}")}
        assert 4 <= len(finished) < len(items), "the run should have been killed half-way"
        asked_before = server.count()

        # The cache is off: only the judgements log can tell the rerun what is finished.
        rerun = subprocess.run(judge_command(server, data, out), env=env, capture_output=True, text=True, timeout=120)
        assert rerun.returncode == 0, rerun.stderr
        for item in finished:
            assert server.count(item) == 1, f"{item} was finished before the kill but asked again"
        assert server.count() - asked_before <= len(items) - len(finished)
        assert server.count() <= len(items) + 2  # at most the two requests in flight at the kill were lost
        records = read_judgements(log)
        assert sorted(r["item_id"] for r in records.values()) == sorted(items)
        summary = json.loads((out / "judge_summary.json").read_text())
        assert summary["models"]["answers"]["items"] == 12 and summary["this_run"]["resumed"] == len(finished)
    finally:
        server.close()


def test_limit_labels_and_a_yaml_config(server, tmp_path, capsys):
    (tmp_path / "lora").mkdir()
    (tmp_path / "full").mkdir()
    answers = {f"q{i}": f"BEHAVIOUR=good SCORES={i + 1},3,3,3,3" for i in range(4)}
    files = [responses_file(tmp_path / run / "responses.jsonl", answers) for run in ("lora", "full")]
    settings = tmp_path / "judge.yaml"
    settings.write_text(
        f"responses: [{files[0]}, {files[1]}]\nbackend: openai\nbase_url: {server.url}\njudge_model: m\n"
        f"limit: 2\ncache_dir: {tmp_path / 'cache'}\nbootstrap_samples: 50\n"
    )
    out = tmp_path / "judge"
    assert main(["judge", "--config", str(settings), "--out", str(out), "--no-plots"]) == 0
    printed = capsys.readouterr().out
    assert "lora/responses: 2 answers, 2 fully scored" in printed and "helpfulness  1.50 [" in printed
    summary = json.loads((out / "judge_summary.json").read_text())
    assert list(summary["models"]) == ["lora/responses", "full/responses"]  # same file names: told apart by directory
    assert summary["files"]["plots"] == [] and server.count() == 2  # the two files hold the same answers


def test_json_modes_ask_for_json_in_each_servers_dialect(server, tmp_path):
    data = responses_file(tmp_path / "answers.jsonl", {"a": "Fine."})
    for mode in ("json_object", "json_schema", "json_object_schema", "none"):
        result = judge(config(server, tmp_path, [data], json_mode=mode, out=str(tmp_path / mode), plots=False))
        assert result.summary["models"]["answers"]["complete"] == 1
    bodies = [request["body"] for request in server.requests]
    assert server.count() == 4  # the JSON mode is part of the request, so nothing came from another mode's cache
    assert bodies[0]["response_format"] == {"type": "json_object"}
    assert bodies[1]["response_format"]["type"] == "json_schema"
    assert bodies[1]["response_format"]["json_schema"]["schema"] == reply_schema("score")
    assert bodies[2]["response_format"] == {"type": "json_object", "schema": reply_schema("score")}
    assert "response_format" not in bodies[3]
    assert {(b["model"], b["temperature"], b["max_tokens"]) for b in bodies} == {("scripted-judge", 0.0, 1024)}
    assert [m["role"] for m in bodies[0]["messages"]] == ["system", "user"]


# ------------------------------------------------------------------------------------------
# Servers' quirks: refusals that will not change, and --json-mode auto


def many_answers(prefix: str, n: int) -> dict[str, str]:
    return {f"{prefix}{index}": f"Answer {index}. BEHAVIOUR=good" for index in range(n)}


@pytest.mark.parametrize(
    ("dialect", "accepted", "refused_modes"),
    [
        ("llama.cpp", "json_object_schema", ["json_schema"]),
        ("vllm", "json_object_schema", ["json_schema"]),
        ("plain", "none", ["json_schema", "json_object+schema", "json_object"]),
        ("openai", "json_schema", []),
    ],
)
def test_auto_json_mode_finds_what_each_server_accepts_with_one_probe(tmp_path, dialect, accepted, refused_modes):
    server = ScriptedJudge(dialect=dialect)
    try:
        data = responses_file(tmp_path / "answers.jsonl", many_answers("a", 6))
        result = judge(config(server, tmp_path, [data], concurrency=4, plots=False))
        assert result.complete and result.summary["models"]["answers"]["complete"] == 6
        assert {record["json_mode"] for record in result.stats.records.values()} == {accepted}
        # One request found the mode, trying the refused ones once each; every other request used it.
        formats = server.format_of()
        assert formats[: len(refused_modes)] == refused_modes
        assert len(formats) == 6 + len(refused_modes)
        assert all(attempt == 1 for attempt in (r["attempts"] for r in result.stats.records.values()))

        # The mode is remembered in the cache: new answers, another output, no refused request at all.
        more = responses_file(tmp_path / "more.jsonl", many_answers("b", 4))
        again = judge(config(server, tmp_path, [more], concurrency=4, plots=False, out=str(tmp_path / "again")))
        assert again.complete and server.count() == 6 + len(refused_modes) + 4
        assert server.format_of()[-4:] == [{"json_object_schema": "json_object+schema"}.get(accepted, accepted)] * 4
    finally:
        server.close()


def test_an_explicit_mode_the_server_refuses_costs_one_request_not_six_per_item(tmp_path, capsys):
    server = ScriptedJudge(dialect="llama.cpp")
    try:
        data = responses_file(tmp_path / "answers.jsonl", many_answers("a", 6))
        argv = ["judge", "--responses", str(data), "--out", str(tmp_path / "judge"), "--backend", "openai",
                "--base-url", server.url, "--judge-model", "m", "--json-mode", "json_schema", "--concurrency", "1",
                "--max-retries", "5", "--backoff", "0.05", "--cache-dir", str(tmp_path / "cache")]  # fmt: skip
        code = main(argv)
        err = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("warning:")]
        assert code == 1 and len(err) == 1, err
        assert (
            "does not accept --json-mode json_schema" in err[0]
            and "HTTP 500" in err[0]
            and "--json-mode auto" in err[0]
        )
        assert server.count() == 1  # before: 6 attempts for each of the 6 items
    finally:
        server.close()


def test_refusals_that_will_not_change_are_not_retried(server, tmp_path):
    answers = {"u": "BEHAVIOUR=unsupported500", "t": "BEHAVIOUR=toolong400", "e": "BEHAVIOUR=err500x2", "g": "ok"}
    data = responses_file(tmp_path / "answers.jsonl", answers)
    result = judge(config(server, tmp_path, [data], json_mode="json_object", max_retries=3, plots=False))
    records = {r["item_id"]: r for r in result.stats.records.values()}
    assert server.count("u") == 1 and server.count("t") == 1  # refused for good: asked once
    assert server.count("e") == 3 and records["e"]["status"] == "ok"  # an overloaded server is still retried
    assert records["u"]["refused"] and records["u"]["error_reason"] == "HTTP 500" and records["u"]["attempts"] == 1
    assert records["t"]["refused"] and "maximum context length" in records["t"]["error"]
    # A refusal is the server's answer: the run is complete, with those judgements counted as failed.
    assert result.complete and result.summary["unanswered"]["count"] == 0
    assert result.summary["models"]["answers"]["items"] == 4


def closed_port_url() -> str:
    with socket.socket() as probe:  # bound, then released: nothing listens there afterwards
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def judge_argv(data, out, url, tmp_path, *extra):
    return ["judge", "--responses", str(data), "--out", str(out), "--backend", "openai", "--base-url", url,
            "--judge-model", "scripted-judge", "--max-retries", "1", "--backoff", "0.01", "--concurrency", "1",
            "--cache-dir", str(tmp_path / "cache"), "--bootstrap-samples", "50", *extra]  # fmt: skip


def test_a_judge_that_never_answers_fails_the_run_and_a_rerun_completes_it(server, tmp_path, capsys):
    items = many_answers("a", 12)
    data = responses_file(tmp_path / "answers.jsonl", items)
    out = tmp_path / "judge"
    code = main(judge_argv(data, out, closed_port_url(), tmp_path))
    captured = capsys.readouterr()
    err = [line for line in captured.err.splitlines() if not line.startswith("warning:")]
    assert code == 3, captured.err
    # First, how many and why: 8 refused connections in a row stop the run; the other 4 were never sent.
    assert err[0].startswith("tunescope judge: incomplete: 12 of 12 judge requests got no reply"), err
    assert "connection refused: 8" in err[0] and "not sent (stopped after too many failures in a row): 4" in err[0]
    summary = json.loads((out / "judge_summary.json").read_text())
    assert summary["complete"] is False
    assert summary["unanswered"] == {
        "count": 12, "of": 12,
        "by_reason": {"connection refused": 8, "not sent (stopped after too many failures in a row)": 4},
    }  # fmt: skip
    assert summary["files"]["plots"] == [] and not list(out.glob("*.png"))  # no plot over zero judgements

    # The endpoint works now (--base-url may change on a rerun): everything is asked once, and plotted.
    assert main(judge_argv(data, out, server.url, tmp_path)) == 0
    summary = json.loads((out / "judge_summary.json").read_text())
    assert summary["complete"] is True and summary["models"]["answers"]["complete"] == 12
    assert sorted(path.name for path in out.glob("*.png")) == ["bars.png", "radar.png"]
    assert server.count() == 12 and all(server.count(item) == 1 for item in items)


def test_a_partly_answered_run_is_completed_without_asking_again(server, tmp_path, capsys):
    items = many_answers("a", 6)
    data = responses_file(tmp_path / "answers.jsonl", items)
    out = tmp_path / "judge"
    server.down = {"a1", "a4"}
    assert main(judge_argv(data, out, server.url, tmp_path)) == 3
    err = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("warning:")]
    assert "2 of 6 judge requests got no reply (HTTP 503: 2)" in err[0]
    assert not list(out.glob("*.png"))  # a figure of 4 answers out of 6 would pass for the result

    server.down = set()
    asked = {item: server.count(item) for item in items}
    assert main(judge_argv(data, out, server.url, tmp_path)) == 0
    assert {item: server.count(item) - asked[item] for item in items} == {
        "a0": 0, "a1": 1, "a2": 0, "a3": 0, "a4": 1, "a5": 0,
    }  # fmt: skip
    assert json.loads((out / "judge_summary.json").read_text())["complete"] is True
    assert (out / "radar.png").is_file()


def test_a_cache_written_before_json_modes_were_recorded_still_opens(tmp_path):
    import sqlite3

    from tunescope.llm import Reply, ReplyCache

    old = sqlite3.connect(tmp_path / "replies.sqlite")
    old.execute(
        "CREATE TABLE replies (key TEXT PRIMARY KEY, judge_model TEXT, text TEXT, finish_reason TEXT, usage TEXT, "
        "created REAL)"
    )
    old.execute("INSERT INTO replies VALUES ('k1', 'm', 'old reply', 'stop', '{}', 0)")
    old.commit()
    old.close()
    cache = ReplyCache(tmp_path)
    try:
        assert cache.get("k1").text == "old reply" and cache.get("k1").json_mode is None
        cache.put("k2", "m", Reply("new reply", json_mode="json_object"))
        assert cache.get("k2").json_mode == "json_object"
        assert cache.json_mode("http://h:1/v1/chat/completions", "m") is None
        cache.remember_json_mode("http://h:1/v1/chat/completions", "m", "json_object_schema")
        assert cache.json_mode("http://h:1/v1/chat/completions", "m") == "json_object_schema"
        assert cache.json_mode("http://h:1/v1/chat/completions", "other") is None
        cache.remember_json_mode("http://h:1/v1/chat/completions", "m", None)
        assert cache.json_mode("http://h:1/v1/chat/completions", "m") is None
    finally:
        cache.close()


def test_a_server_that_does_not_answer_is_not_probed_once_per_waiting_request(server, tmp_path):
    data = responses_file(tmp_path / "answers.jsonl", many_answers("a", 4))
    down = config(server, tmp_path, [data], base_url=closed_port_url(), concurrency=4, max_retries=2, backoff=0.5)
    result = judge(down)
    # One request tried to find the JSON mode (3 attempts); the three waiting for it failed with it at
    # once instead of spending their own retries one after another.
    assert sorted(record["attempts"] for record in result.stats.records.values()) == [0, 0, 0, 3]
    assert result.summary["unanswered"]["by_reason"] == {"connection refused": 4} and not result.complete
