"""`tunescope simplify`: the copy-verbatim rules, record shapes, a real HTTP rewriter on 127.0.0.1, and resuming."""

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tunescope.cli import main
from tunescope.errors import IncompleteRun, TunescopeError, UserError
from tunescope.llm import Reply
from tunescope.simplify import SimplifyConfig, keep_reason, simplify
from tunescope.simplify.rules import clean_reply, response_slots, rewrite_messages, with_responses

from conftest import rows_in_format, write_jsonl

LONG = "Paris is the capital of France. It has been the capital for centuries, and it is also its largest city."


def first_sentence(text: str) -> str:
    return text.split(". ")[0].rstrip(".") + "."


def response_in(prompt: str) -> str:
    return re.search(r"## Response:\n(.*)\n\nReply with", prompt, re.S).group(1)


class Rewriter:
    """An OpenAI-compatible endpoint that 'simplifies' to the first sentence; scripted failures by count."""

    def __init__(self, fail_after: int | None = None):
        self.fail_after = fail_after
        self.asked: list[str] = []  # the response text of every request received
        self.lock = threading.Lock()
        rewriter = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                rewriter.handle(self, body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def handle(self, handler, body):
        original = response_in(body["messages"][-1]["content"])
        with self.lock:
            self.asked.append(original)
            failing = self.fail_after is not None and len(self.asked) > self.fail_after
        if failing:
            status, payload = 500, {"error": {"message": "overloaded"}}
        elif "TOO-LONG" in original:  # a refusal of this request that asking again cannot change
            status, payload = 400, {"error": {"message": "This model's maximum context length is 2048 tokens."}}
        elif "ODD-PARAMETER" in original:  # a server that reports an unsupported parameter as a server error
            status, payload = 500, {"error": {"message": "Unsupported parameter: 'max_tokens'"}}
        else:
            text = "Simplified response: " + first_sentence(original)
            choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
            status, payload = 200, {"choices": [choice], "usage": {"prompt_tokens": 9, "completion_tokens": 3}}
        data = json.dumps(payload).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)


@pytest.fixture
def rewriter():
    server = Rewriter()
    yield server
    server.close()


def dataset_rows(n: int = 6) -> list[dict]:
    """Alpaca records: n long answers to rewrite, plus one code answer and one summary."""
    rows = [{"id": f"r{i}", "instruction": f"Tell me about city {i}.", "input": "", "output": f"City {i}. " + LONG}
            for i in range(n)]  # fmt: skip
    rows.append({"id": "code", "instruction": "Print hello.", "input": "", "output": "```\nprint('hello')\n```"})
    rows.append({"id": "summary", "instruction": "Summarize this text.", "input": LONG, "output": LONG})
    return rows


def openai_config(tmp_path, url, **settings) -> SimplifyConfig:
    return SimplifyConfig(data=str(tmp_path / "train.jsonl"), out=str(tmp_path / "simple.jsonl"), backend="openai",
                          base_url=url, rewriter_model="rewriter", max_retries=0, backoff=0, concurrency=2,
                          **settings)  # fmt: skip


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# -- rules ----------------------------------------------------------------------------------


def test_the_copy_verbatim_rules():
    assert keep_reason("Fix this.", "Try:\n```python\nx = 1\n```") == "code"
    assert keep_reason("Write a Python script that sorts a list.", "Use sorted().") == "code"
    assert keep_reason("Can you summarise the article?", LONG) == "summary"
    assert keep_reason("TL;DR please", LONG) == "summary"
    assert keep_reason("Anything?", "   ") == "empty"
    assert keep_reason("Anything?", "Short.", min_chars=10) == "short"
    assert keep_reason("What is the function of the liver?", LONG) is None  # "function" alone is not code
    assert keep_reason("Summarize it", LONG, keep_summaries=False) is None
    assert keep_reason("Fix", "```\nx\n```", keep_code=False) is None
    assert clean_reply("\n## Simplified response:\nParis.\n") == "Paris."
    assert clean_reply("**Simplified Response:** Paris.") == "Paris."
    assert clean_reply("Paris is simple.") == "Paris is simple."
    messages = rewrite_messages("Q ${response}", "A ${query}")
    assert "Q ${response}" in messages[-1]["content"] and "A ${query}" in messages[-1]["content"]  # one-pass fill


@pytest.mark.parametrize("data_format", ["alpaca", "sharegpt", "messages", "prompt_completion"])
def test_only_response_texts_change_in_every_record_shape(data_format):
    record = rows_in_format(data_format)[0]
    slots = response_slots(record, data_format)
    assert [slot.query for slot in slots] == ["What is the capital of France?"]
    assert [slot.text for slot in slots] == ["The capital of France is Paris."]
    changed = with_responses(record, data_format, ["Paris."])
    assert changed != record and record == rows_in_format(data_format)[0]  # a copy; the original is untouched
    assert json.dumps(changed).replace("Paris.", "The capital of France is Paris.", 1) == json.dumps(record)


