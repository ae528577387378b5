"""Settings of `tunescope experiment`: a grid of models x arms x datasets x subset sizes.

Each stage's own settings are the ones its command takes: ``train`` holds TrainConfig fields,
``generate`` GenerateConfig fields, and so on; the grid fills in model, data, method, paths.

The grid's ``methods`` are its *arms*, each trained and measured in every cell:

* ``lora``, ``full``: the paper's LFT and SFT;
* ``nft``: full fine-tuning with NEFTune noise on the embeddings (alpha 5 unless set), the paper's NFT;
* ``cpt+lora``, ``cpt+full``: continued pre-training on the ``cpt`` text (one stage per model, shared by
  both), then LoRA or full instruction tuning on the dataset, starting from that run;
* a mapping ``{arm: KIND, ...}`` with the arm's own settings, where a list sweeps a setting (one arm per
  value, named after it): ``{arm: lora, lora_r: [2, 8, 32]}`` is ``lora-r2``, ``lora-r8`` and ``lora-r32``;
  ``{arm: lora, learning_rate: 5.0e-5}`` is ``lora-lr5e-5``, LoRA at full fine-tuning's rate.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from tunescope.config import Config
from tunescope.train.config import TrainConfig
from tunescope.train.neftune import NEFTUNE_DEFAULT_ALPHA

Method = Literal["lora", "full"]
ArmKind = Literal["lora", "full", "nft", "cpt+lora", "cpt+full"]
ARM_METHODS: dict[str, Method] = {"lora": "lora", "full": "full", "nft": "full", "cpt+lora": "lora", "cpt+full": "full"}
"""Each arm kind's tuning method (what its adapter or model is)."""
SWEPT = {"lora_r": "r", "learning_rate": "lr", "neftune_noise_alpha": "noise"}
"""Arm settings that may be swept, and the prefix each value gets in the arm's name (and, with '=', its label)."""


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
    passage_tokens: int = Field(default=512, gt=1)
    """Tokens of each held-out passage scored at most (its start)."""
    subset_sizes: list[int | None] | None = None
    """Training-set sizes whose cells are probed (null in the list: the full set); by default every size.
    The knowledge finding reads the largest cell, which teaches the most facts."""


class ArmSpec(Config):
    """An arm with its own settings; a list of values sweeps a setting (one arm per value)."""

    arm: ArmKind
    """What the arm is: lora, full, nft, cpt+lora or cpt+full (see the experiment's methods)."""
    name: str | None = None
    """The arm's name in stage labels, the manifest and the report; by default the kind followed by the
    settings given here (lora-r32, lora-lr2e-4); with a sweep, each value is appended to it."""
    lora_r: int | list[int] | None = None
    """LoRA rank of this arm; a list sweeps it."""
    learning_rate: float | list[float] | None = None
    """Learning rate of this arm, instead of the grid's rate for its method; a list sweeps it."""
    neftune_noise_alpha: float | list[float] | None = None
    """NEFTune noise scale of this arm (nft: 5 unless set); a list sweeps it."""
    train: dict[str, Any] = Field(default_factory=dict)
    """Further TrainConfig settings for this arm only (on top of the grid's train settings)."""

    @field_validator("lora_r", "learning_rate", "neftune_noise_alpha")
    @classmethod
    def _positive(cls, value: Any) -> Any:
        values = value if isinstance(value, list) else [] if value is None else [value]
        if isinstance(value, list) and not value:
            raise ValueError("a sweep needs at least one value")
        if any(v <= 0 for v in values):
            raise ValueError(f"must be positive, got {value}")
        return value


@dataclass(frozen=True)
class Arm:
    """One arm of the grid as it runs: a name, how it trains, and whether it starts from continued pre-training."""

    name: str
    """Unique name: the stage keys of the manifest (``<name>/train``) and the report's labels."""
    kind: ArmKind
    """lora, full, nft, cpt+lora or cpt+full."""
    settings: dict[str, Any]
    """TrainConfig settings of this arm on top of the grid's (empty for plain lora and full)."""
    label: str = ""
    """How the report names it: the kind and the values set for it (``lora r=2``), or its given name."""

    @property
    def method(self) -> Method:
        """The training method, lora or full: what its artifact is."""
        return ARM_METHODS[self.kind]

    @property
    def continued_pretraining(self) -> bool:
        """Whether it trains on top of the grid's continued pre-training run (the ``cpt`` stage) of its model."""
        return self.kind.startswith("cpt+")

    def describe(self) -> dict[str, Any]:
        """For the manifest: what the report needs to group and compare arms."""
        return {
            "name": self.name,
            "label": self.label or self.name,
            "kind": self.kind,
            "method": self.method,
            "settings": self.settings,
            "parent": "cpt" if self.continued_pretraining else None,
        }


def _value_name(value: float) -> str:
    """A compact, readable number for an arm name: 8, 0.5, 2e-4, 5e-5."""
    if float(value).is_integer() and abs(value) < 1e4:
        return str(int(value))
    mantissa, exponent = f"{value:.3e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}e{int(exponent)}" if not 1e-2 <= abs(value) < 1e4 else f"{value:g}"


