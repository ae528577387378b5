"""Settings of `tunescope train`: the paper's defaults, with LoRA and full fine-tuning one switch apart."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from tunescope.config import Config
from tunescope.data import DataSettings
from tunescope.models import ModelSettings

Method = Literal["lora", "full"]


class LoraSettings(Config):
    """LoRA settings (used when method is lora)."""

    lora_r: int = Field(default=8, gt=0)
    """Rank of the update matrices (the paper uses 8 and saw no change for 2 to 32)."""
    lora_alpha: float = Field(default=16.0, gt=0)
    """Scaling numerator: the update is multiplied by alpha / r."""
    lora_dropout: float = Field(default=0.0, ge=0, lt=1)
    """Dropout on the LoRA input."""
    lora_target_modules: list[str] = Field(default_factory=lambda: ["all-linear"])
    """Modules that get adapters: 'all-linear', or names such as q_proj v_proj."""


class MonitorSettings(Config):
    """Shift monitor settings (live KL to the base model during training)."""

    monitor_every: int = Field(default=0, ge=0)
    """Every this many optimizer steps, measure KL and the shifted share against the base model on a
    fixed probe set, logged to metrics.jsonl and plotted in monitor.png (0: off)."""
    monitor_prompts: str = "mtbench"
    """Prompts of the probe set (any data source; the base model answers them once, greedily)."""
    monitor_examples: int = Field(default=8, gt=0)
    """Prompts in the probe set (the first N of a seeded shuffle)."""
    monitor_tokens: int = Field(default=48, gt=0)
    """Longest base answer per prompt, in tokens."""


class TrainConfig(MonitorSettings, LoraSettings, DataSettings, ModelSettings):
    """Training settings."""

    out: str
    """Run directory for the adapter or model, metrics, plots, config and provenance."""
    method: Method = "lora"
    """lora (the paper's LFT) or full fine-tuning (the paper's SFT)."""
    epochs: float = Field(default=3.0, gt=0)
    """Passes over the training data."""
    max_steps: int | None = Field(default=None, gt=0)
    """Stop after this many optimizer steps (overrides epochs)."""
    learning_rate: float = Field(default=5e-5, gt=0)
    """Peak learning rate for both methods (the paper's 5e-5) unless a method-specific one is set."""
    lora_learning_rate: float | None = Field(default=None, gt=0)
    """Learning rate when method is lora; LoRA usually wants about 10x the full fine-tuning rate."""
    full_learning_rate: float | None = Field(default=None, gt=0)
    """Learning rate when method is full."""
    lr_scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] = "cosine"
    """Learning-rate schedule after warm-up."""
    warmup_ratio: float = Field(default=0.03, ge=0, lt=1)
    """Fraction of the steps spent warming up the learning rate."""
    weight_decay: float = Field(default=0.0, ge=0)
    """AdamW weight decay."""
    max_grad_norm: float = Field(default=1.0, gt=0)
    """Gradient clipping norm."""
    neftune_noise_alpha: float | None = Field(default=None, gt=0)
    """NEFTune: add uniform noise of scale alpha / sqrt(length x width) to the input embeddings while
    training (Jain et al. 2023, whose default alpha is 5; the paper's NFT is full fine-tuning with it).
    The length is each example's own, however examples are batched. Unset: no noise."""
    batch_size: int = Field(default=32, gt=0)
    """Effective batch: examples per optimizer step over all processes (the paper's 32); for text data,
    rows of documents packed to max_length."""
    micro_batch_size: int = Field(default=4, gt=0)
    """Examples per forward pass per process; gradient accumulation makes up the effective batch."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass: less memory, about 30% more time."""
    logits_at_labels_only: bool = True
    """Apply the output layer and the loss only where a token carries a label, in chunks, so the
    [tokens x vocabulary] logits never exist. TRL does this on CUDA but scores every position on a CPU,
    which for a large vocabulary (Gemma-3: 262k) is most of the work. Off: TRL's own path; the losses
    agree within rounding either way."""
    padding_free: bool = True
    """Lay each micro-batch's examples end to end in one row instead of padding them to the longest
    (TRL's padding_free; attention stays within each example through its position ids), so no work goes
    to padding. The batches themselves are unchanged. Off: pad each micro-batch."""
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """auto: bf16 mixed precision on a CUDA GPU that supports it, fp32 elsewhere."""
    seed: int = 42
    """Seed for initialisation, data order and dropout."""
    save_steps: int = Field(default=100, gt=0)
    """Checkpoint every this many optimizer steps (for --resume)."""
    save_total_limit: int = Field(default=2, gt=0)
    """Checkpoints to keep."""
    report_to: list[str] = Field(default_factory=list)
    """Extra trackers (tensorboard, wandb, ...); metrics.jsonl is always written."""

    @model_validator(mode="after")
    def _batch_divides(self) -> TrainConfig:
        if self.batch_size % self.micro_batch_size:
            raise ValueError(
                f"batch_size {self.batch_size} is not a multiple of micro_batch_size {self.micro_batch_size}"
            )
        return self

    def learning_rate_for(self, method: Method) -> float:
        """The learning rate ``method`` trains with under these settings."""
        specific = self.lora_learning_rate if method == "lora" else self.full_learning_rate
        return specific if specific is not None else self.learning_rate

    @property
    def effective_learning_rate(self) -> float:
        """The learning rate this run trains with."""
        return self.learning_rate_for(self.method)


def shared_learning_rate_warning(config: TrainConfig) -> str | None:
    """Explain the confound when LoRA and full fine-tuning would train at the same learning rate.

    The paper used 5e-5 for both; rank-8 LoRA usually needs about ten times the full fine-tuning
    rate, so an equal rate makes LoRA look like it changed less than it could have.
    """
    lora, full = config.learning_rate_for("lora"), config.learning_rate_for("full")
    if lora != full:
        return None
    return (
        f"LoRA and full fine-tuning both use learning rate {lora:g}, as in the paper. LoRA usually needs about "
        "10x the full fine-tuning rate, so comparing them at one rate understates what LoRA can change; "
        "set --lora-learning-rate and --full-learning-rate to compare fairly."
    )