def test_multi_turn_records_rewrite_each_assistant_turn_with_its_own_query():
    record = {"messages": [{"role": "user", "content": "Q1"}, {"role": "assistant", "content": "A1"},
                           {"role": "user", "content": "Q2"}, {"role": "assistant", "content": "A2"}]}  # fmt: skip
    assert [(slot.query, slot.text) for slot in response_slots(record, "messages")] == [("Q1", "A1"), ("Q2", "A2")]
    assert [m["content"] for m in with_responses(record, "messages", ["x", "y"])["messages"]] == ["Q1", "x", "Q2", "y"]


# -- end to end over HTTP -------------------------------------------------------------------


def test_rewrites_through_a_real_http_endpoint(tmp_path, rewriter):
    rows = dataset_rows()
    write_jsonl(tmp_path / "train.jsonl", rows)
    result = simplify(openai_config(tmp_path, rewriter.url))
    out = read_jsonl(result.out)
    assert [set(row) for row in out] == [set(row) for row in rows]  # same record shape
    assert [row["id"] for row in out] == [row["id"] for row in rows]
    for before, after in zip(rows[:6], out[:6], strict=True):
        assert after["output"] == first_sentence(before["output"])  # the label the model echoed is gone
        assert after["instruction"] == before["instruction"]
    assert out[6] == rows[6] and out[7] == rows[7]  # code and summary copied verbatim, not even asked
    assert sorted(rewriter.asked) == sorted(row["output"] for row in rows[:6])
    provenance = json.loads(result.provenance_path.read_text())
    assert provenance == result.provenance
    assert provenance["responses"]["actions"] == {"kept_code": 1, "kept_summary": 1, "rewritten": 6}
    assert (
        provenance["responses"]["rewritten_mean_chars_after"] < provenance["responses"]["rewritten_mean_chars_before"]
    )
    assert provenance["source"]["sha256"] and provenance["prompt"]["sha256"]
    assert provenance["rewriter"]["model"] == "rewriter" and provenance["rewriter"]["base_url"].startswith(rewriter.url)
    rewrites = read_jsonl(result.rewrites_path)
    assert rewrites[0]["kind"] == "header" and len(rewrites) == 1 + len(rows)
    assert not (tmp_path / "simple.part.jsonl").exists()
    with pytest.raises(UserError, match="already exists"):
        simplify(openai_config(tmp_path, rewriter.url))


def test_failed_requests_are_retried_by_a_rerun_and_finished_ones_never_redone(capsys, tmp_path):
    rows = dataset_rows(8)
    write_jsonl(tmp_path / "train.jsonl", rows)
    flaky = Rewriter(fail_after=3)
    try:
        args = ["simplify", "--data", str(tmp_path / "train.jsonl"), "--out", str(tmp_path / "simple.jsonl"),
                "--backend", "openai", "--base-url", flaky.url, "--rewriter-model", "rewriter", "--max-retries", "0",
                "--concurrency", "1"]  # fmt: skip
        assert main(args) == 3  # incomplete: rerun to complete
        err = capsys.readouterr().err.strip().splitlines()  # a progress line, then the one-line error
        assert "Traceback" not in "".join(err)
        assert err[-1].startswith("tunescope simplify: incomplete: 5 of 10 records could not be rewritten")
        assert "(HTTP 500: 5; first:" in err[-1]
        assert "simple.part.jsonl" in err[-1]
        assert not (tmp_path / "simple.jsonl").exists()
        finished = read_jsonl(tmp_path / "simple.part.jsonl")[1:]
        assert len(finished) == 3 + 2  # three rewritten, plus the code and summary records that needed no request
        flaky.fail_after = None
        assert main(args) == 0
        # Each response was answered once: the five failures were asked twice, the three successes once.
        answered = flaky.asked[:3] + flaky.asked[8:]
        assert sorted(answered) == sorted(row["output"] for row in rows[:8])
        assert len(flaky.asked) == 8 + 5
    finally:
        flaky.close()
    assert [row["output"] for row in read_jsonl(tmp_path / "simple.jsonl")[:8]] == [
        first_sentence(row["output"]) for row in rows[:8]
    ]


class CrashingBackend:
    """A judge-style backend that dies (as a process would) after ``crash_after`` replies."""

    max_concurrency = 1
    uses_schema = False

    def __init__(self, crash_after: int | None = None):
        self.crash_after = crash_after
        self.asked: list[str] = []

    def identity(self):
        return {"backend": "test", "model": "first-sentence"}

    def describe(self):
        return self.identity()

    def complete(self, messages, schema=None):
        if self.crash_after is not None and len(self.asked) >= self.crash_after:
            raise RuntimeError("simulated crash")
        original = response_in(messages[-1]["content"])
        self.asked.append(original)
        return Reply(text=first_sentence(original), finish_reason="stop")

    def close(self):
        pass


