"""Settings of `tunescope simplify`: the dataset, the rewriter backend, and the copy-verbatim rules."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from tunescope.config import Config
from tunescope.data.formats import DataFormat

DEFAULT_LOCAL_REWRITER = "smollm2"
"""The hf backend's default rewriter: runs anywhere, but far too small to rewrite well (a pipeline check)."""
RUNTIME_SETTINGS = frozenset({"out", "concurrency", "timeout", "max_retries", "backoff", "device",
                              "base_url", "api_key_env"})  # fmt: skip
"""Settings that do not change any rewrite, so a crashed run may resume with different values."""


class SimplifyConfig(Config):
    """Simplification settings."""

    data: str
    """Training data to simplify: a .json/.jsonl/.parquet/.csv file, a saved dataset directory, a Hugging Face
    dataset id or an asset name."""
    format: DataFormat = "auto"
    """Record shape: alpaca, sharegpt, messages or prompt_completion; auto detects it."""
    split: str = "train"
    """Split of a Hugging Face dataset."""
    out: str
    """The simplified dataset: a JSONL file of the same records with rewritten responses. Beside it:
    <out>.provenance.json (what was done) and <out>.rewrites.jsonl (each response before and after)."""
    backend: Literal["hf", "openai"] = "hf"
    """openai: any OpenAI-compatible endpoint (--base-url, --rewriter-model); hf: a local transformers model."""
    rewriter_model: str | None = None
    """The rewriter: the model name the server knows (openai), or a local model (hf; default smollm2, a small
    stand-in that only shows the pipeline works)."""
    base_url: str | None = None
    """OpenAI-compatible endpoint for the openai backend, e.g. http://127.0.0.1:8000/v1."""
    api_key_env: str = "OPENAI_API_KEY"
    """Name of the environment variable that holds the API key; the key itself is never stored."""
    temperature: float = Field(default=0.0, ge=0)
    """Rewriter sampling temperature."""
    max_tokens: int = Field(default=1024, gt=0)
    """Longest rewritten response in tokens; a rewrite cut by this limit is discarded (the original is kept)."""
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
        if self.backend == "openai" and not (self.base_url and self.rewriter_model):
            raise ValueError("the openai backend needs --base-url and --rewriter-model")
        if not self.out.endswith(".jsonl"):
            raise ValueError(f"--out {self.out!r}: the simplified dataset is written as JSONL; name it *.jsonl")
        return self

    @property
    def resolved_rewriter_model(self) -> str:
        """The rewriter model, with the hf backend's default filled in."""
        return self.rewriter_model or DEFAULT_LOCAL_REWRITER
