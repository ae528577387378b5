"""Judge plots: radar, grouped bars with intervals, and pairwise win/tie/loss bars.

The radar of the five aspects per model is the paper's Figure 2 (small vs large training set);
the grouped bars with 95% intervals are Figure 3 and Tables 13-15 (e.g. LoRA vs full).

Each function takes plain summaries (as in ``judge_summary.json``), so a notebook can combine
models from different judge runs into one figure.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tunescope.display import pyplot
from tunescope.files import atomic_path
from tunescope.judge.prompts import SCORE_RANGE


def _save(figure: Any, out: Path) -> Path:
    figure.tight_layout()
    with atomic_path(out) as tmp:
        figure.savefig(tmp, format="png")
    pyplot().close(figure)
    return out


def _title(title: str, stand_in: bool) -> str:
    return f"{title}\n(small stand-in judge: not meaningful scores)" if stand_in else title


def plot_radar(models: dict[str, dict[str, Any]], aspects: list[str], out: Path, *, stand_in: bool = False) -> Path:
    """One polygon per model over the aspects' mean scores (1 to 5).

    Args:
        models: Model label -> its summary (with ``aspects.<name>.mean``).
        aspects: The axes, in order.
        out: The PNG to write.
        stand_in: Say in the title that the judge is a small stand-in.
    """
    import numpy as np

    plt = pyplot()
    low, high = SCORE_RANGE
    angles = np.linspace(0, 2 * np.pi, len(aspects), endpoint=False).tolist()
    figure, axes = plt.subplots(figsize=(6, 6), dpi=120, subplot_kw={"polar": True})
    for label, summary in models.items():
        means = [summary["aspects"].get(aspect, {}).get("mean") for aspect in aspects]
        values = [low if mean is None else mean for mean in means]  # a missing mean sits at the centre
        axes.plot(angles + angles[:1], values + values[:1], linewidth=2, label=label)
        axes.fill(angles + angles[:1], values + values[:1], alpha=0.12)
    axes.set_xticks(angles)
    axes.set_xticklabels([aspect.capitalize() for aspect in aspects])
    axes.set_ylim(low - 1, high)
    axes.set_yticks(range(low, high + 1))
    axes.set_title(_title("Mean judge score per aspect", stand_in), pad=20)
    axes.legend(loc="upper right", bbox_to_anchor=(1.25, 1.1))
    return _save(figure, out)


def plot_grouped_bars(
    models: dict[str, dict[str, Any]], aspects: list[str], out: Path, *, stand_in: bool = False
) -> Path:
    """Bars of each aspect's mean score, one bar per model, with bootstrap 95% intervals."""
    import numpy as np

    plt = pyplot()
    low, high = SCORE_RANGE
    width = 0.8 / max(1, len(models))
    positions = np.arange(len(aspects))
    figure, axes = plt.subplots(figsize=(max(6, 1.6 * len(aspects)), 4), dpi=120)
    for index, (label, summary) in enumerate(models.items()):
        stats = [summary["aspects"].get(aspect, {}) for aspect in aspects]
        means = [s.get("mean") or 0.0 for s in stats]
        errors = np.array(
            [
                [mean - s["ci95"][0], s["ci95"][1] - mean] if s.get("ci95") else [0.0, 0.0]
                for mean, s in zip(means, stats, strict=True)
            ]
        ).T
        axes.bar(positions + (index - (len(models) - 1) / 2) * width, means, width, yerr=errors, capsize=3, label=label)
    axes.set_xticks(positions)
    axes.set_xticklabels([aspect.capitalize() for aspect in aspects])
    axes.set_ylim(0, high + 0.3)
    axes.axhline(low, color="grey", linewidth=0.5)
    axes.set_ylabel("mean score (95% CI)")
    axes.set_title(_title("Judge scores by aspect", stand_in))
    axes.grid(axis="y", alpha=0.3)
    axes.legend()
    return _save(figure, out)


def plot_pairwise(pair: dict[str, Any], aspects: list[str], out: Path, *, stand_in: bool = False) -> Path:
    """Stacked horizontal bars: share of wins, ties and losses of the first model per aspect."""
    plt = pyplot()
    figure, axes = plt.subplots(figsize=(7, 0.6 * len(aspects) + 2), dpi=120)
    left = [0.0] * len(aspects)
    outcomes = {
        "wins": (f"{pair['first']} better", "#2b8cbe"),
        "ties": ("tie", "#bdbdbd"),
        "losses": (f"{pair['second']} better", "#e34a33"),
    }
    for outcome, (label, colour) in outcomes.items():
        shares = []
        for aspect in aspects:
            stats = pair["aspects"][aspect]
            shares.append(stats[outcome] / stats["n"] if stats["n"] else 0.0)
        axes.barh(aspects, shares, left=left, color=colour, label=label)
        left = [a + b for a, b in zip(left, shares, strict=True)]
    axes.set_xlim(0, 1)
    axes.invert_yaxis()
    axes.set_xlabel("share of items (both orders asked; orders that disagree count as a tie)")
    axes.set_title(_title(f"{pair['first']} vs {pair['second']}", stand_in))
    axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=3, frameon=False)
    return _save(figure, out)
