"""Progress on the terminal for CLI runs: a live bar on a TTY, sparse plain lines otherwise."""

from __future__ import annotations

import sys
import time

from rs_vlm_app.reporting import RateMeter


class ConsoleReporter:
    """A Reporter that writes progress to stderr; never cancelled (Ctrl-C interrupts instead)."""

    def __init__(self, stream=None, min_interval_s: float = 2.0):
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.min_interval_s = 0.1 if self.tty else min_interval_s
        self._stage: str | None = None
        self._last = 0.0
        self._rate = RateMeter()

    def progress(self, stage: str, done: int, total: int | None = None) -> None:
        now = time.monotonic()
        if stage != self._stage:
            self._finish_line()
            self._stage, self._rate, self._last = stage, RateMeter(), 0.0
        rate = self._rate.update(done)
        final = total is not None and done >= total
        if not final and now - self._last < self.min_interval_s:
            return
        self._last = now
        text = f"{stage}: {done}/{total}" if total else f"{stage}: {done}"
        if rate:
            text += f" ({rate:.1f}/s"
            if total and not final:
                text += f", about {_duration((total - done) / rate)} left"
            text += ")"
        if self.tty:
            self.stream.write("\r\033[K" + text + ("\n" if final else ""))
            if final:
                self._stage = None
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def log(self, message: str, level: str = "info") -> None:
        self._finish_line()
        prefix = "" if level == "info" else f"rsvlm: {level}: "
        self.stream.write(prefix + " ".join(message.split()) + "\n")
        self.stream.flush()

    def cancel_requested(self) -> bool:
        return False

    def _finish_line(self) -> None:
        if self.tty and self._stage is not None:
            self.stream.write("\n")
            self._stage = None


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
