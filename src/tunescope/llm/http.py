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

Only what may change is retried: a lost connection, a timeout, 408, 409, 429 and 5xx. A refusal
that will not change is not: any other 4xx, and a 5xx whose message names a parameter the server
does not support (llama.cpp answers an unsupported ``response_format`` with HTTP 500).

``json_mode="auto"`` finds the way of asking for JSON that the server accepts: the first request
tries the modes of :data:`~tunescope.llm.base.AUTO_JSON_MODES` in order, while the other workers
wait, and the accepted mode is kept for the rest of the run and, through a
:class:`~tunescope.llm.base.JsonModeMemory` (the reply cache), for later runs against the same
server URL and model. So a server that refuses ``json_schema`` costs one refused request, once.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import threading
import time
import warnings
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import urllib3
from urllib3.exceptions import (
    HTTPError,
    MaxRetryError,
    NameResolutionError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
    ResponseError,
    SSLError,
)
from urllib3.util.retry import Retry

from tunescope import __version__
from tunescope.errors import UserError
from tunescope.llm.base import (
    AUTO_JSON_MODES,
    BackendError,
    FormatRefused,
    JsonMode,
    JsonModeMemory,
    Reply,
    RequestFailed,
)

RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})
"""Statuses worth asking again: timeouts, conflicts, rate limits and server errors."""
FATAL_STATUSES = frozenset({401, 403, 404})
"""Statuses that will fail every request the same way: stop the run instead of recording each."""
UNSUPPORTED = re.compile(
    r"not supported|unsupported|unimplemented|not implemented|must be one of|unknown (?:field|parameter|argument)"
    r"|unrecognized|not permitted|extra (?:fields|inputs) not",
    re.IGNORECASE,
)
"""A server error message that names something the server does not support: asking again changes nothing."""
ABOUT_JSON = re.compile(r"response_format|json_schema|json_object|schema|grammar|structured output|guided", re.I)
"""A refusal message about the way of asking for JSON rather than about the request's content."""


def error_message(body: bytes) -> str:
    """The message of an error response: OpenAI's ``{"error": {"message"}}``, vLLM's ``{"message"}``, or the text."""
    text = body.decode("utf-8", errors="replace")
    try:
        payload = json.loads(text)
    except ValueError:
        return text
    if not isinstance(payload, dict):
        return text
    error = payload.get("error")
    if isinstance(error, dict):
        return str(error.get("message") or error)
    if error:
        return str(error)
    return str(payload["message"]) if isinstance(payload.get("message"), str) else text


def refused_for_good(status: int, message: str) -> bool:
    """Whether a non-200 answer will not change if asked again (so it is not retried)."""
    if status in RETRY_STATUSES:
        return status >= 500 and bool(UNSUPPORTED.search(message))
    return 400 <= status < 600


