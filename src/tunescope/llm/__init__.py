"""Language-model backends shared by the judge and the dataset rewriter: an HTTP endpoint or a local model.

Both backends take chat messages and return the model's raw text (:class:`Reply`); parsing is the
caller's job. :func:`backend_from_settings` builds the one a command's settings name, and
:class:`ReplyCache` stores replies on disk so that no request is paid for twice.

From Python::

    from tunescope.llm import OpenAICompatibleBackend

    backend = OpenAICompatibleBackend("http://127.0.0.1:8000/v1", "my-model")
    print(backend.complete([{"role": "user", "content": "Hello"}]).text)
"""

from __future__ import annotations

from typing import Protocol

from tunescope.llm.base import Backend, BackendError, JsonMode, JsonModeMemory, Reply, RequestFailed
from tunescope.llm.cache import ReplyCache, request_key
from tunescope.llm.http import OpenAICompatibleBackend
from tunescope.llm.local import HFBackend


class BackendSettings(Protocol):
    """The connection settings that the judge's and the rewriter's configs share."""

    backend: str
    """'openai' (an OpenAI-compatible endpoint) or 'hf' (a local transformers model)."""
    judge_base_url: str | None
    """The endpoint of the openai backend."""
    api_key_env: str
    """Environment variable holding the API key."""
    temperature: float
    """Sampling temperature."""
    max_new_tokens: int
    """Longest reply in tokens."""
    timeout: float
    """Seconds to wait for one reply before retrying it."""
    max_retries: int
    """Retries per request."""
    backoff: float
    """Seconds before the first retry, doubling after."""
    concurrency: int
    """Requests in flight at once."""
    precision: str
    """Weights' precision of a local (hf) model."""


def backend_from_settings(
    settings: BackendSettings,
    model: str,
    *,
    json_mode: JsonMode,
    device: str | None,
    model_flag: str,
    json_mode_memory: JsonModeMemory | None = None,
) -> Backend:
    """The backend ``settings.backend`` names ("openai" or "hf"), for ``model``.

    Args:
        settings: The command's connection settings.
        model: The model name the server knows (openai), or a local model (hf).
        json_mode: How to ask for JSON; "none" asks for plain-text replies.
        device: Where a local model goes (default: a GPU when there is one).
        model_flag: The command's flag for ``model`` (e.g. ``--judge-model``), named in error messages.
        json_mode_memory: Where ``auto`` remembers the JSON mode a server accepts (the reply cache).
    """
    if settings.backend == "openai":
        assert settings.judge_base_url  # checked by the config
        return OpenAICompatibleBackend(
            settings.judge_base_url,
            model,
            api_key_env=settings.api_key_env,
            temperature=settings.temperature,
            max_tokens=settings.max_new_tokens,
            json_mode=json_mode,
            timeout_s=settings.timeout,
            max_retries=settings.max_retries,
            backoff_s=settings.backoff,
            concurrency=settings.concurrency,
            model_flag=model_flag,
            json_mode_memory=json_mode_memory,
        )
    return HFBackend(
        model,
        temperature=settings.temperature,
        max_tokens=settings.max_new_tokens,
        device=device,
        constrained=json_mode != "none",
        model_flag=model_flag,
        precision=settings.precision,
    )


__all__ = [
    "Backend",
    "BackendError",
    "BackendSettings",
    "HFBackend",
    "JsonMode",
    "JsonModeMemory",
    "OpenAICompatibleBackend",
    "Reply",
    "ReplyCache",
    "RequestFailed",
    "backend_from_settings",
    "request_key",
]
