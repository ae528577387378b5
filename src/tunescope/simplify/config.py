"""Settings of `tunescope simplify`: the dataset, the rewriter backend, and the copy-verbatim rules."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from tunescope.config import Config
from tunescope.data.formats import DataFormat
from tunescope.models import Precision

SIMPLIFIED_FILE = "simplified.jsonl"
"""The simplified dataset inside the --out directory."""
DEFAULT_LOCAL_REWRITER = "smollm2"
"""The hf backend's default rewriter: runs anywhere, but far too small to rewrite well (a pipeline check)."""
RUNTIME_SETTINGS = frozenset({"out", "concurrency", "timeout", "max_retries", "backoff", "device",
                              "judge_base_url", "api_key_env"})  # fmt: skip
"""Settings that do not change any rewrite, so a crashed run may resume with different values."""


class SimplifyConfig(Config):
    """Simplification settings."""

    RENAMED = {"rewriter_model": "judge_model", "base_url": "judge_base_url", "max_tokens": "max_new_tokens"}

    data: str
    """Training data to simplify: a .json/.jsonl/.parquet/.csv file, a saved dataset directory, a Hugging Face
    dataset id or an asset name."""
    format: DataFormat = "auto"
    """Record shape: alpaca, sharegpt, messages or prompt_completion; auto detects it."""
    split: str = "train"
    """Split of a Hugging Face dataset."""
    out: str
    """Output directory: simplified.jsonl (the same records with rewritten responses, for `train --data`),
    simplified.provenance.json (what was done) and simplified.rewrites.jsonl (each response before and after)."""
    backend: Literal["hf", "openai"] = "hf"
    """openai: any OpenAI-compatible endpoint (--judge-base-url, --judge-model); hf: a local transformers model."""
    judge_model: str | None = None
    """The rewriter (named like the judge of `tunescope judge`): the model name the server knows (openai), or
    a local model (hf; default smollm2, a small stand-in that only shows the pipeline works)."""
    judge_base_url: str | None = None
    """OpenAI-compatible endpoint for the openai backend, e.g. http://127.0.0.1:8000/v1."""
    api_key_env: str = "OPENAI_API_KEY"
    """Name of the environment variable that holds the API key; the key itself is never stored."""
    temperature: float = Field(default=0.0, ge=0)
    """Rewriter sampling temperature."""
    max_new_tokens: int = Field(default=1024, gt=0)
    """Longest rewritten response in tokens; a rewrite cut by this limit is discarded (the original is kept)."""
    precision: Precision = "auto"
    """Weights' precision of the hf backend's model; auto is bf16 on a CUDA GPU that supports it, fp32 elsewhere."""
    keep_code: bool = True
    """Copy verbatim responses that contain a fenced code block, and responses to instructions that ask for code."""
    keep_summaries: bool = True
    """Copy verbatim responses to instructions that ask for a summary."""
    min_chars: int = Field(default=0, ge=0)
    """Copy verbatim responses shorter than this many characters (already concise; saves requests)."""
    keep_longer: bool = False
    """Keep a rewrite that is longer than the original (off: the original is kept, the aim being concision)."""
    concurrency: int = Field(default=8, gt=0)
    """Requests in flight at once (the hf backend always runs one at a time)."""
    timeout: float = Field(default=120.0, gt=0)
    """Seconds to wait for one reply before retrying it."""
    max_retries: int = Field(default=5, ge=0)
    """Retries per request after 429, 5xx, timeouts or lost connections."""
    backoff: float = Field(default=1.0, ge=0)
    """Seconds before the first retry, doubling for each further one."""
    device: str | None = None
    """Device of the hf backend's model (default: a GPU when there is one, else the CPU)."""

    @model_validator(mode="after")
    def _consistent(self) -> SimplifyConfig:
        if self.backend == "openai" and not (self.judge_base_url and self.judge_model):
            raise ValueError("the openai backend needs --judge-base-url and --judge-model")
        return self

    @property
    def dataset_file(self) -> Path:
        """``<out>/simplified.jsonl``, or ``out`` itself where it names a .jsonl file (the old form of --out)."""
        out = Path(self.out).expanduser()
        return out if out.suffix == ".jsonl" else out / SIMPLIFIED_FILE

    @property
    def resolved_rewriter_model(self) -> str:
        """The rewriter model, with the hf backend's default filled in."""
        return self.judge_model or DEFAULT_LOCAL_REWRITER
