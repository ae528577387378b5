"""Trainer callbacks: the metrics log, the NaN guard and plain progress lines."""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from tunescope.errors import TunescopeError

# TRL/Trainer log keys -> tunescope's metrics.jsonl keys.
METRIC_KEYS = {
    "loss": "loss",
    "learning_rate": "lr",
    "grad_norm": "grad_norm",
    "entropy": "mean_token_entropy",
    "mean_token_accuracy": "token_accuracy",
    "epoch": "epoch",
    "num_input_tokens_seen": "tokens_seen",
}


class NonFiniteLoss(TunescopeError):
    """Training produced a NaN or infinite loss."""


class MetricsLog(TrainerCallback):
    """Append one JSON line per optimizer step to ``metrics.jsonl``, with tokens/s.

    Throughput is non-padding tokens (prompt and response) per wall-clock second between two
    logged steps, so it includes optimizer and data-loading time.
    """

    def __init__(self, path: Path, monitor: Any = None):
        self.path = path
        self.monitor = monitor
        self._last: tuple[float, int] | None = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Start the throughput clock (after a resume, from the restored token count)."""
        self._last = (time.perf_counter(), state.num_input_tokens_seen)
        if not state.is_world_process_zero:
            return
        if self.path.exists():
            # A resumed run redoes the steps after its checkpoint: drop their old lines.
            kept = [
                line
                for line in self.path.read_text(encoding="utf-8").splitlines()
                if line.strip() and json.loads(line)["step"] <= state.global_step
            ]
            self.path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
        if self.monitor is not None and (before := self.monitor.pop_metrics(0)):
            self._append({"step": 0, **before})

    def _append(self, row: dict[str, Any]) -> None:
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None, **kwargs: Any):
        """Write the step's metrics; summary logs at the end of training carry no loss and are skipped."""
        if not logs or "loss" not in logs or not state.is_world_process_zero:
            return
        row: dict[str, Any] = {"step": state.global_step}
        row.update({ours: logs[theirs] for theirs, ours in METRIC_KEYS.items() if theirs in logs})
        now, tokens = time.perf_counter(), state.num_input_tokens_seen
        if self._last is not None and now > self._last[0] and tokens > self._last[1]:
            row["tokens_per_s"] = (tokens - self._last[1]) / (now - self._last[0])
        self._last = (now, tokens)
        if self.monitor is not None:
            row.update(self.monitor.pop_metrics(state.global_step))
        self._append(row)


class StopOnNonFiniteLoss(TrainerCallback):
    """Abort the run, with a clear message, on the first NaN or infinite loss."""

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None, **kwargs: Any):
        """Raise when the logged loss is not finite."""
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(loss):
            raise NonFiniteLoss(
                f"training stopped: the loss became {loss} at step {state.global_step}; "
                "lower the learning rate or check the data. Checkpoints before this step are kept."
            )


class NoCheckpointAtTheEnd(TrainerCallback):
    """Skip the checkpoint the Trainer writes after the last step when the run's checkpoints are removed anyway.

    With ``save_strategy="steps"`` the Trainer always checkpoints the final step. The run then saves its
    weights and deletes its checkpoints (unless ``keep_checkpoints``), so that checkpoint would only be
    written to be thrown away: for Gemma-3-270M full fine-tuning about 3 GB (weights and AdamW moments)
    and 7 s of a 20 s benchmark run. A crash while the weights are saved resumes from the previous one.
    """

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any):
        """Turn the final step's save off."""
        if state.global_step >= state.max_steps:
            control.should_save = False
        return control


class ProgressBar(TrainerCallback):
    """A terminal progress bar over optimizer steps, with the latest loss beside it."""

    def __init__(self) -> None:
        self.bar = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Open the bar at the step training starts from (non-zero after a resume)."""
        from tqdm.auto import tqdm

        if state.is_world_process_zero:
            self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc="train", dynamic_ncols=True)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Advance the bar to the current step."""
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None, **kwargs: Any):
        """Show the latest loss."""
        if self.bar is not None and logs and "loss" in logs:
            self.bar.set_postfix(loss=f"{logs['loss']:.4f}", refresh=False)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Close the bar."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class ProgressLines(TrainerCallback):
    """Progress as occasional plain lines, for logs and pipes where a progress bar is noise."""

    def __init__(self, every_s: float = 10.0, stream: Any = None):
        self.every_s = every_s
        self.stream = stream or sys.stderr
        self._last_print = 0.0

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None, **kwargs: Any):
        """Print step, loss and learning rate at most every ``every_s`` seconds, and at the last step."""
        if not logs or "loss" not in logs or not state.is_world_process_zero:
            return
        now = time.monotonic()
        if now - self._last_print >= self.every_s or state.global_step >= state.max_steps:
            self._last_print = now
            print(
                f"step {state.global_step}/{state.max_steps}  loss {logs['loss']:.4f}  "
                f"lr {logs.get('learning_rate', float('nan')):.3g}",
                file=self.stream,
                flush=True,
            )
