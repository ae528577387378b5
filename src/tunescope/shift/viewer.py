"""viewer.html: every response with its tokens coloured by class, one self-contained file.

Hovering over or clicking a token shows both models' top candidates with probabilities, the KL
and the rank; each response also shows the exact prompt each model read. Model output is
untrusted text: the template escapes everything it prints (autoescape), the per-token data is
embedded with ``tojson`` (which escapes ``<``, ``>``, ``&`` and quotes), and the script only ever
assigns text with ``textContent``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import numpy as np

from tunescope.files import atomic_path

MODE_NOTES = {
    "exact": "full-vocabulary distributions; rank is 1-indexed (1 = the base model's top choice); "
    "KL(base‖tuned) in nats",
    "aligntds": "AlignTDS-compatible numbers, not exact: top lists renormalised among themselves, KL truncated to "
    "shared candidates (can be negative), rank = AlignTDS's 0-indexed TR of the tuned top-1, capped",
}


@dataclass(frozen=True)
class ExampleView:
    """What the viewer shows of one response."""

    example_id: str
    """The response's id."""
    index: int
    """Its position in the responses file."""
    tuned_prompt: str
    """The tuned model's prompt, decoded with special tokens."""
    base_prompt: str
    """The base model's prompt."""
    tokens: list[dict[str, Any]]
    """Per token: ``text``, ``klass`` and ``differs`` (the two models' top-1 differ)."""
    detail: dict[str, Any]
    """Per-token numbers and candidate lists, embedded as JSON for the script."""
    stats: dict[str, Any]
    """Token count, mean KL and shifted share of this response."""
    base_answer: str | None = None
    """The base model's own answer to the same prompt (untrusted text), when given."""


def _short(value: float) -> float | None:
    value = float(value)
    return None if np.isnan(value) else float(f"{value:.4g}")


def example_view(
    record: dict[str, Any],
    rows: dict[str, np.ndarray],
    decode: Callable[[list[int]], list[str]],
    base_answer: str | None = None,
) -> ExampleView:
    """Build one response's view from its examples.jsonl record and its tokens.parquet rows."""
    response = record["response"]
    token_ids = rows["token_id"]
    candidate_ids = {int(i) for column in ("base_top_ids", "tuned_top_ids") for ids in rows[column] for i in ids}
    vocabulary_ids = sorted(candidate_ids | {int(i) for i in token_ids})
    tokens, numbers = [], []
    for i, token_id in enumerate(token_ids):
        text = response[rows["char_start"][i] : rows["char_end"][i]] or str(rows["token"][i])
        base_top = [int(t) for t in rows["base_top_ids"][i]]
        tuned_top = [int(t) for t in rows["tuned_top_ids"][i]]
        tokens.append({"text": text, "klass": rows["klass"][i], "differs": bool(base_top[:1] != tuned_top[:1])})
        numbers.append(
            [
                int(token_id), _short(rows["kl"][i]), _short(rows["kl_reverse"][i]), int(rows["base_rank"][i]),
                _short(rows["base_prob"][i]), _short(rows["tuned_prob"][i]), _short(rows["base_entropy"][i]),
                _short(rows["tuned_entropy"][i]), base_top, [_short(p) for p in rows["base_top_probs"][i]],
                tuned_top, [_short(p) for p in rows["tuned_top_probs"][i]],
            ]
        )  # fmt: skip
    detail = {"vocab": dict(zip(map(str, vocabulary_ids), decode(vocabulary_ids), strict=True)), "tokens": numbers}
    stats = {
        "n_tokens": len(token_ids),
        "kl_mean": _short(np.mean(rows["kl"])),
        "shifted": _short(np.mean(rows["klass"] == "shifted")),
    }
    return ExampleView(
        record["id"], record["index"], record["tuned_prompt"], record["base_prompt"], tokens, detail, stats, base_answer
    )