def no_reply_reason(error: BaseException | None) -> str:
    """Why no reply came, in a few words that failures are grouped by."""
    if isinstance(error, NameResolutionError):  # a NewConnectionError, so tested first
        return "host not found"
    if isinstance(error, NewConnectionError):  # also a ConnectTimeoutError, in urllib3 2
        return "connection refused" if "refused" in str(error).lower() else "cannot connect"
    if isinstance(error, ReadTimeoutError) or "timed out" in str(error).lower():
        return "timeout"
    if isinstance(error, SSLError):
        return "TLS error"
    if isinstance(error, ProtocolError):
        return "connection lost"
    if isinstance(error, ResponseError):
        return "too many error responses"
    return type(error).__name__ if error is not None else "no reply"


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

        def increment(self, method: Any = None, url: Any = None, response: Any = None, **rest: Any) -> Any:  # noqa: D102
            # A 5xx that names an unsupported parameter is as final as a 4xx, but urllib3 decides on
            # the status alone. Giving up here hands the response back (raise_on_status=False).
            if response is not None and refused_for_good(response.status, error_message(response.data or b"")):
                raise MaxRetryError(None, url, ResponseError(f"HTTP {response.status}, not retried"))  # type: ignore[arg-type]
            return super().increment(method, url, response, **rest)

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
        json_mode: JsonMode = "auto",
        timeout_s: float = 120.0,
        max_retries: int = 5,
        backoff_s: float = 1.0,
        max_retry_after_s: float = 60.0,
        concurrency: int = 8,
        model_flag: str = "--model",
        json_mode_memory: JsonModeMemory | None = None,
    ) -> None:
        """Prepare the client; nothing is sent until :meth:`complete`.

        Args:
            base_url: The endpoint, e.g. ``http://127.0.0.1:8000/v1``.
            model: The model's name as the server knows it.
            api_key_env: Environment variable holding the API key; unset means no key is sent.
            temperature: Sampling temperature (0: the most likely reply).
            max_tokens: Longest reply.
            json_mode: How to ask for JSON: ``auto`` (the first of the modes below that the
                server accepts), ``json_object``, ``json_schema`` or ``json_object_schema`` (both
                constrain the reply to its schema, in the two dialects servers speak; see
                :data:`JsonMode`), or ``none`` (the prompt only).
            timeout_s: Seconds to wait for a reply before retrying.
            max_retries: Retries after the first attempt (429, 5xx, timeouts, lost connections).
            backoff_s: First pause between attempts; doubles each time.
            max_retry_after_s: Cap on a server's ``Retry-After``.
            concurrency: Connections kept open for parallel requests.
            model_flag: The command-line flag that names ``model``, for error messages.
            json_mode_memory: Where ``auto`` remembers the accepted mode between runs.
        """
        self.url = chat_completions_url(base_url)
        self.model = model
        self.model_flag = model_flag
        self.api_key_env = api_key_env
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.json_mode = json_mode
        self.max_concurrency: int | None = None
        self.uses_schema = json_mode in ("auto", "json_schema", "json_object_schema")  # sent, so part of the request
        self._json_mode_memory = json_mode_memory
        self._accepted_mode: str | None = None  # auto: the mode this server accepted
        self._probing = threading.Lock()  # auto: one request finds the mode while the others wait
        self._probes_without_reply = 0  # auto: probes that ended because the server did not answer
        self._last_no_reply: RequestFailed | None = None
        self._mode_refused: str | None = None  # why the server refused an explicit json_mode
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
        text = " ".join(error_message(body).split())
        return self._redact(text[:300] + ("..." if len(text) > 300 else ""))

    def _body(self, messages: list[dict[str, str]], schema: dict[str, Any] | None, json_mode: str) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }
        if json_mode == "json_object":
            body["response_format"] = {"type": "json_object"}
        elif json_mode == "json_schema" and schema is not None:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "judgement", "schema": schema, "strict": True},
            }
        elif json_mode == "json_object_schema" and schema is not None:
            body["response_format"] = {"type": "json_object", "schema": schema}
        return body

    def complete(self, messages: list[dict[str, str]], schema: dict[str, Any] | None = None) -> Reply:
        """Send one chat request, retrying as the policy says (with ``auto``, in a mode the server accepts).

        Raises:
            RequestFailed: the request failed for good (retries exhausted, or refused as invalid).
            BackendError: the server refuses every request (401, 403, 404), or every way of asking
                for JSON.
        """
        if self.json_mode != "auto":
            if self._mode_refused is not None:  # a worker that picks up a request after the refusal sends nothing
                raise BackendError(self._mode_refused)
            try:
                return self._send(messages, schema, self.json_mode)
            except FormatRefused as err:
                self._mode_refused = (
                    f"{public_url(self.url)} does not accept --json-mode {self.json_mode} ({err}); "
                    "use --json-mode auto to find a mode it accepts"
                )
                raise BackendError(self._mode_refused) from None
        mode = self._known_mode()
        if mode is not None:
            try:
                return self._send(messages, schema, mode)
            except FormatRefused:
                self._forget_mode(mode)  # the server changed: find its mode again
        return self._find_mode(messages, schema)

    def _memory_key(self) -> tuple[str, str]:
        return public_url(self.url), self.model

    def _known_mode(self) -> str | None:
        if self._accepted_mode is None and self._json_mode_memory is not None:
            self._accepted_mode = self._json_mode_memory.json_mode(*self._memory_key())
        return self._accepted_mode

    def _forget_mode(self, mode: str) -> None:
        with self._probing:
            if self._accepted_mode == mode:
                self._accepted_mode = None
                if self._json_mode_memory is not None:
                    self._json_mode_memory.remember_json_mode(*self._memory_key(), None)

    def _find_mode(self, messages: list[dict[str, str]], schema: dict[str, Any] | None) -> Reply:
        """Send this request in each JSON mode in turn until the server accepts one, and keep that mode.

        Raises:
            RequestFailed: when no reply came; requests that were waiting for this one's answer fail
                with it at once, instead of each spending its own retries, one at a time, on a server
                that does not answer (they are asked again by the next run).
        """
        failures_seen = self._probes_without_reply
        with self._probing:  # one request finds the mode; the other workers wait here, then use it
            if self._accepted_mode is not None:
                found = self._accepted_mode
            elif self._last_no_reply is not None and self._probes_without_reply > failures_seen:
                failed = self._last_no_reply
                raise RequestFailed(
                    f"not sent: the server gave no reply while its JSON mode was being found ({failed})",
                    0,
                    reason=failed.reason,
                )
            else:
                try:
                    return self._try_modes(messages, schema)
                except RequestFailed as err:
                    if not err.refused:
                        self._probes_without_reply += 1
                        self._last_no_reply = err
                    raise
        return self._send(messages, schema, found)

    def _try_modes(self, messages: list[dict[str, str]], schema: dict[str, Any] | None) -> Reply:
        refusals = []
        # Without a schema the schema modes would send no response_format and "succeed" untested.
        modes = AUTO_JSON_MODES if schema is not None else ("json_object", "none")
        for mode in modes:
            try:
                reply = self._send(messages, schema, mode)
            except FormatRefused as err:
                refusals.append(f"{mode}: {err}")
                continue
            self._accepted_mode = mode
            if self._json_mode_memory is not None and schema is not None:
                self._json_mode_memory.remember_json_mode(*self._memory_key(), mode)
            return reply
        raise BackendError(f"{public_url(self.url)} refused every way of asking for JSON ({'; '.join(refusals)})")

    def _send(self, messages: list[dict[str, str]], schema: dict[str, Any] | None, json_mode: str) -> Reply:
        """One request in ``json_mode``, with the retries of the policy."""
        started = time.perf_counter()
        body = self._body(messages, schema, json_mode)
        try:
            response = self._pool.request(
                "POST",
                self.url,
                body=json.dumps(body).encode("utf-8"),
                headers=self._headers,
                retries=self._retries,
                timeout=self._timeout,
            )
        except MaxRetryError as err:
            reason = no_reply_reason(err.reason)
            raise RequestFailed(
                self._redact(f"no reply after {self._max_retries + 1} attempts ({reason})"),
                self._max_retries + 1,
                reason=reason,
            ) from None
        except HTTPError as err:
            reason = no_reply_reason(err)
            raise RequestFailed(self._redact(f"request failed: {reason}"), 1, reason=reason) from None
        attempts = 1 + len(response.retries.history) if response.retries is not None else 1
        latency = time.perf_counter() - started
        message = self._server_message(response.data)
        if response.status in FATAL_STATUSES:
            hint = {401: f"check ${self.api_key_env}", 403: f"check ${self.api_key_env}"}.get(
                response.status, f"check --base-url and {self.model_flag}"
            )
            raise BackendError(
                f"{public_url(self.url)} refused the request with HTTP {response.status} ({message}); {hint}"
            )
        if response.status != 200:
            tried = f" after {attempts} attempts" if attempts > 1 else ""
            refused = refused_for_good(response.status, message)
            failure = FormatRefused if refused and "response_format" in body and ABOUT_JSON.search(message) else None
            raise (failure or RequestFailed)(
                f"HTTP {response.status}{tried}{', not retried' if refused else ''}: {message}",
                attempts,
                reason=f"HTTP {response.status}",
                refused=refused,
            )
        try:
            payload = json.loads(response.data)
            choice = payload["choices"][0]
            text = choice["message"].get("content") or ""
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            raise RequestFailed(
                f"the server's reply is not a chat completion: {message}",
                attempts,
                reason="not a chat completion",
            ) from None
        usage = payload.get("usage") if isinstance(payload.get("usage"), dict) else {}
        return Reply(
            text=str(text),
            finish_reason=choice.get("finish_reason"),
            usage={key: int(usage[key]) for key in ("prompt_tokens", "completion_tokens") if key in usage},
            attempts=attempts,
            latency_s=latency,
            json_mode=json_mode,
        )

    def close(self) -> None:
        """Close pooled connections."""
        self._pool.clear()
