"""A local causal LM as a backend: one reply at a time, generated with transformers.

:class:`HFBackend` loads its model through :mod:`tunescope.models` (a tunescope asset, model or
adapter directory, .gguf file, or hub id) only when a request actually needs it, so a rerun whose
replies are all cached never loads it. With a reply schema, decoding is constrained to it
(:mod:`tunescope.llm.constrained`), so even a tiny model replies with valid JSON of the schema. A
model smaller than 1B parameters is labelled a stand-in: it shows that a pipeline works, not what a
strong model would answer.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from tunescope.errors import UserError
from tunescope.llm.base import BackendError, Reply
from tunescope.llm.constrained import (
    SchemaConstraint,
    bounded_schema,
    grammar_tokenizer,
    string_budget,
    tokens_needed,
)
from tunescope.models import load_model, load_tokenizer, resolve_model

STAND_IN_MAX_PARAMETERS = 1_000_000_000
"""A local model smaller than this is labelled a stand-in: its judgements or rewrites are not meaningful."""
MIN_STRING_CHARS = 8
"""Fewest characters a constrained reply leaves each free string (a reason); fewer is a --max-tokens error."""


def _library_version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


def _stop_ids(model: Any, tokenizer: Any) -> list[int]:
    """The tokenizer's EOS and the model's own end-of-sequence ids."""
    configured = getattr(model.generation_config, "eos_token_id", None)
    configured = configured if isinstance(configured, list) else [configured] if configured is not None else []
    return list(dict.fromkeys([tokenizer.eos_token_id, *configured]))


def parameter_count(location: str | Path) -> int | None:
    """Parameters in a model directory's safetensors files, read from their headers (no loading)."""
    files = sorted(Path(location).glob("*.safetensors"))
    if not files:
        return None
    total = 0
    for file in files:
        with safe_open(str(file), framework="pt") as handle:
            for name in handle.keys():  # noqa: SIM118 (safe_open is not a mapping)
                shape = handle.get_slice(name).get_shape()
                count = 1
                for size in shape:
                    count *= size
                total += count
    return total


def _weights_fingerprint(location: str | Path) -> list[list[Any]]:
    """Name, size and modification time of each weight file: changes when the model is retrained."""
    files = sorted(Path(location).glob("*.safetensors"))
    return [[file.name, file.stat().st_size, file.stat().st_mtime_ns] for file in files]


