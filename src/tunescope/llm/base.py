"""What every language-model backend is: chat messages in, the model's raw reply text out.

The judge and the dataset rewriter (`tunescope simplify`) both talk to a model through a
:class:`Backend`; parsing a reply is the caller's job. A request that fails for good raises
:class:`RequestFailed` (the caller records it and goes on); a backend that cannot work at all
raises :class:`BackendError` (the caller stops).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from tunescope.errors import TunescopeError

JsonMode = Literal["auto", "json_object", "json_schema", "json_object_schema", "none"]
"""How to ask a server for JSON. ``json_schema`` is OpenAI's structured output (also vLLM, Ollama);
``json_object_schema`` is llama-cpp-python's dialect, a ``json_object`` carrying the schema;
``auto`` tries them in :data:`AUTO_JSON_MODES` order and keeps the first the server accepts."""

AUTO_JSON_MODES: tuple[str, ...] = ("json_schema", "json_object_schema", "json_object", "none")
"""What ``auto`` tries, most constraining first: a reply held to the schema parses best, a bare JSON
object next, and the prompt alone always works."""


@dataclass(frozen=True)
class Reply:
    """The model's answer to one request."""

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
    json_mode: str | None = None
    """How the request asked for JSON (with ``auto``, the mode the server accepted); None when not known."""


class RequestFailed(Exception):
    """One request failed for good (after its retries); the run records it and goes on.

    A later run asks again: a failed request is never cached.
    """

    def __init__(self, message: str, attempts: int, *, reason: str = "error", refused: bool = False) -> None:
        """Describe the failure.

        Args:
            message: The whole story, for the record.
            attempts: Requests sent (1 plus retries).
            reason: A short cause that failures are grouped by: ``connection refused``, ``timeout``,
                ``HTTP 503``, ...
            refused: The server answered and refused this request as given; asking again would get
                the same answer. False: no reply came (the endpoint was down, slow or overloaded).
        """
        super().__init__(message)
        self.attempts = attempts
        self.reason = reason
        self.refused = refused


class FormatRefused(RequestFailed):
    """The server refused the way the request asked for JSON (``response_format``), not the request itself."""


class BackendError(TunescopeError):
    """The backend cannot work at all (refused key, unknown model, wrong URL): stop the run."""


class JsonModeMemory(Protocol):
    """Where the JSON mode a server accepts is remembered between runs (the reply cache)."""

    def json_mode(self, server: str, model: str) -> str | None:
        """The mode remembered for ``model`` at ``server``, or None."""
        ...

    def remember_json_mode(self, server: str, model: str, mode: str | None) -> None:
        """Remember ``mode`` for ``model`` at ``server`` (None forgets it)."""
        ...


class Backend(Protocol):
    """What the judge and the rewriter need from a backend."""

    max_concurrency: int | None
    """Most requests it can serve at once (None: no limit of its own)."""
    uses_schema: bool
    """Whether :meth:`complete` uses the reply schema (so the schema belongs in a cache key)."""

    def identity(self) -> dict[str, Any]:
        """Everything that decides the reply besides the messages: part of the cache key."""
        ...

    def describe(self) -> dict[str, Any]:
        """Public description for records and summaries (never a secret)."""
        ...

    def complete(self, messages: list[dict[str, str]], schema: dict[str, Any] | None = None) -> Reply:
        """Send one request; raise :class:`RequestFailed` or :class:`BackendError`."""
        ...

    def close(self) -> None:
        """Release connections or memory."""
        ...
