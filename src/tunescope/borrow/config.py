"""Settings of `tunescope borrow`: which shift run, which training data, which spans, what to compute."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from tunescope.borrow.index import SearchIn
from tunescope.config import Config
from tunescope.data import DataSettings
from tunescope.data.formats import DataFormat
from tunescope.models import Precision
from tunescope.rundir import saved_config

RUNTIME_SETTINGS = frozenset({"out", "index_dir", "device", "batch_size", "embed_batch_size"})
"""Settings that do not change any result, so a rerun into the same --out may change them."""


class TrainingDataSettings(Config):
    """Training data settings."""

    RENAMED = {
        "train": "data", "train_format": "format", "train_split": "split",
        "train_subset_size": "subset_size", "train_subset_seed": "subset_seed",
    }  # fmt: skip

    data: str
    """The training data: a .json/.jsonl/.parquet/.csv file, a saved dataset directory, a Hugging Face
    dataset id or an asset name; or the tuned model's tunescope run directory, whose data settings
    (data, format, split, subset) are then used."""
    format: DataFormat | None = None
    """Record shape of the training data (default: the run's, else detected)."""
    split: str | None = None
    """Split of a Hugging Face training dataset (default: the run's, else train)."""
    subset_size: int | None = Field(default=None, gt=0)
    """Use the first N examples of the seeded shuffle, as training did (default: the run's, else all)."""
    subset_seed: int | None = None
    """Seed of that shuffle (default: the run's, else 0)."""
    search_in: SearchIn = "both"
    """Which side of each training example is searched: instructions, responses or both."""
    index_dir: str | None = None
    """Where training-set indexes and embeddings are cached (default: <tunescope cache>/borrow)."""

    def data_settings(self) -> DataSettings:
        """The training data as the data loader takes it, with a run directory's settings filled in."""
        path = Path(self.data).expanduser()
        saved = saved_config(path) if path.is_dir() else None
        base = saved if saved and "data" in saved else {"data": self.data}
        chosen = {
            "data": base["data"],
            "format": self.format or base.get("format") or "auto",
            "split": self.split or base.get("split") or "train",
            "subset_size": self.subset_size if self.subset_size is not None else base.get("subset_size"),
            "subset_seed": self.subset_seed if self.subset_seed is not None else base.get("subset_seed", 0),
        }
        return DataSettings(**chosen)


class AnswerSettings(Config):
    """Model answer settings."""

    RENAMED = {"base_model": "base", "tuned_model": "tuned"}

    responses: str | None = None
    """The tuned model's responses file that the shift run scored (default: the one its settings name)."""
    base_responses: str | None = None
    """The base model's answers to the same prompts (`tunescope generate` output), the baseline of the
    borrowed-word share. A missing file is generated there when --generate-base is on."""
    generate_base: bool = True
    """Generate the base model's answers when --base-responses is not an existing file (into
    --base-responses, else <out>/base-responses.jsonl; resumable). Off: no base-model baseline."""
    base: str | None = None
    """The model that gives the base answers (default: the shift run's base)."""
    tuned: str | None = None
    """The model asked the rephrased instructions of the counterfactual check (default: the shift run's tuned)."""
    max_new_tokens: int | None = Field(default=None, gt=0)
    """Longest generated answer (default: the limit the tuned responses were generated with)."""
    batch_size: int = Field(default=8, gt=0)
    """Prompts answered together when generating."""
    precision: Precision = "auto"
    """Weights' precision; auto is bf16 on a CUDA GPU that supports it, fp32 elsewhere."""


class BorrowConfig(AnswerSettings, TrainingDataSettings):
    """Borrowing settings."""

    shift: str
    """A finished `tunescope shift` run directory: its tokens' classes, spans and texts are analysed."""
    out: str
    """Output directory: borrow.json, spans.jsonl, borrow.html, config.yaml, and generated answers."""
    spans: str | None = None
    """Hallucination spans to attribute: JSONL of example_id, start, end (characters of the response), and
    optional text, label, source and rephrased (an instruction for the counterfactual check)."""
    top_tokens: int = Field(default=125, ge=0)
    """Most frequent shifted and marginal tokens listed (the paper's Fig. 12 shows 125)."""
    candidates: int = Field(default=5, gt=0)
    """Candidate source examples listed per span, by embedding and by n-gram overlap."""
    max_ids: int = Field(default=100, gt=0)
    """Most ids of training examples containing a span listed per span (counts are always complete)."""
    embeddings: bool = True
    """Rank candidate sources by sentence embedding (all-MiniLM-L6-v2, computed once per dataset and cached)."""
    embed_max_length: int = Field(default=256, gt=0)
    """Tokens of each text the embedder reads (its own limit is 256)."""
    embed_batch_size: int = Field(default=64, gt=0)
    """Texts per embedder forward pass."""
    device: str | None = None
    """Device of the embedder (default: a GPU when there is one, else the CPU)."""
    bootstrap_samples: int = Field(default=1000, ge=0)
    """Resamples of responses (or spans) behind each 95% interval."""
    seed: int = 0
    """Seed of the bootstrap."""
