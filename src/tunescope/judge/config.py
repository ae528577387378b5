"""Settings of `tunescope judge`: one YAML key and one flag per field, validated before any request."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from tunescope.config import Config
from tunescope.llm import JsonMode

DEFAULT_LOCAL_JUDGE = "smollm2"
"""The hf backend's default judge: small enough for any laptop, so labelled a stand-in."""

RUNTIME_SETTINGS = frozenset(
    {
        "out", "concurrency", "timeout", "max_retries", "backoff", "cache", "cache_dir", "limit",
        "bootstrap_samples", "seed", "plots", "export_justeval", "justeval_na_as_five", "device",
        "base_url", "api_key_env",
    }
)  # fmt: skip
"""Settings that do not change any judgement, so a run may resume with different values."""


class JudgeConfig(Config):
    """Judge settings."""

    out: str
    """Output directory: judgements.jsonl, judge_summary.json, plots and config.yaml. Rerunning the same
    command into it resumes; nothing already judged is asked again."""
    responses: list[str] = []
    """Answers to judge: one file per model, JSONL as `tunescope generate` writes it (id, messages,
    output) or just-eval's JSON (id, instruction, output). Pairwise mode takes exactly two."""
    labels: list[str] | None = None
    """Model names in reports, one per responses file (default: the records' generator field, else the
    file name)."""
    import_justeval: str | None = None
    """Instead of judging: a just-eval output file (its judged records) to re-read with strict parsing and
    summarise with intervals, without imputing N/A."""
    mode: Literal["score", "safety", "pairwise"] = "score"
    """score: helpfulness, clarity, factuality, depth and engagement, 1-5 each; safety: one 1-5 safety score;
    pairwise: A, B or tie per aspect for the two responses files, asked in both orders."""
    backend: Literal["hf", "openai"] = "hf"
    """openai: any OpenAI-compatible endpoint (--base-url, --judge-model); hf: a local transformers model."""
    judge_model: str | None = None
    """The judge: the model name the server knows (openai), or a local model (hf; default smollm2, a small
    stand-in whose scores only show that the pipeline works)."""
    base_url: str | None = None
    """OpenAI-compatible endpoint for the openai backend, e.g. http://127.0.0.1:8000/v1."""
    api_key_env: str = "OPENAI_API_KEY"
    """Name of the environment variable that holds the API key; the key itself is never stored. Unset sends
    no key (fine for local servers)."""
    json_mode: JsonMode = "auto"
    """How to ask for JSON: auto (the first of json_schema, json_object_schema, json_object, none that the server
    accepts, found with one request and remembered in the cache per server and model); json_schema (output
    constrained to the reply schema: OpenAI, vLLM, Ollama); json_object_schema (the same in llama-cpp-python's
    dialect); json_object; or none (the prompt alone). The hf backend starts each reply with the schema's opening
    unless none."""
    temperature: float = Field(default=0.0, ge=0)
    """Judge sampling temperature (just-eval uses 0)."""
    max_tokens: int = Field(default=1024, gt=0)
    """Longest judge reply in tokens (just-eval uses 1024)."""
    concurrency: int = Field(default=8, gt=0)
    """Requests in flight at once (the hf backend always runs one at a time)."""
    timeout: float = Field(default=120.0, gt=0)
    """Seconds to wait for one reply before retrying it."""
    max_retries: int = Field(default=5, ge=0)
    """Retries per request after 429, 5xx, timeouts or lost connections (a refusal that will not change, such as
    another 4xx or a 5xx naming an unsupported parameter, is not retried)."""
    backoff: float = Field(default=1.0, ge=0)
    """Seconds before the first retry, doubling for each further one; a server's Retry-After (up to 60 s) wins."""
    cache: bool = True
    """Read judge replies from the on-disk cache and store new ones, so no request is paid for twice."""
    cache_dir: str | None = None
    """Directory of the reply cache (default: <tunescope cache>/judge, shared by all runs)."""
    limit: int | None = Field(default=None, gt=0)
    """Judge only the first N answers of each responses file."""
    stand_in: bool | None = None
    """Label scores as coming from a small stand-in judge; unset: yes for local judges under 1B parameters."""
    justeval_na_as_five: bool = False
    """Also report just-eval's means, which count N/A as 5.0, in a separate labelled block (for comparing with
    published numbers only; the main means never impute)."""
    bootstrap_samples: int = Field(default=2000, ge=0)
    """Bootstrap resamples behind each 95% interval."""
    seed: int = 0
    """Seed of the bootstrap."""
    plots: bool = True
    """Draw radar.png and bars.png (score and safety) or pairwise.png."""
    export_justeval: bool = False
    """Also write judgements.justeval.json in just-eval's record format (score and safety modes)."""
    device: str | None = None
    """Device of the hf backend's model (default: a GPU when there is one, else the CPU)."""

    @model_validator(mode="after")
    def _consistent(self) -> JudgeConfig:
        if bool(self.responses) == bool(self.import_justeval):
            raise ValueError("give either --responses (answers to judge) or --import-justeval (a just-eval file)")
        if self.mode == "pairwise" and self.responses and len(self.responses) != 2:
            raise ValueError(f"pairwise mode compares exactly two --responses files, got {len(self.responses)}")
        if self.import_justeval and self.mode == "pairwise":
            raise ValueError("--import-justeval reads score and safety records, not pairwise ones")
        if self.labels is not None and len(self.labels) != len(self.responses):
            raise ValueError(f"{len(self.labels)} --labels for {len(self.responses)} --responses files")
        if self.backend == "openai" and self.responses and not (self.base_url and self.judge_model):
            raise ValueError("the openai backend needs --base-url and --judge-model")
        return self

    @property
    def resolved_judge_model(self) -> str:
        """The judge model, with the hf backend's default filled in."""
        return self.judge_model or DEFAULT_LOCAL_JUDGE
