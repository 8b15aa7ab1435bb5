"""Exceptions that cross layers: user mistakes and cancellation."""

from __future__ import annotations

from pathlib import Path

#: Exit status for a mistake the user can fix (bad input, missing model, unwritable output).
EXIT_USER_ERROR = 2
#: Exit status of a job stopped by a cancel request; its finished work is kept and resumable.
EXIT_CANCELLED = 3


class UserError(Exception):
    """A mistake the user can fix. ``str(exc)`` is one line a person can act on.

    The CLI prints it as ``rsvlm: error: <message>`` and exits with EXIT_USER_ERROR; the worker sends
    it as an ``error`` event. Never raise it for a bug in our own code.
    """

    def __init__(self, message: str, path: str | Path | None = None):
        text = " ".join(str(message).split())  # always one line
        if path is not None:
            text = f"{path}: {text}"
        super().__init__(text)


class Cancelled(Exception):
    """The user asked the running job to stop; raised at the next batch boundary."""
