"""Settings of `tunescope generate`: which prompts, which model, how to decode."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from tunescope.config import Config
from tunescope.data import DataSettings
from tunescope.data.formats import DataFormat
from tunescope.generate.store import responses_file
from tunescope.models import ModelSettings, Precision

Backend = Literal["hf", "vllm"]


class PromptSettings(Config):
    """Prompt settings."""

    data: str = "mtbench"
    """Prompts: a .json/.jsonl/.parquet/.csv file, a saved dataset directory, a Hugging Face dataset id, or a
    tunescope asset name; a final assistant turn, if any, is kept as the reference answer."""
    format: DataFormat = "auto"
    """Record shape: alpaca, sharegpt, messages or prompt_completion; auto detects it from the fields."""
    split: str = "train"
    """Split to read from a Hugging Face dataset."""
    template: str | None = None
    """Chat template: unset uses the tokenizer's own, or 'plain' (a User:/Assistant: transcript ending answers
    with EOS) where it has none; 'plain', 'alpaca', 'chatml' or a .jinja file replace it."""
    subset_size: int | None = Field(default=None, gt=0)
    """Answer only the first N prompts of one seeded shuffle (nested, as for training subsets)."""
    subset_seed: int = 0
    """Seed of that shuffle."""

    def data_settings(self) -> DataSettings:
        """The same choices in the form the data loader takes."""
        return DataSettings(
            data=self.data, format=self.format, split=self.split, template=self.template,
            subset_size=self.subset_size, subset_seed=self.subset_seed,
        )  # fmt: skip


class GenerateConfig(PromptSettings, ModelSettings):
    """Generation settings."""

    out: str
    """Output directory: the responses go to <out>/responses.jsonl, one JSON line each; a rerun skips the
    prompts already answered there."""
    max_new_tokens: int = Field(default=1024, gt=0)
    """Longest response, in tokens."""
    do_sample: bool = False
    """Sample instead of greedy decoding (the paper decodes greedily)."""
    temperature: float = Field(default=1.0, gt=0)
    """Sampling temperature (only when sampling)."""
    top_p: float = Field(default=1.0, gt=0, le=1)
    """Nucleus sampling: keep the smallest set of tokens with this much probability (only when sampling)."""
    top_k: int = Field(default=0, ge=0)
    """Sample among the k most likely tokens; 0 keeps all (only when sampling)."""
    repetition_penalty: float = Field(default=1.0, gt=0)
    """Divide the logits of tokens already present by this (1.0: off)."""
    seed: int = 42
    """Seed for sampling."""
    batch_size: int = Field(default=8, gt=0)
    """Prompts decoded together (left-padded, with the KV cache)."""
    precision: Precision = "auto"
    """Weights' precision; auto is bf16 on a CUDA GPU that supports it, fp32 elsewhere."""
    merge_adapter: bool = True
    """Merge a LoRA adapter into the weights before decoding: the same model, several times faster; only
    rounding differs (recorded)."""
    backend: Backend = "hf"
    """hf: transformers' generate, anywhere; vllm: vLLM's engine, much faster on GPUs (needs vLLM installed;
    one process, --batch-size prompts submitted at a time, so set it high, e.g. 256)."""
    vllm_tensor_parallel_size: int = Field(default=1, gt=0)
    """GPUs vLLM splits the model over (backend vllm only)."""

    @property
    def responses_file(self) -> Path:
        """``<out>/responses.jsonl`` (or ``out`` itself where it is a .jsonl file, the old form)."""
        return responses_file(self.out)

    def decoding(self, precision: str) -> dict[str, Any]:
        """The settings that decide the output, as recorded with every response."""
        settings: dict[str, Any] = {
            "do_sample": self.do_sample,
            "max_new_tokens": self.max_new_tokens,
            "repetition_penalty": self.repetition_penalty,
            "template": self.template,
            "precision": precision,
        }
        if self.do_sample:
            settings |= {"temperature": self.temperature, "top_p": self.top_p, "top_k": self.top_k, "seed": self.seed}
        if self.backend != "hf":  # recorded only when not the default, so older files still resume
            settings["backend"] = self.backend
        return settings
