"""Token distribution shift: how a tuned model's next-token distribution differs from its base's.

For every token of a response the tuned model wrote, both models read the same token ids and
are compared at that position: KL in both directions, the base model's probability and exact
rank of the token, entropies and top candidates. One teacher-forced pass per model gives every
position at once. ``mode="aligntds"`` reproduces AlignTDS's approximate numbers for comparison
with published results.

From Python::

    from tunescope.shift import ShiftConfig, compute_shift

    result = compute_shift(ShiftConfig(base="smollm2", tuned="runs/my-lora",
                                       responses="responses.jsonl", out="runs/my-lora-shift"))
    print(result.summary["shifted"], result.summary["kl_mean"])
"""

from tunescope.shift.columns import TOKEN_COLUMNS, TokenColumn, exact_metrics
from tunescope.shift.config import ShiftConfig
from tunescope.shift.metrics import Positions
from tunescope.shift.pair import ModelPair, load_pair
from tunescope.shift.pipeline import ShiftResult, compute_shift

__all__ = [
    "TOKEN_COLUMNS",
    "ModelPair",
    "Positions",
    "ShiftConfig",
    "ShiftResult",
    "TokenColumn",
    "exact_metrics",
    "compute_shift",
    "load_pair",
]
