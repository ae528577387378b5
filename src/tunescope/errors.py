"""The ways a tunescope command fails on purpose, each with its exit code.

Anything raised as one of these reaches the user as a single line on stderr, with no traceback
(see :func:`tunescope.cli.main`). Everything else is a bug and keeps its traceback.

====  =========================================================================================
code  meaning
====  =========================================================================================
1     :class:`TunescopeError`: a failure the user can act on (a judge that refuses the key, ...)
2     :class:`UserError`: bad input, or an output another process is writing
3     :class:`IncompleteRun`: some requests got no reply; the finished part is kept, rerun to complete
====  =========================================================================================
"""

from __future__ import annotations


class TunescopeError(Exception):
    """A failure the user can act on; the message is the whole explanation."""

    exit_code = 1
    quiet = False
    """Set on the other processes of an ``accelerate launch`` when the main process reports the same error."""


class UserError(TunescopeError):
    """Bad input: a file, field, flag or path that cannot be used as given (exit code 2)."""

    exit_code = 2


class IncompleteRun(TunescopeError):
    """The run finished what it could, but some requests got no reply: rerun the same command (exit code 3)."""

    exit_code = 3
