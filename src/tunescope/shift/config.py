"""Settings of `tunescope shift`: which pair, which responses, which metrics, which reports."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from tunescope.config import Config
from tunescope.models import Precision
from tunescope.shift.aligntds import AlignTDSSettings, MatchBy

Mode = Literal["exact", "aligntds"]
BasePrompt = Literal["same", "aligntds", "raw"]


class AlignTDSCompatSettings(Config):
    """AlignTDS compatibility settings (used when mode is aligntds)."""

    aligntds_top_k: int = Field(default=30, gt=0)
    """Candidates stored per position and model before renormalising (AlignTDS's --top_k)."""
    aligntds_kl_k: int = Field(default=30, gt=0)
    """Entries of each renormalised list that KL uses (30 = AlignTDS's "KL" key, 10 = its "KL@10")."""
    aligntds_rank_cap: int = Field(default=50, gt=0)
    """TR given to a tuned top-1 token missing from the base list (AlignTDS's curves use 50)."""
    aligntds_match: MatchBy = "text"
    """Match candidates by decoded text, as AlignTDS does, or by token id (a variant, not AlignTDS)."""

    def aligntds_settings(self) -> AlignTDSSettings:
        """The compatibility knobs as the metric functions take them."""
        return AlignTDSSettings(self.aligntds_top_k, self.aligntds_kl_k, self.aligntds_rank_cap, self.aligntds_match)


class ShiftReportSettings(Config):
    """Summary and viewer settings."""

    relative_buckets: int = Field(default=10, gt=0)
    """Buckets of relative position (position / response length) in summary.json."""
    max_position: int = Field(default=100, gt=0)
    """Absolute positions 1..N reported one by one in summary.json (the paper's curves use 100)."""
    top_tokens: int = Field(default=50, ge=0)
    """Most frequent shifted and marginal tokens to list in summary.json."""
    bootstrap_samples: int = Field(default=1000, ge=0)
    """Resamples of the responses for the 95% confidence intervals (0: no intervals)."""
    seed: int = 0
    """Seed of the bootstrap."""
    initiation_fraction: float = Field(default=0.05, gt=0, lt=1)
    """Share of each sentence's first tokens (at least one) compared with the rest (the paper's 5%)."""
    viewer_max_examples: int | None = Field(default=200, gt=0)
    """Responses shown in viewer.html (unset: all); the tables and summary always cover every response."""
    base_responses: str | None = None
    """The base model's own answers to the same prompts (`tunescope generate` output), shown in viewer.html
    beside each tuned answer; they are not scored."""


class ShiftConfig(ShiftReportSettings, AlignTDSCompatSettings):
    """Token-shift settings."""

    base: str
    """The model before tuning: an asset name, a model directory, a .gguf file or a hub id."""
    tuned: str
    """The model after tuning: the same kinds, or a PEFT adapter or tunescope run directory."""
    responses: str
    """Responses to score: `tunescope generate` output, or records with messages/instruction and output text."""
    out: str
    """Directory for tokens.parquet, summary.json, examples.jsonl and viewer.html."""
    mode: Mode = "exact"
    """exact: full-vocabulary metrics (default); aligntds: AlignTDS's top-30 numbers, for comparison only."""
    base_prompt: BasePrompt = "same"
    """What the base model reads before the response: the tuned model's prompt (same), AlignTDS's
    '# Query:' wrapper of the instruction (aligntds), or the bare instruction and a newline (raw)."""
    template: str | None = None
    """Chat template for records without token ids: unset uses the tuned tokenizer's own; 'alpaca',
    'chatml' or a .jinja file replace it."""
    include_stop_token: bool = False
    """Also score a response's final special token (end of turn); AlignTDS does not."""
    top_k: int = Field(default=10, gt=0)
    """Most likely tokens of each model kept per position for display."""
    unshifted_max_rank: int = Field(default=1, gt=0)
    """Largest base rank (1-indexed) of the response token that counts as unshifted."""
    marginal_max_rank: int = Field(default=3, gt=0)
    """Largest base rank that counts as marginal; larger ranks are shifted."""
    share_base_weights: bool = True
    """When the tuned model is a LoRA adapter on the base, hold one model and read the base by
    disabling the adapter (not done when the adapter trained biases)."""
    precision: Precision = "auto"
    """Weights' precision; auto is bf16 on a CUDA GPU that supports it, fp32 elsewhere. The metrics are
    always computed in float32."""
    batch_size: int = Field(default=8, gt=0)
    """Responses per forward pass."""
    chunk_tokens: int = Field(default=256, gt=0)
    """Positions whose full-vocabulary logits are held at once (bounds memory)."""
    trust_remote_code: bool = False
    """Run model code shipped with a checkpoint. Off unless you trust its source."""

    @model_validator(mode="after")
    def _consistent(self) -> ShiftConfig:
        if self.marginal_max_rank < self.unshifted_max_rank:
            raise ValueError(
                f"marginal_max_rank {self.marginal_max_rank} is smaller than unshifted_max_rank "
                f"{self.unshifted_max_rank}"
            )
        if self.mode == "aligntds" and self.aligntds_kl_k > self.aligntds_top_k:
            raise ValueError(f"aligntds_kl_k {self.aligntds_kl_k} is larger than aligntds_top_k {self.aligntds_top_k}")
        return self
