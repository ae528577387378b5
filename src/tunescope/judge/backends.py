"""Where judgements come from: any OpenAI-compatible HTTP endpoint, or a local transformers model.

Both backends take chat messages and return the judge's raw text (:class:`Reply`); parsing is
someone else's job. They differ in what can go wrong:

* :class:`OpenAICompatibleBackend` talks to ``POST {base_url}/chat/completions`` (OpenAI, vLLM,
  llama.cpp's server, Ollama, ...). The API key is read from an environment variable when the
  backend is built, sent only in the ``Authorization`` header, and scrubbed from any server
  message before it is shown; it never appears in a description, record or error.
* :class:`HFBackend` generates with a local model loaded through :mod:`tunescope.models`, one
  request at a time, loading the model only when a request actually needs it (a rerun whose
  replies are all cached never loads it).

The HTTP client is urllib3: it is already installed with tunescope's dependencies (through
``requests``), its ``PoolManager`` is thread-safe and keeps connections alive for the parallel
workers, and its ``Retry`` policy implements backoff, ``Retry-After`` and timeout retries, so no
retry loop is written here. ``requests`` would add a session object that is not thread-safe, and
the standard library has neither pooling nor retries.
"""

from __future__ import annotations

import ipaddress
import json
import os
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit, urlunsplit

from tunescope import __version__
from tunescope.errors import TunescopeError, UserError

JsonMode = Literal["json_object", "json_schema", "json_object_schema", "none"]
"""How to ask a server for JSON. ``json_schema`` is OpenAI's structured output (also vLLM, Ollama);
``json_object_schema`` is llama-cpp-python's dialect, a ``json_object`` carrying the schema."""
RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})
"""Statuses worth asking again: timeouts, conflicts, rate limits and server errors."""
FATAL_STATUSES = frozenset({401, 403, 404})
"""Statuses that will fail every request the same way: stop the run instead of recording each."""
STAND_IN_MAX_PARAMETERS = 1_000_000_000
"""A local judge smaller than this is labelled a stand-in: its scores are not meaningful."""


@dataclass(frozen=True)
class Reply:
    """The judge's answer to one request."""

    text: str
    """The raw reply (untrusted model output)."""
    finish_reason: str | None = None
    """``stop``, ``length`` (cut off by the token limit), ... as the backend reports it."""
    usage: dict[str, int] = field(default_factory=dict)
    """Token counts (``prompt_tokens``, ``completion_tokens``) when known."""
    attempts: int = 1
    """Requests sent to get it (1 plus retries)."""
    latency_s: float = 0.0
    """Seconds from the first attempt to the reply."""


class RequestFailed(Exception):
    """One request failed for good (after its retries); the run records it and goes on.

    A later run asks again: a failed request is never cached.
    """

    def __init__(self, message: str, attempts: int) -> None:
        super().__init__(message)
        self.attempts = attempts


class JudgeBackendError(TunescopeError):
    """The backend cannot work at all (refused key, unknown model, wrong URL): stop the run."""


class Backend(Protocol):
    """What the runner needs from a judge backend."""

    max_concurrency: int | None
    """Most requests it can serve at once (None: no limit of its own)."""
    uses_schema: bool
    """Whether :meth:`complete` uses the reply schema (so the schema belongs in the cache key)."""

    def identity(self) -> dict[str, Any]:
        """Everything that decides the reply besides the messages: part of the cache key."""
        ...

    def describe(self) -> dict[str, Any]:
        """Public description for records and summaries (never a secret)."""
        ...

    def complete(self, messages: list[dict[str, str]], schema: dict[str, Any] | None = None) -> Reply:
        """Send one request; raise :class:`RequestFailed` or :class:`JudgeBackendError`."""
        ...

    def close(self) -> None:
        """Release connections or memory."""
        ...


# ------------------------------------------------------------------------------------------
# OpenAI-compatible HTTP endpoint


