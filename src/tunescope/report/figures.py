"""The report's figures, drawn with matplotlib into PNG bytes (embedded in the page as data URIs)."""

from __future__ import annotations

import io
from typing import Any

from tunescope.display import display_name, ema, pyplot
from tunescope.report.collect import Cell, arm_label, probe_results

COLOURS = {
    "lora": "#2b8cbe", "full": "#e34a33", "base": "#636363", "nft": "#fd8d3c", "cpt+lora": "#31a354",
    "cpt+full": "#756bb1",
}  # fmt: skip
"""Colours of the base model and of the arm named after each kind."""
SWEEP_COLOURS = ("#08519c", "#9ecae1", "#a50f15", "#fcbba1", "#006d2c", "#54278f", "#8c6d31", "#e7298a")
"""Colours of the other arms (sweeps, named arms), in grid order."""
CLASS_COLOURS = {"unshifted": "#74c476", "marginal": "#fdae6b", "shifted": "#de2d26"}


def _colours(cell: Cell) -> dict[str, str]:
    """A colour per arm of the cell (and for the base model): fixed for the standard arms, then the sweep colours."""
    others = iter(SWEEP_COLOURS * (1 + len(cell.runs) // len(SWEEP_COLOURS)))
    return {"base": COLOURS["base"], **{name: COLOURS.get(name) or next(others) for name in cell.runs}}


def _labels(cell: Cell) -> dict[str, str]:
    """Each arm's label (``lora r=2``), and 'base'."""
    return {"base": "base", **{name: arm_label(run) for name, run in cell.runs.items()}}


def _png(figure: Any) -> bytes:
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png", dpi=110)
    pyplot().close(figure)
    return buffer.getvalue()


def _metric_rows(cell: Cell, key: str) -> dict[str, list[dict[str, Any]]]:
    """Per method, the training-metrics rows that carry ``key`` (methods without any left out)."""
    runs = {m: [row for row in run.metrics if key in row] for m, run in cell.runs.items()}
    return {m: rows for m, rows in runs.items() if rows}


def loss_curves(cell: Cell) -> bytes | None:
    """Training loss per optimizer step, raw and smoothed, one colour per method."""
    runs = _metric_rows(cell, "loss")
    if not runs:
        return None
    plt = pyplot()
    figure, axes = plt.subplots(figsize=(6.4, 3.6))
    colours, labels = _colours(cell), _labels(cell)
    for method, rows in runs.items():
        steps, losses = [r["step"] for r in rows], [r["loss"] for r in rows]
        axes.plot(steps, losses, color=colours[method], alpha=0.3, linewidth=1)
        axes.plot(steps, ema(losses), color=colours[method], linewidth=2, label=labels[method])
    axes.set(xlabel="optimizer step", ylabel="training loss", title="Training loss")
    axes.grid(alpha=0.3)
    axes.legend()
    return _png(figure)


def monitor_curves(cell: Cell) -> bytes | None:
    """The live shift monitor: KL to the base model during training, one colour per method."""
    runs = _metric_rows(cell, "monitor_kl")
    if not runs:
        return None
    plt = pyplot()
    figure, (kl_axes, share_axes) = plt.subplots(1, 2, figsize=(9, 3.4))
    colours, labels = _colours(cell), _labels(cell)
    for method, rows in runs.items():
        steps, style = [r["step"] for r in rows], {"color": colours[method], "label": labels[method]}
        kl_axes.plot(steps, [r["monitor_kl"] for r in rows], marker="o", **style)
        share_axes.plot(steps, [r["monitor_shifted"] for r in rows], marker="s", **style)
    kl_axes.set(xlabel="optimizer step", ylabel="mean KL(base‖tuned)", title="Drift from the base model")
    share_axes.set(xlabel="optimizer step", ylabel="share of positions shifted", title="Shifted positions")
    for axes in (kl_axes, share_axes):
        axes.grid(alpha=0.3)
        axes.legend()
    return _png(figure)


def _error_bar(entry: dict[str, Any]) -> tuple[float, float]:
    """Distances from a value down and up to its 95% interval's bounds (0 where there is no interval)."""
    value, interval = entry["value"], entry.get("ci95") or [None, None]
    if value is None or None in interval:
        return 0.0, 0.0
    return value - interval[0], interval[1] - value


def tds_by_size(cells: list[Cell]) -> bytes | None:
    """Figure 1's three panels: KL, base probability and base rank (0-indexed, capped: TR) against training-set size.

    The paper's "Base Rank" axis is AlignTDS's TR; exact-mode runs are drawn on it through their
    ``tr_mean`` (an older summary without it falls back to the 1-indexed mean, and says so).
    """
    series: dict[str, list[tuple[int, dict[str, Any]]]] = {}
    colours: dict[str, str] = {}
    lora_series: set[str] = set()
    for cell in cells:
        cell_colours = _colours(cell)
        for method, run in cell.runs.items():
            if run.shift:
                name = f"{arm_label(run)} · {display_name(cell.model)} · {cell.dataset}"
                series.setdefault(name, []).append((cell.subset_size or 0, run.shift["micro"]))
                colours.setdefault(name, cell_colours[method])
                if run.arm.get("method", method) == "lora":
                    lora_series.add(name)
    if not series:
        return None
    sizes = sorted({size for points in series.values() for size, _ in points})
    plt = pyplot()
    figure, panels = plt.subplots(1, 3, figsize=(11, 3.4))
    has_tr = all("tr_mean" in micro for points in series.values() for _, micro in points)
    rank = ("tr_mean", "Base rank (0-indexed, capped at 50)") if has_tr else ("base_rank_mean", "Base rank (1-indexed)")
    metrics = (("kl_mean", "KL divergence"), ("base_prob_mean", "Base probability"), rank)
    for axes, (metric, title) in zip(panels, metrics, strict=True):
        for name, points in series.items():
            points = sorted(points, key=lambda point: point[0])
            xs = [sizes.index(size) for size, _ in points]
            values = [p[metric]["value"] for _, p in points]
            bars = [_error_bar(p[metric]) for _, p in points]
            errors = [[low for low, _ in bars], [high for _, high in bars]]
            lora = name in lora_series  # LoRA dashed, full fine-tuning solid, as in the paper's figure
            style = {"marker": "s", "linestyle": "--"} if lora else {"marker": "*", "linestyle": "-"}
            axes.errorbar(xs, values, yerr=errors, capsize=3, color=colours[name], label=name, **style)
        axes.set_xticks(range(len(sizes)), [str(size or "all") for size in sizes])
        axes.set(xlabel="training examples", title=title)
        axes.grid(alpha=0.3)
    panels[0].legend(fontsize=7)
    return _png(figure)


def class_shares(cell: Cell) -> bytes | None:
    """Share of response tokens the base model ranks 1st, 2nd–3rd, or lower, per method."""
    runs = {m: run.shift for m, run in cell.runs.items() if run.shift}
    if not runs:
        return None
    plt = pyplot()
    figure, axes = plt.subplots(figsize=(6.4, 1.2 + 0.5 * len(runs)))
    for row, summary in enumerate(runs.values()):
        left = 0.0
        for klass, colour in CLASS_COLOURS.items():
            axes.barh(row, summary[klass], left=left, color=colour, label=klass if row == 0 else None)
            left += summary[klass]
    labels = _labels(cell)
    axes.set_yticks(range(len(runs)), [labels[method] for method in runs])
    axes.set(xlabel="share of response tokens", xlim=(0, 1), title="Token classes (base rank of the tuned token)")
    axes.legend(loc="lower left", fontsize=8, ncols=3)
    return _png(figure)


def initiation(cell: Cell) -> bytes | None:
    """Figure 4: KL of the first 5% of each sentence's tokens against the rest, per method."""
    runs = {m: r.shift["initiation"] for m, r in cell.runs.items() if r.shift and r.shift.get("initiation")}
    if not runs:
        return None
    plt = pyplot()
    figure, axes = plt.subplots(figsize=(max(6.4, 1.4 * len(runs)), 3.4))
    colours, labels = _colours(cell), _labels(cell)
    for index, (method, split) in enumerate(runs.items()):
        for offset, (part, label) in enumerate((("kl_first", "first 5%"), ("kl_rest", "rest"))):
            value = split[part]["value"] or 0.0
            down, up = _error_bar(split[part])
            axes.bar(
                index * 3 + offset,
                value,
                yerr=[[down], [up]],
                capsize=3,
                color=colours[method],
                alpha=1.0 if offset == 0 else 0.45,
                label=f"{labels[method]}: {label}",
            )
    axes.set_xticks([index * 3 + 0.5 for index in range(len(runs))], [labels[method] for method in runs])
    axes.set(ylabel="mean KL", title="Response initiation: sentence-initial tokens vs the rest")
    axes.legend(fontsize=8)
    return _png(figure)


def top_tokens(cell: Cell, limit: int = 15) -> bytes | None:
    """The most frequent shifted and marginal tokens, LoRA beside full fine-tuning (Fig. 12)."""
    runs = {}
    for method, run in cell.runs.items():
        if run.shift:
            counts: dict[str, int] = {}
            for entry in run.shift.get("top_shifted_tokens", []) + run.shift.get("top_marginal_tokens", []):
                counts[entry["token"]] = counts.get(entry["token"], 0) + entry["count"]
            runs[method] = sorted(counts.items(), key=lambda item: -item[1])[:limit]
    if not runs:
        return None
    plt = pyplot()
    figure, panels = plt.subplots(1, len(runs), figsize=(4.2 * len(runs), 0.6 + 0.28 * limit), squeeze=False)
    colours, labels = _colours(cell), _labels(cell)
    for axes, (method, counts) in zip(panels[0], runs.items(), strict=True):
        tokens = [repr(token)[1:-1] for token, _ in reversed(counts)]
        axes.barh(range(len(counts)), [count for _, count in reversed(counts)], color=colours[method])
        axes.set_yticks(range(len(counts)), tokens, fontsize=8)
        axes.set(xlabel="shifted + marginal occurrences", title=f"{labels[method]}: most shifted tokens")
    return _png(figure)


def probe_bars(cell: Cell) -> bytes | None:
    """Accuracy per model on the taught facts, the untaught control, the training wording, and general knowledge.

    Multiple choice, with 95% intervals; the chance rate of the fact questions is drawn.
    """
    results = probe_results(cell)
    if not results or int(cell.probe.get("schema_version", 1)) < 2:
        return None
    plt = pyplot()
    figure, (facts, general) = plt.subplots(1, 2, figsize=(10, 3.4), gridspec_kw={"width_ratios": [2.2, 1]})
    sets = (
        ("facts", "taught facts", 1.0),
        ("control", "untaught control", 0.45),
        ("training_wording", "training wording", 0.7),
    )
    models, colours, names = list(results), _colours(cell), _labels(cell)
    labels = [names.get(model, model) for model in models]
    width = 0.8 / len(sets)
    for offset, (name, label, alpha) in enumerate(sets):
        for index, method in enumerate(models):
            accuracy = results[method]["sets"][name]["accuracy"]
            down, up = _error_bar(accuracy)
            facts.bar(
                index + (offset - 1) * width, accuracy["value"] or 0.0, width, yerr=[[down], [up]], capsize=2,
                color=colours.get(method, "#999999"), alpha=alpha, label=label if index == 0 else None,
            )  # fmt: skip
    if cell.probe.get("chance"):
        facts.axhline(cell.probe["chance"], color="black", linestyle=":", label="chance")
    facts.set_xticks(range(len(labels)), labels)
    facts.set(ylim=(0, 1), ylabel="multiple-choice accuracy", title="Fictional facts (knowledge uptake)")
    facts.legend(fontsize=7)
    for index, method in enumerate(models):
        accuracy = results[method]["sets"]["general"]["accuracy"]
        down, up = _error_bar(accuracy)
        general.bar(index, accuracy["value"] or 0.0, yerr=[[down], [up]], capsize=3, color=colours.get(method, "#999"))
    general.set_xticks(range(len(labels)), labels)
    general.set(ylim=(0, 1), ylabel="accuracy", title="General knowledge (forgetting)")
    return _png(figure)
