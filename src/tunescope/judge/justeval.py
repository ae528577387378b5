"""Import and export just-eval's judged records, so published outputs can be re-scored.

just-eval (docs/method.md#just-eval-formats) writes a JSON list with one record per item: ``id``,
``input`` (the instruction), ``output_cand``, ``generator_cand``, ``eval_config`` (``mode``, judge model,
``max_words``), the rendered ``prompt``, the judge's raw text ``result`` and ``parsed_result``
(aspect -> ``{"reason", "score"}``, scores as strings).

* :func:`import_justeval` re-reads the raw ``result`` of each record with tunescope's strict
  parser, so a published run gets failure counts and intervals instead of "N/A" read as 5.0.
* :func:`export_justeval` writes tunescope's judgements in that format, for tools that read it.

(just-eval's *input* format, ``instruction``/``output``/``generator``, is read directly as
responses by :mod:`tunescope.judge.responses`.)
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from tunescope.data.readers import read_dataset
from tunescope.errors import UserError
from tunescope.generate.store import ResponseRecord
from tunescope.judge.prompts import ASPECTS, SAFETY_ASPECTS, render_query, score_messages
from tunescope.judge.requests import JudgeTask, judgement_record
from tunescope.llm import Reply

MODES = {"score_multi": "score", "score_safety": "safety"}
"""just-eval's mode names and ours."""
_JUSTEVAL_MODES = {ours: theirs for theirs, ours in MODES.items()}


def _judge_model(eval_config: dict[str, Any]) -> str:
    return str(eval_config.get("gpt_model") or eval_config.get("model") or "unknown")


def import_justeval(path: str | Path) -> list[dict[str, Any]]:
    """Judgement records from a just-eval output file, parsed strictly from the raw ``result``.

    A record without raw text but with ``parsed_result`` is parsed from that object instead.

    Raises:
        UserError: for a missing or malformed file, a record without ``id`` or judge output, a
            mode other than score_multi and score_safety, or records of both modes at once.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"--import-justeval {path}: file not found")
    raw = read_dataset(str(path))
    if not raw.records:
        raise UserError(f"{path}: no records in the file")
    records = []
    modes = set()
    for item in raw.records:
        fields, locator = item.fields, item.locator
        eval_config = fields.get("eval_config") if isinstance(fields.get("eval_config"), dict) else {}
        their_mode = eval_config.get("mode", "score_multi")
        if their_mode not in MODES:
            raise UserError(f"{locator}: just-eval mode {their_mode!r} is not supported (only {', '.join(MODES)})")
        mode = MODES[their_mode]
        modes.add(mode)
        if len(modes) > 1:
            raise UserError(f"{locator}: the file mixes score_multi and score_safety records; import them separately")
        if fields.get("id") is None:
            raise UserError(f"{locator}: record is missing field 'id'")
        text = fields.get("result")
        if not isinstance(text, str):
            parsed = fields.get("parsed_result")
            if parsed is None and "result" not in fields:
                raise UserError(f"{locator}: record has neither 'result' nor 'parsed_result'")
            text = json.dumps(parsed) if parsed is not None else ""
        generator = str(fields.get("generator_cand") or fields.get("generator") or "candidate")
        output = fields.get("output_cand")
        prompt_text = str(fields.get("prompt") or "")
        task = JudgeTask(
            key=f"{mode}/{generator}/{fields['id']}",
            mode=mode,
            aspects=ASPECTS if mode == "score" else SAFETY_ASPECTS,
            messages=[],
            request_key=hashlib.sha256(prompt_text.encode("utf-8")).hexdigest(),
            meta={
                "item_id": str(fields["id"]),
                "model": generator,
                "tags": [],
                "response_words": len(output.split()) if isinstance(output, str) else None,
                "response_tokens": None,
            },
        )
        judge = {"backend": "just-eval import", "model": _judge_model(eval_config), "stand_in": False}
        prompt = {"name": f"just-eval {their_mode}", "version": None, "sha256": task.request_key}
        records.append(judgement_record(task, judge, prompt, reply=Reply(text=text, attempts=0)))
    return records


def export_justeval(
    records: list[dict[str, Any]], responses: dict[tuple[str, str], ResponseRecord]
) -> list[dict[str, Any]]:
    """Convert score or safety records to just-eval's judged-record format.

    Args:
        records: Judgement records (score or safety mode).
        responses: The judged answers, keyed by (model label, item id).
    """
    exported = []
    for record in records:
        response = responses[(record["model"], record["item_id"])]
        messages = score_messages(record["mode"], response.messages, response.output)
        parsed: dict[str, Any] | None = None
        if record["status"] in ("ok", "partial"):
            parsed = {}
            for aspect, score in record["scores"].items():
                parsed[aspect] = {"reason": record["reasons"].get(aspect, ""), "score": str(score)}
            for aspect, kind in record["failures"].items():
                if kind == "na":
                    parsed[aspect] = {"reason": record["reasons"].get(aspect, ""), "score": "N/A"}
        exported.append(
            {
                "id": record["item_id"],
                "input": render_query(response.messages),
                "output_cand": response.output,
                "generator_cand": record["model"],
                "eval_config": {
                    "mode": _JUSTEVAL_MODES[record["mode"]],
                    "gpt_model": record["judge"]["model"],
                    "max_words": -1,
                },
                "prompt": messages[1]["content"],
                "result": record.get("raw"),
                "parsed_result": parsed,
            }
        )
    return exported
