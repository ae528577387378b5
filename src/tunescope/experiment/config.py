"""Settings of `tunescope experiment`: a grid of models x methods x datasets x subset sizes.

Each stage's own settings are the ones its command takes: ``train`` holds TrainConfig fields,
``generate`` GenerateConfig fields, and so on; the grid fills in model, data, method, paths.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from tunescope.config import Config

Method = Literal["lora", "full"]


class DataSource(Config):
    """One source of a dataset that mixes several."""

    data: str
    """File, dataset directory, Hugging Face id or tunescope asset name."""
    subset_size: int | None = Field(default=None, gt=0)
    """Take the first N examples of the seeded shuffle (all when unset)."""
    format: str = "auto"
    """Record shape, as for `tunescope train --format`."""


class DatasetSpec(Config):
    """A training dataset of the grid: one source, or a mixture written once into the experiment."""

    name: str
    """Short name used in stage directories and the report."""
    sources: list[DataSource]
    """Where the examples come from; several are concatenated (ids kept, so probes find their facts)."""


class EvalSettings(Config):
    """What the tuned models answer for the shift analysis, the judge and borrowing."""

    prompts: str = "mtbench"
    """Evaluation prompts (any data source)."""
    split: str = "train"
    """Split of a Hugging Face dataset; slices work, e.g. 'test[:800]' for the paper's JE-800."""
    subset_size: int | None = Field(default=None, gt=0)
    """Answer only the first N prompts of the seeded shuffle."""
    max_new_tokens: int = Field(default=256, gt=0)
    """Longest response, in tokens."""


class ProbeSettings(Config):
    """Knowledge and forgetting probes."""

    enabled: bool = True
    """Run the probes for each cell of the grid."""
    max_questions: int = Field(default=96, gt=0)
    """Fictional-fact questions at most."""
    passages: int = Field(default=24, gt=0)
    """Held-out passages for the forgetting loss."""


class ExperimentConfig(Config):
    """Experiment settings."""

    models: list[str] = Field(default_factory=lambda: ["smollm2"])
    """Base models to tune."""
    methods: list[Method] = Field(default_factory=lambda: ["lora", "full"])
    """Tuning methods."""
    datasets: list[DatasetSpec | str] = Field(default_factory=lambda: ["chitchat"])
    """Training datasets: a data source, or a name with several sources to mix."""
    subset_sizes: list[int | None] = Field(default_factory=lambda: [None])
    """Nested training-set sizes (null: the whole dataset), for the data-scaling curves."""
    train: dict[str, Any] = Field(default_factory=dict)
    """TrainConfig settings shared by every run (epochs, learning rates, batch sizes, ...)."""
    eval: EvalSettings = Field(default_factory=EvalSettings)
    """Evaluation prompts and response length."""
    shift: dict[str, Any] = Field(default_factory=dict)
    """ShiftConfig settings (mode, base_prompt, ...)."""
    borrow: bool = True
    """Run the borrowing analysis for every tuned run."""
    judge: dict[str, Any] | None = None
    """JudgeConfig settings; unset: no judge stage."""
    probes: ProbeSettings = Field(default_factory=ProbeSettings)
    """Knowledge and forgetting probes."""

    @field_validator("datasets")
    @classmethod
    def _named(cls, datasets: list[DatasetSpec | str]) -> list[DatasetSpec | str]:
        names = [dataset if isinstance(dataset, str) else dataset.name for dataset in datasets]
        if len(set(names)) != len(names):
            raise ValueError(f"dataset names must differ: {names}")
        return datasets

    def dataset_specs(self) -> list[DatasetSpec]:
        """Every dataset as a spec (a plain source becomes a one-source spec named after it)."""
        return [
            dataset
            if isinstance(dataset, DatasetSpec)
            else DatasetSpec(name=_short(dataset), sources=[DataSource(data=dataset)])
            for dataset in self.datasets
        ]


def _short(source: str) -> str:
    return Path(source).stem or source.replace("/", "_")
