"""The borrowing analysis as an HTML section, for the run report to embed (and a page of its own).

Model output (tokens, words, span texts, answers) is untrusted: everything is rendered through
jinja2 with autoescaping on, so no model text can become markup. The section's styles are scoped
to its ``ts-borrow`` class, so embedding it does not restyle the page around it.
"""

from __future__ import annotations

import functools
from typing import Any

import jinja2
from markupsafe import Markup

from tunescope.borrow.lexicon import CATEGORIES

SECTION = """\
<section class="ts-borrow">
<style>
.ts-borrow table{border-collapse:collapse;margin:.4em 0 1em}
.ts-borrow th,.ts-borrow td{border:1px solid #ccc;padding:.2em .5em;text-align:right;font-size:.9em}
.ts-borrow th:first-child,.ts-borrow td:first-child{text-align:left}
.ts-borrow .tok{display:inline-block;margin:.1em;padding:0 .3em;border-radius:3px;font-family:monospace;
white-space:pre;font-size:.85em}
.ts-borrow .style{background:#dbe9ff}.ts-borrow .content{background:#ffe2c6}
.ts-borrow .note{color:#555;font-size:.85em}.ts-borrow .span{font-family:monospace;white-space:pre-wrap}
</style>
<h{{ level }}>{{ title }}</h{{ level }}>
<p>Tuned model <code>{{ b.shift.tuned }}</code> against base <code>{{ b.shift.base }}</code>:
{{ b.shift.n_responses }} responses, {{ b.shift.n_tokens }} tokens ({{ b.shift.mode }} mode; {{ b.shift.classes }}).
Training set: <code>{{ b.training.source }}</code>, {{ b.training.n_examples }} examples.</p>

<h{{ level + 1 }}>Which tokens shift: style or content</h{{ level + 1 }}>
{% set st = b.style_tokens %}
<p><strong>Style share of shifted and marginal tokens: {{ st.headline.style_share | pct }}</strong>
({{ st.headline.n_tokens }} tokens). Style = discourse markers, function words and formatting.</p>
<table><tr><th>tokens at</th><th>n</th><th>style share [95% CI]</th>
{% for c in categories %}<th>{{ c }}</th>{% endfor %}</tr>
{% for name, g in st.share.items() %}<tr><td>{{ name | replace("_", " ") }}</td><td>{{ g.n }}</td>
<td>{{ g | share }}</td>{% for c in categories %}<td>{{ g.by_category[c] }}</td>{% endfor %}</tr>{% endfor %}
</table>
{% for title, key in [("Most frequent shifted tokens", "top_shifted"),
                      ("Most frequent marginal tokens", "top_marginal")] %}
<p>{{ title }} (<span class="tok style">style</span> <span class="tok content">content</span>, count):</p>
<p>{% for t in st[key][:top_shown] %}<span class="tok {{ 'style' if t.style else 'content' }}"
title="{{ t.category }}{% if t.words %}: {{ t.words | join(', ') }}{% endif %}">{{ t.token }} {{ t.count }}</span>
{% else %}none{% endfor %}</p>
{% endfor %}

<h{{ level + 1 }}>Borrowed words</h{{ level + 1 }}>
{% set bw = b.borrowed_words %}
<p>Share of words found in the training set ({{ bw.search_in }}), by the position their first token is at,
beside the baselines. The paper: {{ bw.paper.shifted | pct }} (shifted), {{ bw.paper.marginal | pct }}
(marginal), without baselines.</p>
<table><tr><th>words</th><th>n</th><th>all words [95% CI]</th><th>content words [95% CI]</th><th>distinct</th></tr>
{% for name, g in bw.tuned.items() %}<tr><td>tuned, at {{ name | replace("_", " ") }}</td><td>{{ g.all_words.n }}</td>
<td>{{ g.all_words | share }}</td><td>{{ g.content_words | share }}</td><td>{{ g.distinct_words.value | pct }}</td></tr>
{% endfor %}
{% if bw.base %}<tr><td>base model's answers</td><td>{{ bw.base.all_words.n }}</td>
<td>{{ bw.base.all_words | share }}</td><td>{{ bw.base.content_words | share }}</td>
<td>{{ bw.base.distinct_words.value | pct }}</td></tr>
{% else %}<tr><td>base model's answers</td><td colspan="4">not computed</td></tr>{% endif %}
</table>

<h{{ level + 1 }}>Style imitation: response length (Table 11)</h{{ level + 1 }}>
{% set im = b.imitation %}
<table><tr><th>responses</th><th>n</th><th>characters</th><th>words</th><th>tokens</th><th>cut by the limit</th></tr>
{% for label, key in [("training set", "training_responses"), ("tuned model", "tuned_outputs"),
("base model", "base_outputs")] %}{% set s = im[key] %}
{% if s %}<tr><td>{{ label }}</td><td>{{ s.n }}</td><td>{{ s.chars.mean }}</td><td>{{ s.words.mean }}</td>
<td>{{ s.tokens.mean }}</td><td>{{ s.n_truncated if s.n_truncated is defined else "" }}</td></tr>{% endif %}
{% endfor %}</table>
<p class="note">Means; {{ im.units.tokens }}. {{ im.note }}.</p>

{% if b.attribution %}{% set at = b.attribution %}
<h{{ level + 1 }}>Hallucination attribution (approximation)</h{{ level + 1 }}>
<p class="note">{{ at.note }}.</p>
<table><tr><th></th><th>this run</th><th>paper</th></tr>
<tr><td>spans found in the training set (exact)</td><td>{{ at.found_exact | share }}</td>
<td>{{ at.paper.found_in_training | pct }}</td></tr>
<tr><td>spans found normalised</td><td>{{ at.found_normalized | share }}</td><td></td></tr>
<tr><td>span tokens at shifted or marginal positions</td><td>{{ at.span_tokens_shifted_or_marginal | share }}</td>
<td>{{ at.paper.span_tokens_shifted_or_marginal | pct }}</td></tr>
<tr><td>mean cosine to the chosen source</td><td>{{ at.mean_cosine_to_source if at.mean_cosine_to_source is not none
else "-" }}</td><td>{{ at.paper.mean_cosine_to_source }}</td></tr>
<tr><td>mean 1/2/3-gram keyword overlap with the source</td><td>{{ at.mean_ngram_overlap | pct }}</td>
<td>{{ at.paper.mean_ngram_overlap | pct }}</td></tr></table>
{% if spans %}<table><tr><th>span</th><th>response</th><th>found</th><th>training examples</th><th>shifted+marginal</th>
<th>source</th><th>cosine</th><th>overlap</th><th>counterfactual</th></tr>
{% for s in spans[:spans_shown] %}<tr><td class="span">{{ s.text }}</td><td>{{ s.example_id }}</td>
<td>{{ "exact" if s.found_exact else ("normalised" if s.found_normalized else "no") }}</td>
<td>{{ s.n_examples_normalized }}{% if s.normalized_ids %}: {{ s.normalized_ids[:5] | join(", ") }}{% endif %}</td>
<td>{{ s.shifted_or_marginal_share | pct }}</td><td>{{ s.source_example.id if s.source_example else "-" }}</td>
<td>{{ s.source_example.cosine if s.source_example and s.source_example.cosine is not none else "-" }}</td>
<td>{{ s.source_example.ngram_overlap.mean | pct if s.source_example else "-" }}</td>
<td>{% if s.counterfactual %}{{ "persists" if s.counterfactual.persists.normalized else "gone" }}{% endif %}</td></tr>
{% endfor %}</table>
{% if spans | length > spans_shown %}
<p class="note">{{ spans | length - spans_shown }} more spans in spans.jsonl.</p>{% endif %}
{% else %}<p class="note">Each span's matches, candidate sources and token classes: spans.jsonl.</p>{% endif %}
{% if b.counterfactual %}<p>Counterfactual check: the phrase persisted in {{ b.counterfactual.persists_normalized }}
of {{ b.counterfactual.n }} rephrased instructions. {{ b.counterfactual.note }}.</p>{% endif %}
{% endif %}
</section>
"""

