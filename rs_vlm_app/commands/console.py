"""The terminal renderer every command uses: job events as progress bars (rich on a terminal) or
sparse plain lines, and Ctrl-C / SIGTERM as a request to stop.

Commands that run a job spec get it through rs_vlm_app.commands.jobrun.run_spec; commands that call
an engine function directly (`rsvlm demo`, `rsvlm dataset export`) use :func:`console_reporter`,
which turns the function's Reporter calls into the same events and the same rendering.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any, TextIO

from rs_vlm_app.jobs import protocol
from rs_vlm_app.reporting import Reporter, format_duration

CANCELLED_TEXT = "rsvlm: cancelled; finished work is kept, run the same command again to resume"
STOPPING_TEXT = "stopping at the next batch"


@contextlib.contextmanager
def console_reporter(stopping: str = STOPPING_TEXT, verbose: bool = False,
                     stream: TextIO | None = None) -> Iterator[Reporter]:
    """A Reporter rendering on stderr like a job run: the first Ctrl-C or SIGTERM makes
    ``cancel_requested()`` true (the engine then raises Cancelled at its next check), a second one
    stops at once."""
    from rs_vlm_app.jobs.runner import EventReporter

    cancel = threading.Event()
    console = EventConsole(stream or sys.stderr, verbose=verbose)
    try:
        with ctrl_c_cancels(cancel, stopping):
            yield EventReporter(console, None, cancel)
    finally:
        console.close()


@contextlib.contextmanager
def ctrl_c_cancels(cancel: threading.Event, stopping: str | None) -> Iterator[None]:
    """The first SIGINT or SIGTERM sets ``cancel`` (and prints ``stopping``, unless None); a second
    one raises KeyboardInterrupt: stop now."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_signal(signum, frame):
        if cancel.is_set():
            raise KeyboardInterrupt
        cancel.set()
        if stopping is not None:
            print(f"\nrsvlm: {stopping} (Ctrl-C again to stop now)", file=sys.stderr, flush=True)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class EventConsole:
    """Renders job events for a person: rich progress bars on a terminal, plain lines otherwise."""

    def __init__(self, stream: TextIO, verbose: bool = False, min_interval_s: float = 2.0):
        self.stream = stream
        self.verbose = verbose
        self.tty = hasattr(stream, "isatty") and stream.isatty()
        self.min_interval_s = min_interval_s
        self._last_line: dict[str, float] = {}
        self._progress: Any = None
        self._tasks: dict[str, Any] = {}
        if self.tty:
            self._progress = _rich_progress(stream)
            self._progress.start()

    def __call__(self, event: protocol.Event) -> None:
        if isinstance(event, protocol.Progress):
            self._on_progress(event)
        elif isinstance(event, protocol.Log):
            if event.level == "debug" and not self.verbose:
                return
            prefix = "" if event.level in ("info", "debug") else f"rsvlm: {event.level}: "
            self._print(prefix + event.message)
        elif isinstance(event, protocol.Error):
            self._print(f"rsvlm: error: {event.message}")
        elif isinstance(event, protocol.Cancelled):
            self._print(CANCELLED_TEXT)

    def _on_progress(self, event: protocol.Progress) -> None:
        if self._progress is not None:
            task = self._tasks.get(event.stage)
            fields = {"rate": _rate(event.rate), "eta": _eta(event)}
            if task is None:
                self._tasks[event.stage] = self._progress.add_task(
                    event.stage, total=event.total, completed=event.done, **fields)
            else:
                self._progress.update(task, total=event.total, completed=event.done, **fields)
            return
        now = time.monotonic()
        final = event.total is not None and event.done >= event.total
        first = event.stage not in self._last_line
        if not (first or final) and now - self._last_line.get(event.stage, 0.0) < self.min_interval_s:
            return
        self._last_line[event.stage] = now
        text = f"{event.stage}: {event.done}/{event.total}" if event.total else f"{event.stage}: {event.done}"
        if event.rate:
            text += f" ({_rate(event.rate)}"
            if not final and event.eta is not None:
                text += f", about {format_duration(event.eta)} left"
            text += ")"
        self._print(text)

    def _print(self, text: str) -> None:
        if self._progress is not None:
            self._progress.console.print(text, markup=False, highlight=False)
        else:
            self.stream.write(text + "\n")
            self.stream.flush()

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def _rich_progress(stream: TextIO):
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(bar_width=None),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TextColumn("{task.fields[eta]}"),
        TimeElapsedColumn(),
        console=Console(file=stream),
        transient=False,
        expand=True,
    )


def _rate(rate: float | None) -> str:
    return f"{rate:.1f}/s" if rate else ""


def _eta(event: protocol.Progress) -> str:
    if event.eta is None or (event.total is not None and event.done >= event.total):
        return ""
    return f"{format_duration(event.eta)} left"

