"""How results are shown, shared by every stage that draws or labels: model names, smoothed curves, pyplot."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def display_name(model: str) -> str:
    """A model's name for labels: a local path's last part, else the name as given (asset or hub id)."""
    path = Path(model).expanduser()
    return path.name if path.exists() else model


def ema(values: list[float], weight: float = 0.9) -> list[float]:
    """Exponential moving average with bias correction (TensorBoard's smoothing)."""
    smoothed, last, count = [], 0.0, 0
    for value in values:
        count += 1
        last = weight * last + (1 - weight) * value
        smoothed.append(last / (1 - weight**count))
    return smoothed


def pyplot() -> Any:
    """Matplotlib's pyplot on the file-only Agg backend (no display needed)."""
    # Imported on first use: matplotlib takes a second to import, and most commands draw nothing.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
