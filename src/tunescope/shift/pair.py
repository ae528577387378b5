"""The two models of a comparison: loaded once, checked to share a vocabulary, read one side at a time.

When the tuned model is a LoRA adapter on the base model, one model is held in memory and the
base side is read with PEFT's ``disable_adapter()``. That is exact only when the adapter did not
train bias terms (PEFT's caveat), so an adapter with trained biases is compared against a
separately loaded base instead.

Each side is read in two steps, so that full-vocabulary logits exist only for a bounded chunk of
positions: ``features`` runs the transformer body once over a batch and keeps the final hidden
state at the response positions; ``logits`` applies the output layer to a chunk of them.
"""

from __future__ import annotations

import contextlib
import json
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from tunescope.errors import UserError
from tunescope.models import ModelSource, load_model, load_tokenizer, resolve_model

Side = Literal["base", "tuned"]
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def check_same_vocabulary(base_tokenizer: Any, tuned_tokenizer: Any, base_name: str, tuned_name: str) -> None:
    """Refuse a pair whose tokenizers map tokens to ids differently.

    Raises:
        UserError: naming both models and the first difference.
    """
    base_vocab, tuned_vocab = base_tokenizer.get_vocab(), tuned_tokenizer.get_vocab()
    if base_vocab == tuned_vocab:
        return
    prefix = f"--base {base_name} and --tuned {tuned_name} have different tokenizers"
    suffix = "; token shift needs both models to read the same token ids"
    if len(base_vocab) != len(tuned_vocab):
        raise UserError(f"{prefix} ({len(base_vocab)} vs {len(tuned_vocab)} tokens){suffix}")
    token = next(t for t in sorted(base_vocab) if base_vocab[t] != tuned_vocab.get(t))
    raise UserError(f"{prefix} (token {token!r} is id {base_vocab[token]} vs {tuned_vocab.get(token)}){suffix}")


def _inner(model: Any) -> Any:
    """The transformers model inside a PEFT wrapper (the LoRA layers are injected in place)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _same_weights(a: ModelSource, b: ModelSource) -> bool:
    if a.kind == "hub" or b.kind == "hub":
        return a.location == b.location
    return Path(a.location).resolve() == Path(b.location).resolve()


def _adapter_bias(adapter_dir: str) -> str:
    config = json.loads((Path(adapter_dir) / "adapter_config.json").read_text(encoding="utf-8"))
    return str(config.get("bias", "none"))


@dataclass
class ModelPair:
    """Base and tuned model, ready to be read side by side."""

    tuned: Any
    """The tuned model (a PEFT model when it is an adapter)."""
    base: Any | None
    """The base model, or None when it is the tuned model with its adapter disabled."""
    tuned_tokenizer: Any
    """Tokenizer of the tuned model (builds prompts from text)."""
    base_tokenizer: Any
    """Tokenizer of the base model (same vocabulary, possibly another chat template)."""
    device: torch.device
    """Where both models run."""
    description: dict[str, Any]
    """Provenance: sources, pairing, precision, device."""
    _separable_head: dict[str, bool] = field(default_factory=dict)

    @property
    def pairing(self) -> Literal["disable_adapter", "two_models"]:
        """How the base side is obtained."""
        return "disable_adapter" if self.base is None else "two_models"

    @property
    def vocab_size(self) -> int:
        """Rows of the output layer: the ids both models can score."""
        return _inner(self.tuned).get_output_embeddings().weight.shape[0]

    @contextlib.contextmanager
    def side(self, side: Side) -> Iterator[Any]:
        """Yield the transformers model that computes ``side`` (inside disable_adapter for a shared base)."""
        if side == "tuned":
            yield _inner(self.tuned)
        elif self.base is not None:
            yield _inner(self.base)
        else:
            with self.tuned.disable_adapter():
                yield _inner(self.tuned)

    def features(self, side: Side, input_ids: Tensor, attention_mask: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
        """One forward pass of ``side``'s body; the final hidden states at positions ``(rows, cols)``.

        For a model whose logits are more than its output layer applied to the hidden state (e.g.
        soft-capped logits), the logits themselves are returned instead, so that memory is then
        bounded by the batch rather than by the chunk.
        """
        with self.side(side) as model:
            if self._separable(side, model):
                hidden = model.get_decoder()(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
                return hidden.last_hidden_state[rows, cols]
            return model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits[rows, cols]

    def logits(self, side: Side, features: Tensor) -> Tensor:
        """Full-vocabulary logits of ``side`` for a chunk of positions, from ``features``' output."""
        with self.side(side) as model:
            if self._separable(side, model):
                return model.get_output_embeddings()(features)
            return features

    def _separable(self, side: Side, model: Any) -> bool:
        # Checked once per side on a short input: does output_layer(body(x)) give the model's logits?
        if side not in self._separable_head:
            ids = torch.arange(8, device=self.device).unsqueeze(0) % self.vocab_size
            try:
                hidden = model.get_decoder()(input_ids=ids, use_cache=False).last_hidden_state
                separate = model.get_output_embeddings()(hidden)
                whole = model(input_ids=ids, use_cache=False).logits
                self._separable_head[side] = bool(torch.allclose(separate, whole, rtol=1e-4, atol=1e-4))
            except (AttributeError, NotImplementedError, TypeError):
                self._separable_head[side] = False
            if not self._separable_head[side]:
                warnings.warn(
                    f"the {side} model's logits are not its output layer applied to its hidden states; "
                    "computing whole logits per batch (more memory)",
                    stacklevel=4,
                )
        return self._separable_head[side]


