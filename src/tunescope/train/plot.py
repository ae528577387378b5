"""The training-loss curve, as LLaMA-Factory's ``plot_loss`` draws it: raw and EMA-smoothed."""

from __future__ import annotations

import json
from pathlib import Path

from tunescope.display import ema
from tunescope.files import atomic_path
from tunescope.train.monitor import read_monitor


def plot_loss(metrics: Path, out: Path, title: str = "training loss") -> Path:
    """Draw loss against optimizer step from ``metrics.jsonl`` into a PNG at ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in metrics.read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = [row for row in rows if "loss" in row]  # the shift monitor's step-0 row has none
    steps = [row["step"] for row in rows]
    losses = [row["loss"] for row in rows]
    figure, axes = plt.subplots(figsize=(6, 4), dpi=120)
    axes.plot(steps, losses, color="#9ecae1", linewidth=1, label="loss")
    axes.plot(steps, ema(losses), color="#08519c", linewidth=2, label="smoothed")
    axes.set(xlabel="optimizer step", ylabel="loss", title=title)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    with atomic_path(out) as tmp:
        figure.savefig(tmp, format="png")
    plt.close(figure)
    return out


def plot_monitor(metrics: Path, out: Path, title: str = "shift from the base model") -> Path:
    """Draw the live shift monitor (KL to base, shifted share) against optimizer step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_monitor(metrics)
    steps = [row["step"] for row in rows]
    figure, kl_axes = plt.subplots(figsize=(6, 4), dpi=120)
    kl_axes.plot(steps, [row["monitor_kl"] for row in rows], color="#08519c", marker="o", label="KL(base‖tuned)")
    kl_axes.set(xlabel="optimizer step", ylabel="mean KL (nats)", title=title)
    share_axes = kl_axes.twinx()
    share_axes.plot(steps, [row["monitor_shifted"] for row in rows], color="#cb181d", marker="s", label="shifted")
    share_axes.set_ylabel("share of positions shifted (base rank > 3)")
    kl_axes.grid(alpha=0.3)
    figure.legend(loc="upper left")
    figure.tight_layout()
    with atomic_path(out) as tmp:
        figure.savefig(tmp, format="png")
    plt.close(figure)
    return out
