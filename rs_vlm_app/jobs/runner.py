"""Run one job spec and describe everything that happens as protocol events.

The same function serves the worker process (events become JSON lines on stdout) and the CLI
(events become progress bars, or JSON lines with ``--json``). Exactly one final event ends every
job: ``result``, ``error`` or ``cancelled``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from rs_vlm_app import __version__
from rs_vlm_app.errors import EXIT_CANCELLED, EXIT_USER_ERROR, Cancelled, UserError
from rs_vlm_app.jobs import protocol
from rs_vlm_app.jobs.context import JobContext
from rs_vlm_app.jobs.specs import JobResult, JobSpec
from rs_vlm_app.models.cache import ModelCache, ModelLoadError
from rs_vlm_app.reporting import RateMeter

log = logging.getLogger(__name__)

Emit = Callable[[protocol.Event], None]

#: Exit status of a job that crashed (a bug, not a user mistake).
EXIT_INTERNAL_ERROR = 1

#: Packages whose versions ``hello`` reports.
VERSIONED_PACKAGES = ("torch", "open_clip_torch", "transformers", "rasterio", "numpy")


class EventReporter:
    """A Reporter that emits protocol events: progress (with rate and ETA, at most every
    ``min_interval_s`` per stage, plus the first and last of each stage) and log lines."""

    def __init__(self, emit: Emit, job_id: str | None, cancel: threading.Event | None = None,
                 min_interval_s: float = 0.25):
        self.emit = emit
        self.job_id = job_id
        self.cancel = cancel or threading.Event()
        self.min_interval_s = min_interval_s
        self._meters: dict[str, RateMeter] = {}
        self._last: dict[str, float] = {}
        self._sent: dict[str, tuple[int, int | None]] = {}
        self._lock = threading.Lock()

    def progress(self, stage: str, done: int, total: int | None = None) -> None:
        now = time.monotonic()
        with self._lock:
            first = stage not in self._meters
            meter = self._meters.setdefault(stage, RateMeter())
            rate = meter.update(done)
            final = total is not None and done >= total
            if not (first or final) and now - self._last.get(stage, 0.0) < self.min_interval_s:
                return
            if self._sent.get(stage) == (done, total):
                return  # nothing new to say
            self._sent[stage] = (done, total)
            self._last[stage] = now
        eta = (total - done) / rate if rate and total is not None and total > done else (0.0 if final else None)
        self.emit(protocol.Progress(stage=stage, done=int(done), total=None if total is None else int(total),
                                    rate=rate, eta=eta, job=self.job_id))

    def log(self, message: str, level: str = "info") -> None:
        self.emit(protocol.Log(message=str(message), level=level, job=self.job_id))

    def cancel_requested(self) -> bool:
        return self.cancel.is_set()


@dataclass
class Outcome:
    """How a job ended: ``status`` is "ok", "error" or "cancelled"; ``final`` its final event."""

    status: str
    exit_code: int
    final: protocol.Event
    result: JobResult | None = None


def run_job(
    spec: JobSpec,
    emit: Emit,
    *,
    job_id: str | None = None,
    cancel: threading.Event | None = None,
    models: ModelCache | None = None,
    cache: Any = None,
    checked: bool = False,
) -> Outcome:
    """Run ``spec``, emitting ``started``, progress/log events and one final event.

    Never raises for a job failure (UserError, a crash, a cancel): those become ``error`` or
    ``cancelled`` events and the returned Outcome. Library log records and Python warnings raised
    while the job runs become ``log`` events. ``checked``: the caller already ran ``spec.check()``.
    """
    reporter = EventReporter(emit, job_id, cancel)
    context = JobContext(reporter=reporter, models=models or ModelCache(), cache=cache)
    emit(protocol.Started(kind=spec.kind, title=spec.title(), job=job_id))
    present = _existing_inputs(spec)
    with capture_logs(reporter):
        try:
            if not checked:
                spec.check()
            result = spec.run(context)
        except (Cancelled, KeyboardInterrupt):
            event = protocol.Cancelled(job=job_id)
            emit(event)
            return Outcome("cancelled", EXIT_CANCELLED, event)
        except ModelLoadError as exc:
            return _fail(emit, job_id, str(exc), "model", EXIT_USER_ERROR)
        except UserError as exc:
            vanished = _vanished(present)
            if vanished:
                return _fail(emit, job_id, _vanished_message(vanished), "input-changed", EXIT_USER_ERROR)
            return _fail(emit, job_id, str(exc), "user", EXIT_USER_ERROR)
        except Exception as exc:
            details = traceback.format_exc()
            reporter.log(details.rstrip(), level="debug")
            vanished = _vanished(present)
            if vanished:
                return _fail(emit, job_id, _vanished_message(vanished), "input-changed", EXIT_USER_ERROR)
            text = " ".join(str(exc).split())[:300]
            message = f"internal error: {type(exc).__name__}{': ' + text if text else ''} (the job log has the details)"
            return _fail(emit, job_id, message, "internal", EXIT_INTERNAL_ERROR)
    summary = dict(result.summary)
    summary.setdefault("model_loads", context.models.loads)
    event = protocol.Result(kind=spec.kind, files=list(result.files), summary=summary, job=job_id)
    emit(event)
    return Outcome("ok", 0, event, result)


def _fail(emit: Emit, job_id: str | None, message: str, kind: str, code: int) -> Outcome:
    event = protocol.Error(message=message, kind=kind, job=job_id)
    emit(event)
    return Outcome("error", code, event)


def _existing_inputs(spec: JobSpec) -> list[Path]:
    try:
        return [Path(p) for p in spec.inputs() if Path(p).exists()]
    except Exception:  # a bug in inputs() must not hide the job's own failure
        return []


def _vanished(inputs: list[Path]) -> list[Path]:
    """Inputs that existed when the job started and are gone now."""
    return [p for p in inputs if not p.exists()]


def _vanished_message(paths: list[Path]) -> str:
    return (f"{paths[0]}: the file disappeared while the job was running; put it back (or choose "
            "another) and run the job again: finished work is kept")


class _EventLogHandler(logging.Handler):
    def __init__(self, reporter: EventReporter):
        super().__init__(logging.DEBUG)
        self.reporter = reporter

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if record.name == "py.warnings":
                message = message.strip().splitlines()[0] if message.strip() else message
            if record.exc_info and record.levelno >= logging.ERROR:
                message += "\n" + "".join(traceback.format_exception(*record.exc_info)).rstrip()
            self.reporter.log(message, level=record.levelname.lower())
        except Exception:  # never let logging break a job
            self.handleError(record)


@contextlib.contextmanager
def capture_logs(reporter: EventReporter) -> Iterator[None]:
    """While the block runs, rs_vlm_app log records and Python warnings become ``log`` events
    (instead of going to the handlers the front end installed)."""
    handler = _EventLogHandler(reporter)
    app = logging.getLogger("rs_vlm_app")
    warn = logging.getLogger("py.warnings")
    saved = (app.handlers[:], app.propagate, app.level, warn.handlers[:], warn.propagate)
    if app.level == logging.NOTSET:
        app.setLevel(logging.INFO)
    app.handlers[:] = [handler]
    app.propagate = False
    warn.handlers[:] = [handler]
    warn.propagate = False
    logging.captureWarnings(True)
    try:
        yield
    finally:
        logging.captureWarnings(False)
        app.handlers[:], app.propagate, level, warn.handlers[:], warn.propagate = saved
        app.setLevel(level)


def hello(mode: str, models: ModelCache | None = None) -> protocol.Hello:
    """The ``hello`` event: protocol and package versions, process id, compute devices."""
    versions = {"rs-vlm": __version__, "python": platform.python_version()}
    for name in VERSIONED_PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    event = protocol.Hello(app_version=__version__, mode=mode, pid=os.getpid(), versions=versions,
                           device=device_info())
    event.extra["model_loads"] = models.loads if models is not None else 0
    event.extra["executable"] = sys.executable
    return event


def device_info() -> dict[str, Any]:
    """What this process can compute on: {"default": "cuda"|"mps"|"cpu", "cuda": [names], ...}."""
    try:
        import torch
    except Exception as exc:  # a broken install is reported, not fatal: jobs then fail readably
        return {"default": "none", "error": f"torch cannot be imported: {' '.join(str(exc).split())}"}
    info: dict[str, Any] = {"default": "cpu", "cuda": [], "threads": torch.get_num_threads()}
    try:
        if torch.cuda.is_available():
            info["cuda"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
            info["default"] = "cuda"
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            info["default"] = "mps"
    except Exception as exc:  # a driver problem: say so, compute on the CPU
        info["warning"] = f"GPU check failed: {' '.join(str(exc).split())}"
    return info
