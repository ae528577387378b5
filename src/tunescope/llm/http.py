"""Any OpenAI-compatible chat-completions endpoint: hosted APIs, vLLM, llama.cpp's server, Ollama, ...

:class:`OpenAICompatibleBackend` talks to ``POST {base_url}/chat/completions``. The API key is read
from an environment variable when the backend is built, sent only in the ``Authorization`` header,
and scrubbed from any server message before it is shown; it never appears in a description,
record or error.

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
import time
import warnings
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import urllib3
from urllib3.exceptions import HTTPError, MaxRetryError
from urllib3.util.retry import Retry

from tunescope import __version__
from tunescope.errors import UserError
from tunescope.llm.base import BackendError, JsonMode, Reply, RequestFailed

RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})
"""Statuses worth asking again: timeouts, conflicts, rate limits and server errors."""
FATAL_STATUSES = frozenset({401, 403, 404})
"""Statuses that will fail every request the same way: stop the run instead of recording each."""


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

    urllib3 retries the first failure immediately and backs off from the second; an endpoint
    that just answered 500 or timed out deserves a pause before the very next attempt too.
    """

    class _BackoffFromFirstRetry(Retry):
        def get_backoff_time(self) -> float:
            failures = len(self.history)
            if failures == 0:
                return 0.0
            return min(self.backoff_max, self.backoff_factor * 2 ** (failures - 1))

    return _BackoffFromFirstRetry(
        total=max_retries,
        status_forcelist=RETRY_STATUSES,
        allowed_methods=frozenset({"POST"}),  # a chat request has no side effect but its cost
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
        model_flag: str = "--model",
    ) -> None:
        """Prepare the client; nothing is sent until :meth:`complete`.

        Args:
            base_url: The endpoint, e.g. ``http://127.0.0.1:8000/v1``.
            model: The model's name as the server knows it.
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
            model_flag: The command-line flag that names ``model``, for error messages.
        """
        self.url = chat_completions_url(base_url)
        self.model = model
        self.model_flag = model_flag
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
            BackendError: the server refuses every request (401, 403, 404).
        """
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
                response.status, f"check --base-url and {self.model_flag}"
            )
            raise BackendError(
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