def test_a_crash_resumes_without_redoing_any_finished_record(tmp_path):
    rows = dataset_rows(10)
    write_jsonl(tmp_path / "train.jsonl", rows)
    config = SimplifyConfig(data=str(tmp_path / "train.jsonl"), out=str(tmp_path / "simple.jsonl"))
    first = CrashingBackend(crash_after=4)
    with pytest.raises(RuntimeError, match="simulated crash"):
        simplify(config, backend=first)
    part = tmp_path / "simple.part.jsonl"
    assert [record["row"] for record in read_jsonl(part)[1:]] == [0, 1, 2, 3]
    with part.open("a") as handle:
        handle.write('{"row": 4, "id": "r4", "respo')  # a line cut short by the crash
    second = CrashingBackend()
    result = simplify(config, backend=second)
    assert set(first.asked).isdisjoint(second.asked)  # no finished record was asked again
    assert sorted(first.asked + second.asked) == sorted(row["output"] for row in rows[:10])
    out = read_jsonl(result.out)
    assert len(out) == len(rows) and [row["output"] for row in out[:10]] == [
        first_sentence(r["output"]) for r in rows[:10]
    ]
    reference = simplify(
        config.model_copy(update={"out": str(tmp_path / "reference.jsonl")}), backend=CrashingBackend()
    )
    assert result.out.read_text() == reference.out.read_text()  # identical to an uninterrupted run


def test_progress_of_other_settings_and_bad_input_are_one_line_errors(capsys, tmp_path):
    write_jsonl(tmp_path / "train.jsonl", dataset_rows(3))
    config = SimplifyConfig(data=str(tmp_path / "train.jsonl"), out=str(tmp_path / "simple.jsonl"))
    with pytest.raises(RuntimeError):
        simplify(config, backend=CrashingBackend(crash_after=1))
    with pytest.raises(UserError, match=r"simple.part.jsonl: holds rewrites made with other settings \(settings"):
        simplify(config.model_copy(update={"min_chars": 5}), backend=CrashingBackend())
    assert simplify(config.model_copy(update={"min_chars": 5}), backend=CrashingBackend(), overwrite=True).out.exists()

    (tmp_path / "bad.jsonl").write_text('{"instruction": "q", "output": "a"}\n{"instruction": "q", "output": 5}\n')
    code = main(["simplify", "--data", str(tmp_path / "bad.jsonl"), "--out", str(tmp_path / "o.jsonl")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "bad.jsonl line 2" in err[0] and "'output'" in err[0]
    code = main(["simplify", "--data", str(tmp_path / "train.jsonl"), "--out", str(tmp_path / "o.jsonl"),
                 "--backend", "openai"])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--base-url and --rewriter-model" in err[0]
    with pytest.raises(TunescopeError):
        simplify(config.model_copy(update={"out": str(tmp_path / "x.jsonl")}), backend=_RefusingBackend())


class _RefusingBackend(CrashingBackend):
    def complete(self, messages, schema=None):
        from tunescope.llm import BackendError

        raise BackendError("refused with HTTP 401")


def test_a_local_model_rewrites_through_the_hf_backend(tmp_path, tiny_model_dir):
    rows = dataset_rows(2)
    write_jsonl(tmp_path / "train.jsonl", rows)
    config = SimplifyConfig(data=str(tmp_path / "train.jsonl"), out=str(tmp_path / "simple.jsonl"),
                            rewriter_model=str(tiny_model_dir), max_tokens=4, keep_summaries=False)  # fmt: skip
    result = simplify(config)
    out = read_jsonl(result.out)
    assert len(out) == len(rows) and out[2] == rows[2]  # the code answer is still copied verbatim
    rewriter = result.provenance["rewriter"]
    assert rewriter["backend"] == "hf" and rewriter["stand_in"] and rewriter["max_tokens"] == 4
    actions = result.provenance["responses"]["actions"]
    assert sum(actions.values()) == 4 and actions["kept_code"] == 1 and "kept_summary" not in actions
    for entry in read_jsonl(result.rewrites_path)[1:]:
        for response in entry["responses"]:  # a 4-token reply is either cut (original kept) or short and used
            assert response["action"] in {"rewritten", "kept_reply_cut", "kept_empty_reply", "kept_code"}
            assert response["text"] == response["original"] or response["action"] == "rewritten"


def test_refusals_that_will_not_change_cost_one_request_each(capsys, tmp_path):
    rows = dataset_rows(4)
    rows[1]["output"] = "TOO-LONG. " + LONG
    rows[2]["output"] = "ODD-PARAMETER. " + LONG
    write_jsonl(tmp_path / "train.jsonl", rows)
    server = Rewriter()
    try:
        with pytest.raises(IncompleteRun, match=r"2 of 6 records could not be rewritten \((HTTP 400: 1, HTTP 500: 1|"
                           r"HTTP 500: 1, HTTP 400: 1);"):  # fmt: skip
            simplify(openai_config(tmp_path, server.url).model_copy(update={"max_retries": 4, "backoff": 0.01}))
        assert sum("TOO-LONG" in text for text in server.asked) == 1  # not retried: 1 request, not 5
        assert sum("ODD-PARAMETER" in text for text in server.asked) == 1
        assert len(server.asked) == 4  # the two others were rewritten once each
    finally:
        server.close()
