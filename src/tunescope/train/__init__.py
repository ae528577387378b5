"""Training: LoRA and full fine-tuning on one engine."""

from tunescope.train.config import LoraSettings, TrainConfig, shared_learning_rate_warning
from tunescope.train.pipeline import TrainResult, dry_run, prepare_training_data, train

__all__ = [
    "LoraSettings",
    "TrainConfig",
    "TrainResult",
    "dry_run",
    "prepare_training_data",
    "shared_learning_rate_warning",
    "train",
]