def expand_arm(spec: str | ArmSpec) -> list[Arm]:
    """The arms one entry of ``methods`` stands for: one, or one per combination of swept values."""
    if isinstance(spec, str):
        spec = ArmSpec(arm=spec)
    method = ARM_METHODS[spec.arm]
    given = {key: getattr(spec, key) for key in SWEPT if getattr(spec, key) is not None}
    if spec.arm == "nft" and "neftune_noise_alpha" not in given:
        base = {"neftune_noise_alpha": NEFTUNE_DEFAULT_ALPHA}
    else:
        base = {}
    swept = {key: value if isinstance(value, list) else [value] for key, value in given.items()}
    # A named arm names itself: only the values it sweeps are added to its name and label.
    shown = [key for key in swept if spec.name is None or isinstance(given[key], list)]
    arms = []
    for values in itertools.product(*swept.values()):
        chosen = dict(zip(swept, values, strict=True))
        name = "-".join([spec.name or spec.arm, *(f"{SWEPT[key]}{_value_name(chosen[key])}" for key in shown)])
        label = " ".join([spec.name or spec.arm, *(f"{SWEPT[key]}={_value_name(chosen[key])}" for key in shown)])
        settings = {**base, **spec.train}
        for key, value in chosen.items():
            # The grid's method-specific rate would win over a plain learning_rate, so set the method's own.
            settings[f"{method}_learning_rate" if key == "learning_rate" else key] = value
        arms.append(Arm(name, spec.arm, settings, label))
    return arms


class ContinuedPretraining(Config):
    """The continued pre-training stage of the cpt+lora and cpt+full arms (one run per model)."""

    data: str = "facts-text"
    """Text to continue pre-training on: a .txt file or directory, records with a 'text' field, or an asset
    (facts-text: the invented facts as encyclopedia articles)."""
    method: Method = "full"
    """How it trains: full (teaching knowledge takes the capacity) or lora (its adapter is merged into the
    model before instruction tuning)."""
    subset_size: int | None = Field(default=None, gt=0)
    """Documents to train on (the first N of the seeded shuffle; all when unset)."""
    train: dict[str, Any] = Field(default_factory=dict)
    """TrainConfig settings of this stage only, on top of the grid's train settings (epochs, learning rates)."""


class ExperimentConfig(Config):
    """Experiment settings."""

    models: list[str] = Field(default_factory=lambda: ["smollm2"])
    """Base models to tune."""
    methods: list[ArmKind | ArmSpec] = Field(default_factory=lambda: ["lora", "full"])
    """The arms: lora, full, nft, cpt+lora, cpt+full, or {arm: KIND, ...} with the arm's own settings,
    where a list sweeps a setting (lora_r, learning_rate, neftune_noise_alpha)."""
    cpt: ContinuedPretraining = Field(default_factory=ContinuedPretraining)
    """Continued pre-training before the cpt+lora and cpt+full arms."""
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

    @field_validator("methods", mode="before")
    @classmethod
    def _arm_specs(cls, methods: Any) -> Any:
        # Read each entry as the one type it is meant to be, so an error names what is wrong with it rather
        # than every type the entry failed to be.
        if not isinstance(methods, list):
            return methods
        specs = []
        for index, entry in enumerate(methods):
            if isinstance(entry, str) and entry not in ARM_METHODS:
                raise ValueError(f"methods[{index}]: unknown arm {entry!r} (expected {', '.join(ARM_METHODS)})")
            if isinstance(entry, dict):
                try:
                    entry = ArmSpec.model_validate(entry)
                except ValidationError as err:
                    first = err.errors()[0]
                    where = ".".join(str(part) for part in first["loc"])
                    message = first["msg"].removeprefix("Value error, ")
                    raise ValueError(f"methods[{index}]: {where}: {message}") from None
            specs.append(entry)
        return specs

    @field_validator("datasets")
    @classmethod
    def _named(cls, datasets: list[DatasetSpec | str]) -> list[DatasetSpec | str]:
        names = [dataset if isinstance(dataset, str) else dataset.name for dataset in datasets]
        if len(set(names)) != len(names):
            raise ValueError(f"dataset names must differ: {names}")
        return datasets

    @model_validator(mode="after")
    def _probed_sizes_are_in_the_grid(self) -> ExperimentConfig:
        if missing := [size for size in self.probes.subset_sizes or [] if size not in self.subset_sizes]:
            raise ValueError(f"probes.subset_sizes: {missing} not among the grid's subset_sizes {self.subset_sizes}")
        return self

    @model_validator(mode="after")
    def _arms_are_distinct_and_valid(self) -> ExperimentConfig:
        names = [arm.name for arm in self.arms()]
        if repeated := sorted({name for name in names if names.count(name) > 1}):
            raise ValueError(f"arm names must differ, but {', '.join(repeated)} appears twice; give one a name")
        # Settings are checked now rather than when the arm's training stage starts, hours later.
        for arm in self.arms():
            _check_train_settings({**self.train, **arm.settings, "method": arm.method}, f"arm {arm.name}")
        if any(arm.continued_pretraining for arm in self.arms()):
            _check_train_settings({**self.train, **self.cpt.train, "method": self.cpt.method}, "cpt")
        return self

    def arms(self) -> list[Arm]:
        """Every arm, sweeps expanded, in the order of ``methods``."""
        return [arm for spec in self.methods for arm in expand_arm(spec)]

    def dataset_specs(self) -> list[DatasetSpec]:
        """Every dataset as a spec (a plain source becomes a one-source spec named after it)."""
        return [
            dataset
            if isinstance(dataset, DatasetSpec)
            else DatasetSpec(name=_short(dataset), sources=[DataSource(data=dataset)])
            for dataset in self.datasets
        ]


def _check_train_settings(settings: dict[str, Any], where: str) -> None:
    try:
        TrainConfig.model_validate({**settings, "data": "-", "out": "-"})
    except ValidationError as err:
        first = err.errors()[0]
        name = ".".join(str(part) for part in first["loc"])
        raise ValueError(f"{where}: {name}: {first['msg']}") from None


def _short(source: str) -> str:
    return Path(source).stem or source.replace("/", "_")