TEMPLATE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>tunescope shift: {{ models.tuned.spec }} vs {{ models.base.spec }}</title>
<style>
body { font: 15px/1.5 system-ui, sans-serif; margin: 0; color: #1f2328; }
header { padding: 1rem 1.5rem; background: #f6f8fa; border-bottom: 1px solid #d0d7de; }
h1 { font-size: 1.3rem; margin: 0 0 .4rem; } h2 { font-size: 1.05rem; margin: 0 0 .4rem; }
.layout { display: grid; grid-template-columns: minmax(0, 1fr) 30rem; gap: 1.5rem; padding: 1rem 1.5rem; }
#panel { position: sticky; top: 1rem; align-self: start; border: 1px solid #d0d7de; border-radius: 6px;
  padding: .8rem; font-size: 13px; max-height: calc(100vh - 2rem); overflow: auto; }
section.example { border-bottom: 1px solid #d0d7de; padding: .8rem 0; }
.response { white-space: pre-wrap; font-family: ui-monospace, monospace; font-size: 14px; line-height: 1.9; }
.pair { display: grid; grid-template-columns: 1fr 1fr; gap: 1em; } .pair .who { margin: 0; color: #555; }
.base-answer { background: #f4f4f4; }
.tok { border-radius: 3px; cursor: pointer; }
.tok.unshifted { background: #dbeafe; } .tok.marginal { background: #fde68a; } .tok.shifted { background: #fca5a5; }
.tok.differs { text-decoration: underline; } .tok.active { outline: 2px solid #1f2328; }
pre { white-space: pre-wrap; background: #f6f8fa; padding: .5rem; border-radius: 4px; font-size: 13px; }
table { border-collapse: collapse; } td, th { padding: .1rem .5rem; text-align: left; }
.stats td:first-child { color: #57606a; } small { color: #57606a; font-weight: normal; }
.lists { display: grid; grid-template-columns: minmax(0, 1fr) minmax(0, 1fr); gap: .5rem; }
.lists td { overflow-wrap: anywhere; } .fed { font-weight: bold; }
</style>
</head>
<body>
<header>
<h1>Token shift: {{ models.tuned.spec }} (tuned) vs {{ models.base.spec }} (base)</h1>
<p>Mode <b>{{ summary.mode }}</b>: {{ mode_note }}. Base prompt: <b>{{ base_prompt }}</b>. Pairing:
{{ models.pairing }}, {{ models.precision }}.</p>
<table class="stats">
<tr><td>responses / tokens</td><td>{{ summary.n_examples }} / {{ summary.n_tokens }}</td></tr>
<tr><td>unshifted / marginal / shifted</td><td>{{ pct(summary.unshifted) }} / {{ pct(summary.marginal) }} /
{{ pct(summary.shifted) }}</td></tr>
<tr><td>mean KL / base prob / base rank</td><td>{{ summary.kl_mean }} / {{ summary.base_prob_mean }} /
{{ summary.base_rank_mean }}</td></tr>
</table>
<p><span class="tok unshifted">unshifted</span> <span class="tok marginal">marginal</span>
<span class="tok shifted">shifted</span> <span class="tok differs">underlined</span>: the two models' top choices
differ. Hover over or click a token for details.
{% if shown < summary.n_examples %}Showing the first {{ shown }} of {{ summary.n_examples }} responses
(longest first; all are in tokens.parquet).{% endif %}</p>
</header>
<div class="layout">
<main>
{% for ex in examples %}{% set e = loop.index0 %}
<section class="example" id="response-{{ ex.index }}">
<h2>{{ ex.example_id }} <small>#{{ ex.index }} · {{ ex.stats.n_tokens }} tokens · mean KL {{ ex.stats.kl_mean }}
· shifted {{ pct(ex.stats.shifted) }}</small></h2>
<details><summary>Prompts each model read</summary>
<p>Tuned model:</p><pre>{{ ex.tuned_prompt }}</pre>
<p>Base model:</p><pre>{{ ex.base_prompt }}</pre>
</details>
{% if ex.base_answer is not none %}<div class="pair"><div><p class="who">Base model's own answer (not scored)</p>
<div class="response base-answer">{{ ex.base_answer }}</div></div>
<div><p class="who">Tuned model's answer</p>{% endif %}
<div class="response">{% for t in ex.tokens %}<span class="tok {{ t.klass }}{{ ' differs' if t.differs else '' }}"
data-e="{{ e }}" data-i="{{ loop.index0 }}">{{ t.text }}</span>{% endfor %}</div>
{% if ex.base_answer is not none %}</div></div>{% endif %}
<script type="application/json" id="data-{{ e }}">{{ ex.detail | tojson }}</script>
</section>
{% endfor %}
</main>
<aside id="panel">Hover over or click a token.</aside>
</div>
<script>
"use strict";
const MODE = {{ summary.mode | tojson }};
const parsed = {};
function data(e) {
  if (!(e in parsed)) parsed[e] = JSON.parse(document.getElementById("data-" + e).textContent);
  return parsed[e];
}
function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  if (cls) node.className = cls;
  return node;
}
function shown(text) { return JSON.stringify(text); }
function pct(p) { return p === null ? "n/a" : (100 * p).toPrecision(3) + "%"; }
function list(title, ids, probs, vocab, fed) {
  const box = el("div");
  box.append(el("b", title));
  const table = el("table");
  ids.forEach((id, k) => {
    const row = el("tr", undefined, id === fed ? "fed" : "");
    row.append(el("td", String(k + 1)), el("td", shown(vocab[id])), el("td", pct(probs[k])));
    table.append(row);
  });
  box.append(table);
  return box;
}
let pinned = null;
function show(tok) {
  const d = data(tok.dataset.e), t = d.tokens[+tok.dataset.i];
  const [id, kl, klr, rank, bp, tp, be, te, bIds, bProbs, tIds, tProbs] = t;
  const panel = document.getElementById("panel");
  panel.replaceChildren();
  panel.append(el("h2", shown(d.vocab[id])));
  const rows = [
    ["class", tok.classList[1]],
    [MODE === "exact" ? "base rank (1 = top)" : "TR (0-indexed)", String(rank)],
    [MODE === "exact" ? "base prob" : "TP (renormalised)", pct(bp)],
    [MODE === "exact" ? "tuned prob" : "tuned top-1 weight", pct(tp)],
    [MODE === "exact" ? "KL(base‖tuned)" : "KL (AlignTDS, truncated)", String(kl)],
  ];
  if (klr !== null) rows.push(["KL(tuned‖base)", String(klr)]);
  if (be !== null) rows.push(["entropy base / tuned", be + " / " + te]);
  const table = el("table", undefined, "stats");
  rows.forEach(([k, v]) => { const r = el("tr"); r.append(el("td", k), el("td", v)); table.append(r); });
  const lists = el("div", undefined, "lists");
  lists.append(list("base", bIds, bProbs, d.vocab, id), list("tuned", tIds, tProbs, d.vocab, id));
  panel.append(table, lists);
}
document.addEventListener("mouseover", (ev) => {
  const tok = ev.target.closest(".tok[data-e]");
  if (tok && !pinned) show(tok);
});
document.addEventListener("click", (ev) => {
  const tok = ev.target.closest(".tok[data-e]");
  if (pinned) pinned.classList.remove("active");
  pinned = tok && tok !== pinned ? tok : null;
  if (pinned) { pinned.classList.add("active"); show(pinned); }
});
</script>
</body>
</html>
"""


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def render_viewer(
    path: str | Path,
    *,
    summary: dict[str, Any],
    examples: Iterable[ExampleView],
    shown: int,
) -> None:
    """Write viewer.html for ``examples`` (streamed, so memory stays per response)."""
    environment = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    template = environment.from_string(TEMPLATE)
    stream: Iterator[str] = template.generate(
        summary=summary,
        models=summary["models"],
        base_prompt=summary["settings"]["base_prompt"],
        mode_note=MODE_NOTES[summary["mode"]],
        examples=examples,
        shown=shown,
        pct=_percent,
    )
    with atomic_path(path) as tmp, tmp.open("w", encoding="utf-8") as handle:
        handle.writelines(stream)
