"""A local causal LM as a backend: one reply at a time, generated with transformers.

:class:`HFBackend` loads its model through :mod:`tunescope.models` (a tunescope asset, model or
adapter directory, .gguf file, or hub id) only when a request actually needs it, so a rerun whose
replies are all cached never loads it. A model smaller than 1B parameters is labelled a stand-in:
it shows that a pipeline works, not what a strong model would answer.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from tunescope.errors import UserError
from tunescope.llm.base import Reply
from tunescope.models import load_model, load_tokenizer, resolve_model

STAND_IN_MAX_PARAMETERS = 1_000_000_000
"""A local model smaller than this is labelled a stand-in: its judgements or rewrites are not meaningful."""


def reply_prefix(schema: dict[str, Any]) -> str:
    """The opening of a valid reply, up to the first free text: ``{"helpfulness": {"reason": "``.

    A local model has no constrained decoding; starting its reply with this prefix puts it on the
    schema's track (a small model otherwise tends to answer the query instead of judging it).
    """
    key = schema["required"][0]
    value = schema["properties"][key]
    if value.get("type") == "object":
        return f'{{"{key}": {reply_prefix(value)}'
    return f'{{"{key}": "' if value.get("type") == "string" else f'{{"{key}": '


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
        json_prefix: bool = True,
        model_flag: str = "--model",
    ) -> None:
        """Resolve the model (converting a GGUF file or preparing an asset); load it lazily.

        Args:
            model: Anything :func:`tunescope.models.resolve_model` accepts.
            temperature: 0 decodes greedily; above 0 samples.
            max_tokens: Most new tokens per reply.
            trust_remote_code: Allow model code shipped with the checkpoint to run.
            device: ``cpu``, ``cuda``, ...; by default the first GPU when there is one.
            json_prefix: Start every reply with the opening of the reply schema (see
                :func:`reply_prefix`); the recorded reply includes it.
            model_flag: The command-line flag that names ``model``, for error messages.
        """
        self.model = model
        self.model_flag = model_flag
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.max_concurrency: int | None = 1  # one generation at a time; parallel calls would just queue
        self.uses_schema = json_prefix
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
        self._lock = threading.Lock()

    @property
    def stand_in(self) -> bool:
        """True for the default model or any model under 1B parameters: a pipeline check, not a real judge."""
        return self.model == "smollm2" or (self.parameters is not None and self.parameters < STAND_IN_MAX_PARAMETERS)

    def _decoding(self) -> dict[str, Any]:
        return {"json_prefix": self.uses_schema, "temperature": self.temperature, "max_tokens": self.max_tokens}

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

    def complete(self, messages: list[dict[str, str]], schema: dict[str, Any] | None = None) -> Reply:
        """Generate one reply; with a ``schema``, the reply starts with its opening (not enforced beyond)."""
        with self._lock:
            started = time.perf_counter()
            model, tokenizer = self._load()
            prefix = reply_prefix(schema) if schema else ""
            prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) + prefix
            inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).to(model.device)
            if self.temperature > 0:
                decoding: dict[str, Any] = {"do_sample": True, "temperature": self.temperature}
            else:  # greedy; clear the model's own sampling defaults so they do not warn
                decoding = {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
            with torch.no_grad():
                output = model.generate(
                    **inputs, max_new_tokens=self.max_tokens, pad_token_id=tokenizer.pad_token_id, **decoding
                )
            new_tokens = output[0, inputs["input_ids"].shape[1] :]
            ended = len(new_tokens) > 0 and int(new_tokens[-1]) == tokenizer.eos_token_id
            return Reply(
                text=prefix + tokenizer.decode(new_tokens, skip_special_tokens=True),
                finish_reason="stop" if ended or len(new_tokens) < self.max_tokens else "length",
                usage={"prompt_tokens": int(inputs["input_ids"].shape[1]), "completion_tokens": len(new_tokens)},
                attempts=1,
                latency_s=time.perf_counter() - started,
                json_mode="schema_prefix" if prefix else "none",
            )

    def close(self) -> None:
        """Drop the model."""
        self._loaded = None
