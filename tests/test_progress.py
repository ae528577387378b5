"""Progress: a bar with an ETA on a terminal, plain lines elsewhere."""

import io
import json

from tunescope import progress as progress_module
from tunescope.cli import main
from tunescope.progress import progress, progress_line

from conftest import PAIRS, write_jsonl


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_line_says_how_far_how_fast_and_how_long_is_left():
    assert (
        progress_line("shift", 250, 1000, "tokens", 5.0) == "shift: 250/1000 tokens (25%), 50 tokens/s, about 0:15 left"
    )
    assert progress_line("judge", 0, 8, "judgements", 1.0) == "judge: 0/8 judgements (0%)"
    assert progress_line("probe", 3, 3, "models", 7200.0).endswith("(100%), 0.000417 models/s")


def test_plain_lines_when_not_a_terminal():
    stream = io.StringIO()
    with progress("generate", 4, "responses", stream=stream, every_s=0) as shown:
        for _ in range(4):
            shown(1)
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("generate: 1/4 responses (25%)") and "left" in lines[0]
    assert lines[-1].startswith("generate: 4/4 responses (100%)")
    assert "\r" not in stream.getvalue()


def test_a_short_step_stays_silent_and_a_disabled_one_too():
    for enabled, every_s in ((True, 3600), (False, 0)):
        stream = io.StringIO()
        with progress("generate", 4, "responses", stream=stream, every_s=every_s, enabled=enabled) as shown:
            shown(4)
        assert stream.getvalue() == ""


def test_a_bar_with_an_eta_on_a_terminal():
    stream = Terminal()
    with progress("shift", 10, "tokens", stream=stream) as shown:
        shown(5)
    drawn = stream.getvalue()
    assert "shift:" in drawn and "/10 [" in drawn and "<" in drawn  # tqdm: done/total [elapsed<remaining]


def test_generate_reports_progress_in_a_log(tiny_model_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(progress_module, "LINE_EVERY_S", 0.0)
    prompts = [{"id": f"p{i}", "messages": [{"role": "user", "content": q}]} for i, (q, _) in enumerate(PAIRS[:3])]
    data = write_jsonl(tmp_path / "prompts.jsonl", prompts)
    out = tmp_path / "responses.jsonl"
    argv = ["generate", "--model", str(tiny_model_dir), "--data", str(data), "--out", str(out)]
    assert main([*argv, "--max-new-tokens", "4", "--batch-size", "1"]) == 0
    err = capsys.readouterr().err
    assert "generate: 1/3 responses" in err and "generate: 3/3 responses (100%)" in err
    assert len(out.read_text().splitlines()) == 3 and json.loads(out.read_text().splitlines()[0])["output"] is not None
