"""Run a job spec in-process for a CLI command: progress bars on stderr, or raw events (``--json``).

Long commands build a job spec from their arguments and call :func:`run_spec`; the job then
reports exactly as it does in a worker, and the terminal shows the same events as progress bars
(rich on a terminal, sparse plain lines otherwise). Ctrl-C asks the job to stop at its next batch
(finished work is kept); a second Ctrl-C stops at once.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from rs_vlm_app.errors import EXIT_USER_ERROR, UserError
from rs_vlm_app.jobs import protocol
from rs_vlm_app.jobs.runner import Outcome, run_job
from rs_vlm_app.jobs.specs import JobSpec, ModelSpec
from rs_vlm_app.reporting import format_duration

CANCELLED_TEXT = "rsvlm: cancelled; finished work is kept, run the same command again to resume"
STOPPING_TEXT = "stopping at the next batch"


def add_json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true",
                        help="print the job's events as JSON lines on stdout (for scripts; see docs/jobs.md) "
                             "instead of progress bars")


def model_spec_from_args(args: argparse.Namespace) -> ModelSpec:
    """The model options of rs_vlm_app.commands.options as a job's ModelSpec."""
    def path(name: str) -> Path | None:
        value = getattr(args, name, None)
        return Path(value) if value else None

    return ModelSpec(
        name=getattr(args, "model", None),
        checkpoint=path("checkpoint"),
        arch=getattr(args, "arch", None),
        model_config=path("model_config"),
        quick_gelu=getattr(args, "quick_gelu", None),
        device=getattr(args, "device", None) or "auto",
        precision=getattr(args, "precision", None) or "auto",
        batch_size=getattr(args, "batch_size", None),
        allow_download=False if getattr(args, "offline", False) else None,
    )


def run_spec(spec: JobSpec, args: argparse.Namespace, stopping: str = STOPPING_TEXT) -> Outcome:
    """Run ``spec`` here; ``args.json`` selects raw events on stdout, else progress on stderr.

    Ctrl-C or SIGTERM asks the job to stop at its next batch (``stopping`` says so on stderr); a
    second one stops at once."""
    cancel = threading.Event()
    if getattr(args, "json", False):
        from rs_vlm_app.jobs.runner import hello
        from rs_vlm_app.jobs.worker import EventWriter, protect_stdout

        emit = EventWriter(protect_stdout(), on_broken=cancel.set)
        try:
            spec.check()  # input mistakes answer before torch is imported for hello's device line
        except UserError as exc:
            emit(protocol.Error(message=str(exc), kind="user"))
            return Outcome("error", EXIT_USER_ERROR, protocol.Error(message=str(exc), kind="user"))
        emit(hello("inprocess"))
        with _ctrl_c_cancels(cancel, None):
            return run_job(spec, emit, cancel=cancel)
    console = EventConsole(sys.stderr, verbose=getattr(args, "verbose", False))
    try:
        with _ctrl_c_cancels(cancel, stopping):
            return run_job(spec, console, cancel=cancel)
    finally:
        console.close()


@contextlib.contextmanager
def _ctrl_c_cancels(cancel: threading.Event, stopping: str | None) -> Iterator[None]:
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

