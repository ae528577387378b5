"""Load tokenizers and causal LMs from whatever a user names.

A model can be named by:

* a tunescope asset name (``smollm2``, ``gemma3-270m``);
* a tunescope run directory (its ``adapter/`` or ``model/`` is used);
* a local Hugging Face model directory (safetensors weights only);
* a PEFT adapter directory (its base is loaded, then the adapter);
* a ``.gguf`` file (dequantized once into the cache, then loaded from safetensors);
* a Hugging Face hub id, passed straight to ``from_pretrained`` when online.

Weights are only ever read from safetensors: pickled checkpoints are refused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from tunescope import assets
from tunescope.assets import cache_dir, convert_gguf
from tunescope.config import Config
from tunescope.errors import UserError
from tunescope.files import atomic_path, sha256_file

RUN_MARKER = "run.json"
MERGED_PARENT = "merged-parent"
"""In a LoRA run that started from another LoRA run: the starting model with that run's adapter merged in,
the base of the new adapter (see :func:`tunescope.train.pipeline.train`)."""


class ModelSettings(Config):
    """Model settings."""

    model: str = "smollm2"
    """The model: a tunescope asset name, a local model or adapter directory, a .gguf file, or a
    Hugging Face model id."""
    trust_remote_code: bool = False
    """Run model code shipped with the checkpoint. Off unless you trust its source."""


@dataclass(frozen=True)
class ModelSource:
    """Where a named model's files are."""

    spec: str
    """The name as the user gave it."""
    location: str
    """Local directory, or hub id."""
    kind: Literal["local", "hub", "adapter"]
    """How to load ``location``."""
    base: ModelSource | None = None
    """For an adapter: the model it was trained on."""
    license: str | None = None
    """Licence of an embedded model (tunescope assets); None where tunescope does not know it."""

    def describe(self) -> dict[str, Any]:
        """Plain description for provenance files."""
        out: dict[str, Any] = {"spec": self.spec, "location": self.location, "kind": self.kind}
        if self.license is not None:
            out["license"] = self.license
        if self.base is not None:
            out["base"] = self.base.describe()
        return out


def resolve_model(spec: str) -> ModelSource:
    """Work out what ``spec`` names, converting GGUF files and preparing assets on the way.

    Raises:
        UserError: when ``spec`` is neither a usable local path nor an asset name; hub ids are
            only checked when loading.
    """
    path = Path(spec).expanduser()
    if not path.exists():
        if spec in assets.ASSETS:
            return ModelSource(spec, str(assets.model_path(spec)), "local", license=assets.ASSETS[spec].license)
        if spec.endswith(".gguf") or spec.startswith((".", "/", "~")) or spec.count("/") > 1:
            raise UserError(f"model '{spec}' not found: no such file or directory")
        return ModelSource(spec, spec, "hub")
    if path.is_file():
        if path.suffix != ".gguf":
            raise UserError(f"model '{spec}': a model file must be a .gguf file; otherwise pass a directory")
        return ModelSource(spec, str(_converted_gguf(path)), "local")
    if (path / RUN_MARKER).is_file():
        run = json.loads((path / RUN_MARKER).read_text(encoding="utf-8"))
        return resolve_model(str(path / run["artifact"]))
    if (path / "adapter_config.json").is_file():
        return ModelSource(spec, str(path), "adapter", _adapter_base(path))
    if (path / "config.json").is_file():
        return ModelSource(spec, str(path), "local")
    raise UserError(f"model '{spec}': directory has no config.json or adapter_config.json")


def _adapter_base(adapter_dir: Path) -> ModelSource:
    config = json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))
    recorded = config.get("base_model_name_or_path")
    # A run copied to another machine records a cache path that does not exist there; the run's
    # own merged starting model, or its record of what the user asked for (e.g. "smollm2"), resolves anywhere.
    run_file = adapter_dir.parent / RUN_MARKER
    merged = adapter_dir.parent / MERGED_PARENT
    if recorded and not Path(recorded).exists() and (merged / "config.json").is_file():
        recorded = str(merged)
    elif recorded and not Path(recorded).exists() and run_file.is_file():
        recorded = json.loads(run_file.read_text(encoding="utf-8")).get("model", recorded)
    if not recorded:
        raise UserError(f"{adapter_dir}/adapter_config.json: no base_model_name_or_path")
    return resolve_model(recorded)


def _converted_gguf(gguf: Path) -> Path:
    target = cache_dir() / "gguf" / sha256_file(gguf)[:16]
    if not (target / "config.json").is_file():
        with atomic_path(target) as tmp:
            tmp.mkdir()
            convert_gguf(gguf, tmp)
    return target


def _weights_dir(source: ModelSource) -> ModelSource:
    return source.base if source.kind == "adapter" and source.base else source


def _hub_error(source: ModelSource, err: Exception) -> UserError:
    reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if source.kind == "hub":
        return UserError(
            f"model '{source.spec}' not found: no such local path, and the Hugging Face hub could not "
            f"provide it ({reason})"
        )
    return UserError(f"model '{source.spec}': cannot load from {source.location}: {reason}")


def load_tokenizer(spec: str | ModelSource, *, trust_remote_code: bool = False) -> Any:
    """Load the tokenizer for ``spec``; an adapter's own tokenizer files win over its base's."""
    from transformers import AutoTokenizer

    source = spec if isinstance(spec, ModelSource) else resolve_model(spec)
    location = source.location
    if source.kind == "adapter" and not (Path(location) / "tokenizer_config.json").is_file():
        location = _weights_dir(source).location
    try:
        tokenizer = AutoTokenizer.from_pretrained(location, trust_remote_code=trust_remote_code)
    except Exception as err:  # transformers raises OSError, ValueError, HTTP errors...
        raise _hub_error(source, err) from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(
    spec: str | ModelSource,
    *,
    dtype: Any = None,
    trust_remote_code: bool = False,
    adapter_trainable: bool = False,
) -> Any:
    """Load a causal LM (with its PEFT adapter when ``spec`` names one).

    Args:
        spec: What the user named, or an already resolved source.
        dtype: torch dtype of the weights; float32 when None.
        trust_remote_code: Allow model code from the checkpoint to run (off unless asked for).
        adapter_trainable: Load an adapter with trainable weights (to keep training it).
    """
    import torch
    from transformers import AutoModelForCausalLM

    source = spec if isinstance(spec, ModelSource) else resolve_model(spec)
    weights = _weights_dir(source)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            weights.location,
            dtype=dtype or torch.float32,
            trust_remote_code=trust_remote_code,
            use_safetensors=True,
        )
    except Exception as err:
        raise _hub_error(weights, err) from None
    if source.kind == "adapter":
        from peft import PeftModel

        if not (Path(source.location) / "adapter_model.safetensors").is_file():
            raise UserError(f"{source.location}: no adapter_model.safetensors (pickled adapters are not loaded)")
        model = PeftModel.from_pretrained(model, source.location, is_trainable=adapter_trainable)
    return model
