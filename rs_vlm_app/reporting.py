"""How long-running work reports progress and notices a cancel request.

Tasks receive a :class:`Reporter`; the CLI renders it as a progress bar, the worker turns it into
JSON-lines events (rs_vlm_app/jobs/protocol.py). Standard library only.
"""

from __future__ import annotations

import logging
import time
from typing import Protocol

from rs_vlm_app.errors import Cancelled

log = logging.getLogger("rs_vlm_app")


class Reporter(Protocol):
    def progress(self, stage: str, done: int, total: int | None = None) -> None:
        """``done`` of ``total`` units of ``stage`` are finished (total None when unknown)."""

    def log(self, message: str, level: str = "info") -> None:
        """A line for the person running the job."""

    def cancel_requested(self) -> bool:
        """True once the user asked the job to stop."""


class NullReporter:
    """Reports nothing and is never cancelled; the default for library calls."""

    def progress(self, stage: str, done: int, total: int | None = None) -> None:
        pass

    def log(self, message: str, level: str = "info") -> None:
        log.log(logging.getLevelName(level.upper()) if isinstance(level, str) else level, message)

    def cancel_requested(self) -> bool:
        return False


def check_cancelled(reporter: Reporter) -> None:
    """Raise :class:`Cancelled` if a stop was requested; call at batch boundaries."""
    if reporter.cancel_requested():
        raise Cancelled()


class RateMeter:
    """Units per second over a sliding window, for progress events (rate, eta)."""

    def __init__(self, window_s: float = 10.0):
        self.window_s = window_s
        self._samples: list[tuple[float, int]] = []

    def update(self, done: int) -> float | None:
        now = time.monotonic()
        self._samples.append((now, done))
        while len(self._samples) > 2 and now - self._samples[0][0] > self.window_s:
            self._samples.pop(0)
        t0, d0 = self._samples[0]
        if now - t0 <= 0 or done <= d0:
            return None
        return (done - d0) / (now - t0)


def format_duration(seconds: float | None) -> str:
    """``42s``, ``3m05s``, ``2h07m``; empty for None."""
    if seconds is None:
        return ""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