def load_pair(
    base: str,
    tuned: str,
    *,
    precision: str = "fp32",
    share_base_weights: bool = True,
    trust_remote_code: bool = False,
    device: str | None = None,
) -> ModelPair:
    """Load the base and tuned model for a comparison, sharing weights when the tuned one is LoRA on the base.

    Raises:
        UserError: when a model cannot be found or the two do not share a vocabulary.
    """
    base_source, tuned_source = resolve_model(base), resolve_model(tuned)
    base_tokenizer = load_tokenizer(base_source, trust_remote_code=trust_remote_code)
    tuned_tokenizer = load_tokenizer(tuned_source, trust_remote_code=trust_remote_code)
    check_same_vocabulary(base_tokenizer, tuned_tokenizer, base, tuned)

    shared = (
        share_base_weights
        and tuned_source.kind == "adapter"
        and tuned_source.base is not None
        and base_source.kind != "adapter"
        and _same_weights(tuned_source.base, base_source)
    )
    if shared and (bias := _adapter_bias(tuned_source.location)) != "none":
        warnings.warn(
            f"the adapter {tuned} trained biases (bias={bias!r}), so disabling it does not restore the base "
            "model; loading the base separately",
            stacklevel=2,
        )
        shared = False

    dtype = PRECISIONS[precision]
    target = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    kwargs = {"dtype": dtype, "trust_remote_code": trust_remote_code}
    tuned_model = load_model(tuned_source, **kwargs).eval().to(target)
    base_model = None if shared else load_model(base_source, **kwargs).eval().to(target)
    if base_model is not None:
        base_rows, tuned_rows = (_inner(m).get_output_embeddings().weight.shape[0] for m in (base_model, tuned_model))
        if base_rows != tuned_rows:
            raise UserError(
                f"--base {base} and --tuned {tuned} have output layers of different sizes "
                f"({base_rows} vs {tuned_rows} tokens); token shift needs the same vocabulary"
            )
    description = {
        "base": base_source.describe(),
        "tuned": tuned_source.describe(),
        "pairing": "disable_adapter" if shared else "two_models",
        "precision": precision,
        "device": str(target),
    }
    return ModelPair(tuned_model, base_model, tuned_tokenizer, base_tokenizer, target, description)