def chat_completions_url(base_url: str) -> str:
    """``POST`` target for a base URL given as OpenAI clients take it.

    ``http://host:8000/v1`` and ``http://host:8000/v1/chat/completions`` are used as given;
    a bare ``http://host:8000`` gets the conventional ``/v1``.

    Raises:
        UserError: for a URL that is not http(s) with a host.
    """
    parts = urlsplit(base_url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UserError(
            f"--base-url {base_url!r}: expected an http:// or https:// URL such as http://127.0.0.1:8000/v1"
        )
    path = parts.path.rstrip("/")
    if not path.endswith("/chat/completions"):
        path = (path or "/v1") + "/chat/completions"
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def public_url(url: str) -> str:
    """``url`` without user:password or query string, safe to write into records and logs."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _is_loopback(host: str | None) -> bool:
    if host in ("localhost", None):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _retry_policy(max_retries: int, backoff_s: float, max_retry_after_s: float) -> Any:
    """urllib3's retry policy with exponential backoff from the first retry on.

    urllib3 retries the first failure immediately and backs off from the second; a judge endpoint
    that just answered 500 or timed out deserves a pause before the very next attempt too.
    """
    from urllib3.util.retry import Retry

    class _BackoffFromFirstRetry(Retry):
        def get_backoff_time(self) -> float:
            failures = len(self.history)
            if failures == 0:
                return 0.0
            return min(self.backoff_max, self.backoff_factor * 2 ** (failures - 1))

    return _BackoffFromFirstRetry(
        total=max_retries,
        status_forcelist=RETRY_STATUSES,
        allowed_methods=frozenset({"POST"}),  # a judge request has no side effect but its cost
        backoff_factor=backoff_s,
        backoff_max=60.0,
        respect_retry_after_header=True,
        retry_after_max=int(max(1, max_retry_after_s)),
        raise_on_status=False,  # the last 5xx/429 response comes back, to report its message
    )


class OpenAICompatibleBackend:
    """A chat-completions endpoint: hosted APIs, vLLM, llama.cpp server, Ollama, ..."""

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key_env: str = "OPENAI_API_KEY",
        temperature: float = 0.0,
        max_tokens: int = 1024,
        json_mode: JsonMode = "json_object",
        timeout_s: float = 120.0,
        max_retries: int = 5,
        backoff_s: float = 1.0,
        max_retry_after_s: float = 60.0,
        concurrency: int = 8,
    ) -> None:
        """Prepare the client; nothing is sent until :meth:`complete`.

        Args:
            base_url: The endpoint, e.g. ``http://127.0.0.1:8000/v1``.
            model: The judge model's name as the server knows it.
            api_key_env: Environment variable holding the API key; unset means no key is sent.
            temperature: Sampling temperature (0: the most likely reply).
            max_tokens: Longest reply.
            json_mode: How to ask for JSON: ``json_object``, ``json_schema`` or
                ``json_object_schema`` (both constrain the reply to its schema, in the two dialects
                servers speak; see :data:`JsonMode`), or ``none`` (the prompt only).
            timeout_s: Seconds to wait for a reply before retrying.
            max_retries: Retries after the first attempt (429, 5xx, timeouts, lost connections).
            backoff_s: First pause between attempts; doubles each time.
            max_retry_after_s: Cap on a server's ``Retry-After``.
            concurrency: Connections kept open for parallel requests.
        """
        import urllib3

        self.url = chat_completions_url(base_url)
        self.model = model
        self.api_key_env = api_key_env
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.json_mode = json_mode
        self.max_concurrency: int | None = None
        self.uses_schema = json_mode in ("json_schema", "json_object_schema")  # sent, so part of the request
        self._max_retries = max_retries
        self._api_key = os.environ.get(api_key_env) or None
        if self._api_key is None and not _is_loopback(urlsplit(self.url).hostname):
            where = public_url(self.url)
            warnings.warn(f"${api_key_env} is not set: sending requests to {where} without an API key", stacklevel=3)
        self._headers = {"Content-Type": "application/json", "User-Agent": f"tunescope/{__version__}"}
        if self._api_key:
            self._headers["Authorization"] = f"Bearer {self._api_key}"
        self._retries = _retry_policy(max_retries, backoff_s, max_retry_after_s)
        self._timeout = urllib3.Timeout(connect=min(timeout_s, 10.0), read=timeout_s)
        self._pool = urllib3.PoolManager(maxsize=max(1, concurrency))

    def __repr__(self) -> str:  # no key, ever
        return f"OpenAICompatibleBackend({public_url(self.url)!r}, {self.model!r})"

    def identity(self) -> dict[str, Any]:
        """Model and decoding settings; the URL is left out so a moved server keeps its cache."""
        return {
            "backend": "openai",
            "model": self.model,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "json_mode": self.json_mode,
        }

    def describe(self) -> dict[str, Any]:
        """Public description: the URL without credentials, and whether a key was sent."""
        return {
            **self.identity(),
            "base_url": public_url(self.url),
            "api_key_env": self.api_key_env,
            "api_key_sent": self._api_key is not None,
        }

    def _redact(self, text: str) -> str:
        if self._api_key:
            text = text.replace(self._api_key, "***")
        return text

    def _server_message(self, body: bytes) -> str:
        text = body.decode("utf-8", errors="replace")
        try:
            error = json.loads(text).get("error")
            if isinstance(error, dict):
                text = str(error.get("message") or error)
            elif error:
                text = str(error)
        except (ValueError, AttributeError):
            pass
        text = " ".join(text.split())
        return self._redact(text[:300] + ("..." if len(text) > 300 else ""))

    def _body(self, messages: list[dict[str, str]], schema: dict[str, Any] | None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }
        if self.json_mode == "json_object":
            body["response_format"] = {"type": "json_object"}
        elif self.json_mode == "json_schema" and schema is not None:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "judgement", "schema": schema, "strict": True},
            }
        elif self.json_mode == "json_object_schema" and schema is not None:
            body["response_format"] = {"type": "json_object", "schema": schema}
        return body

    def complete(self, messages: list[dict[str, str]], schema: dict[str, Any] | None = None) -> Reply:
        """Send one chat request, retrying as the policy says.

        Raises:
            RequestFailed: the request failed for good (retries exhausted, or refused as invalid).
            JudgeBackendError: the server refuses every request (401, 403, 404).
        """
        from urllib3.exceptions import HTTPError, MaxRetryError

        started = time.perf_counter()
        try:
            response = self._pool.request(
                "POST",
                self.url,
                body=json.dumps(self._body(messages, schema)).encode("utf-8"),
                headers=self._headers,
                retries=self._retries,
                timeout=self._timeout,
            )
        except MaxRetryError as err:
            reason = type(err.reason).__name__ if err.reason is not None else "error"
            raise RequestFailed(
                self._redact(f"no reply after {self._max_retries + 1} attempts ({reason})"), self._max_retries + 1
            ) from None
        except HTTPError as err:
            raise RequestFailed(self._redact(f"request failed: {type(err).__name__}"), 1) from None
        attempts = 1 + len(response.retries.history) if response.retries is not None else 1
        latency = time.perf_counter() - started
        if response.status in FATAL_STATUSES:
            hint = {401: f"check ${self.api_key_env}", 403: f"check ${self.api_key_env}"}.get(
                response.status, "check --base-url and --judge-model"
            )
            raise JudgeBackendError(
                f"{public_url(self.url)} refused the request with HTTP {response.status} "
                f"({self._server_message(response.data)}); {hint}"
            )
        if response.status != 200:
            tried = f" after {attempts} attempts" if attempts > 1 else ""
            raise RequestFailed(f"HTTP {response.status}{tried}: {self._server_message(response.data)}", attempts)
        try:
            payload = json.loads(response.data)
            choice = payload["choices"][0]
            text = choice["message"].get("content") or ""
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            raise RequestFailed(
                f"the server's reply is not a chat completion: {self._server_message(response.data)}", attempts
            ) from None
        usage = payload.get("usage") if isinstance(payload.get("usage"), dict) else {}
        return Reply(
            text=str(text),
            finish_reason=choice.get("finish_reason"),
            usage={key: int(usage[key]) for key in ("prompt_tokens", "completion_tokens") if key in usage},
            attempts=attempts,
            latency_s=latency,
        )

    def close(self) -> None:
        """Close pooled connections."""
        self._pool.clear()


# ------------------------------------------------------------------------------------------
# Local transformers model


def parameter_count(location: str | Path) -> int | None:
    """Parameters in a model directory's safetensors files, read from their headers (no loading)."""
    from safetensors import safe_open

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
    ) -> None:
        """Resolve the model (converting a GGUF file or preparing an asset); load it lazily.

        Args:
            model: Anything :func:`tunescope.models.resolve_model` accepts.
            temperature: 0 decodes greedily; above 0 samples.
            max_tokens: Most new tokens per reply.
            trust_remote_code: Allow model code shipped with the checkpoint to run.
            device: ``cpu``, ``cuda``, ...; by default the first GPU when there is one.
            json_prefix: Start every reply with the opening of the reply schema (see
                :func:`~tunescope.judge.prompts.reply_prefix`); the recorded reply includes it.
        """
        from tunescope.models import resolve_model

        self.model = model
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
        """True for the default model or any model under 1B parameters: a pipeline check, not a judge."""
        return self.model == "smollm2" or (self.parameters is not None and self.parameters < STAND_IN_MAX_PARAMETERS)

    def identity(self) -> dict[str, Any]:
        """Model, its weight files, and decoding settings."""
        return {
            "backend": "hf",
            "model": self.model,
            "weights": self._fingerprint,
            "json_prefix": self.uses_schema,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }

    def describe(self) -> dict[str, Any]:
        """Public description, with the parameter count."""
        return {
            "backend": "hf",
            "model": self.model,
            "parameters": self.parameters,
            "json_prefix": self.uses_schema,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }

    def _load(self) -> tuple[Any, Any]:
        if self._loaded is None:
            import torch

            from tunescope.models import load_model, load_tokenizer

            tokenizer = load_tokenizer(self._source, trust_remote_code=self._trust_remote_code)
            if not getattr(tokenizer, "chat_template", None):
                raise UserError(
                    f"--judge-model {self.model}: the tokenizer has no chat template; use an instruct model"
                )
            model = load_model(self._source, trust_remote_code=self._trust_remote_code).eval()
            device = self._device or ("cuda" if torch.cuda.is_available() else "cpu")
            self._loaded = (model.to(device), tokenizer)
        return self._loaded

    def complete(self, messages: list[dict[str, str]], schema: dict[str, Any] | None = None) -> Reply:
        """Generate one reply; with a ``schema``, the reply starts with its opening (not enforced beyond)."""
        import torch

        from tunescope.data.templates import render
        from tunescope.judge.prompts import reply_prefix

        with self._lock:
            started = time.perf_counter()
            model, tokenizer = self._load()
            prefix = reply_prefix(schema) if schema else ""
            prompt = render(tokenizer, messages, add_generation_prompt=True) + prefix
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
            )

    def close(self) -> None:
        """Drop the model."""
        self._loaded = None


def backend_from_settings(settings: Any, model: str, *, json_mode: str, device: str | None) -> Backend:
    """The backend ``settings.backend`` names ("openai" or "hf"), for ``model``.

    ``settings`` carries the connection fields that the judge's and the rewriter's configs share:
    ``base_url``, ``api_key_env``, ``temperature``, ``max_tokens``, ``timeout``, ``max_retries``,
    ``backoff`` and ``concurrency``. ``json_mode`` "none" asks for plain-text replies.
    """
    if settings.backend == "openai":
        assert settings.base_url  # checked by the config
        return OpenAICompatibleBackend(
            settings.base_url,
            model,
            api_key_env=settings.api_key_env,
            temperature=settings.temperature,
            max_tokens=settings.max_tokens,
            json_mode=json_mode,
            timeout_s=settings.timeout,
            max_retries=settings.max_retries,
            backoff_s=settings.backoff,
            concurrency=settings.concurrency,
        )
    return HFBackend(
        model,
        temperature=settings.temperature,
        max_tokens=settings.max_tokens,
        device=device,
        json_prefix=json_mode != "none",
    )