class HFBackend:
    """A local causal LM (a tunescope asset, model or adapter directory, .gguf file, or hub id)."""

    def __init__(
        self,
        model: str = "smollm2",
        *,
        temperature: float = 0.0,
        max_tokens: int = 1024,
        trust_remote_code: bool = False,
        device: str | None = None,
        constrained: bool = True,
        model_flag: str = "--model",
    ) -> None:
        """Resolve the model (converting a GGUF file or preparing an asset); load it lazily.

        Args:
            model: Anything :func:`tunescope.models.resolve_model` accepts.
            temperature: 0 decodes greedily; above 0 samples.
            max_tokens: Most new tokens per reply.
            trust_remote_code: Allow model code shipped with the checkpoint to run.
            device: ``cpu``, ``cuda``, ...; by default the first GPU when there is one.
            constrained: Constrain decoding to the reply schema of each request (free strings become
                plain ASCII short enough for the whole reply to fit ``max_tokens``); False ignores schemas.
            model_flag: The command-line flag that names ``model``, for error messages.
        """
        self.model = model
        self.model_flag = model_flag
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.max_concurrency: int | None = 1  # one generation at a time; parallel calls would just queue
        self.uses_schema = constrained
        self._trust_remote_code = trust_remote_code
        self._device = device
        self._source = resolve_model(model)
        weights = self._source.base if self._source.kind == "adapter" and self._source.base else self._source
        local = self._source.kind != "hub"
        self.parameters = parameter_count(weights.location) if local else None
        self._fingerprint = (
            [_weights_fingerprint(self._source.location), _weights_fingerprint(weights.location)] if local else None
        )
        self._loaded: tuple[Any, Any] | None = None
        self._grammar_tokenizer: Any = None
        self._lock = threading.Lock()

    @property
    def stand_in(self) -> bool:
        """True for the default model or any model under 1B parameters: a pipeline check, not a real judge."""
        return self.model == "smollm2" or (self.parameters is not None and self.parameters < STAND_IN_MAX_PARAMETERS)

    def _decoding(self) -> dict[str, Any]:
        # Part of the cache key: replies decoded without the constraint are never reused for constrained ones.
        constraint = f"llguidance {_library_version('llguidance')}" if self.uses_schema else None
        return {"constrained": constraint, "temperature": self.temperature, "max_tokens": self.max_tokens}

    def identity(self) -> dict[str, Any]:
        """Model, its weight files, and decoding settings."""
        return {"backend": "hf", "model": self.model, "weights": self._fingerprint, **self._decoding()}

    def describe(self) -> dict[str, Any]:
        """Public description, with the parameter count."""
        return {"backend": "hf", "model": self.model, "parameters": self.parameters, **self._decoding()}

    def _load(self) -> tuple[Any, Any]:
        if self._loaded is None:
            tokenizer = load_tokenizer(self._source, trust_remote_code=self._trust_remote_code)
            if not getattr(tokenizer, "chat_template", None):
                raise UserError(
                    f"{self.model_flag} {self.model}: the tokenizer has no chat template; use an instruct model"
                )
            model = load_model(self._source, trust_remote_code=self._trust_remote_code).eval()
            device = self._device or ("cuda" if torch.cuda.is_available() else "cpu")
            self._loaded = (model.to(device), tokenizer)
        return self._loaded

    def _constraint(self, tokenizer: Any, schema: dict[str, Any]) -> SchemaConstraint:
        """The logits processor that keeps one reply inside ``schema`` and within ``max_tokens``.

        Raises:
            BackendError: when ``max_tokens`` cannot hold the schema's skeleton with a few characters per
                string, or the tokenizer is not one llguidance can read.
        """
        budget = string_budget(tokenizer, schema, self.max_tokens)
        if budget < MIN_STRING_CHARS:
            needed = tokens_needed(tokenizer, schema, MIN_STRING_CHARS)
            raise BackendError(
                f"--max-tokens {self.max_tokens} is too small for a reply in the reply schema with {self.model}: "
                f"it needs at least {needed} tokens"
            )
        if self._grammar_tokenizer is None:
            try:
                self._grammar_tokenizer = grammar_tokenizer(tokenizer)
            except ValueError as err:
                raise BackendError(f"{self.model_flag} {self.model}: constrained decoding needs {err}") from None
        return SchemaConstraint(self._grammar_tokenizer, bounded_schema(schema, budget))

    def complete(self, messages: list[dict[str, str]], schema: dict[str, Any] | None = None) -> Reply:
        """Generate one reply; with a ``schema`` (and ``constrained``), decoding cannot leave it."""
        from transformers import LogitsProcessorList

        with self._lock:
            started = time.perf_counter()
            model, tokenizer = self._load()
            constraint = self._constraint(tokenizer, schema) if schema and self.uses_schema else None
            prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).to(model.device)
            if self.temperature > 0:
                decoding: dict[str, Any] = {"do_sample": True, "temperature": self.temperature}
            else:  # greedy; clear the model's own sampling defaults so they do not warn
                decoding = {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
            if constraint is not None:
                decoding["logits_processor"] = LogitsProcessorList([constraint])
                # The grammar ends a complete reply with the tokenizer's EOS, which must also stop generation.
                decoding["eos_token_id"] = _stop_ids(model, tokenizer)
            with torch.no_grad():
                output = model.generate(
                    **inputs, max_new_tokens=self.max_tokens, pad_token_id=tokenizer.pad_token_id, **decoding
                )
            new_tokens = output[0, inputs["input_ids"].shape[1] :]
            ended = len(new_tokens) > 0 and int(new_tokens[-1]) in _stop_ids(model, tokenizer)
            return Reply(
                text=tokenizer.decode(new_tokens, skip_special_tokens=True),
                finish_reason="stop" if ended or len(new_tokens) < self.max_tokens else "length",
                usage={"prompt_tokens": int(inputs["input_ids"].shape[1]), "completion_tokens": len(new_tokens)},
                attempts=1,
                latency_s=time.perf_counter() - started,
                json_mode="grammar" if constraint is not None else "none",
            )

    def close(self) -> None:
        """Drop the model."""
        self._loaded = None
