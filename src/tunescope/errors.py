"""The two ways a tunescope command fails on purpose.

Anything raised as one of these reaches the user as a single line on stderr, with no traceback
(see :func:`tunescope.cli.main`). Everything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class TunescopeError(Exception):
    """A failure the user can act on; the message is the whole explanation."""

    exit_code = 1


class UserError(TunescopeError):
    """Bad input: a file, field, flag or path that cannot be used as given (exit code 2)."""

    exit_code = 2