PAGE = """\
<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>tunescope borrow</title></head>
<body style="font-family:sans-serif;max-width:70em;margin:1em auto">{{ section }}</body></html>
"""


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _share(entry: dict[str, Any] | None) -> str:
    if not entry or entry.get("value") is None:
        return "-"
    low, high = entry.get("ci95") or (None, None)
    interval = f" [{_pct(low)}, {_pct(high)}]" if low is not None and high is not None else ""
    return _pct(entry["value"]) + interval


@functools.lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    environment = jinja2.Environment(autoescape=True, undefined=jinja2.ChainableUndefined)
    environment.filters["pct"] = _pct
    environment.filters["share"] = _share
    return environment


def render_section(
    borrow: dict[str, Any],
    spans: list[dict[str, Any]] | None = None,
    *,
    top_shown: int = 60,
    spans_shown: int = 50,
    title: str = "Pattern copying and borrowing",
    level: int = 2,
) -> str:
    """The borrowing analysis of one run as an HTML fragment (a ``<section>``), every model text escaped.

    Args:
        borrow: The contents of borrow.json.
        spans: The records of spans.jsonl (none: only the attribution aggregates are shown).
        top_shown: Shifted and marginal tokens shown per list.
        spans_shown: Spans listed in the attribution table.
        title: The section's heading.
        level: Its heading level (``<h2>`` by default; subsections one below), to sit inside another page.
    """
    template = _environment().from_string(SECTION)
    return template.render(b=borrow, spans=spans or [], categories=CATEGORIES, top_shown=top_shown,
                           spans_shown=spans_shown, title=title, level=level)  # fmt: skip


def render_page(borrow: dict[str, Any], spans: list[dict[str, Any]] | None = None) -> str:
    """The section on a minimal page of its own (``borrow.html``), for looking at one run."""
    section = Markup(render_section(borrow, spans))
    return _environment().from_string(PAGE).render(section=section)
