"""The front ends' client of the worker: jobs and workers with one cancel policy, job spec builders,
and the plan that turns a result's files into named, styled map layers.

STANDARD LIBRARY ONLY, like protocol.py: `rsvlm qgis install` and `rsvlm qgis package` copy this
file into the QGIS plugin beside protocol.py, where torch, rasterio and the rest of rs_vlm_app must
never be imported. Its only import of ours is ``from . import protocol`` (the app's
rs_vlm_app/jobs/protocol.py, or the plugin's copy of it).

Three parts, each used by the desktop GUI (rs_vlm_app/gui/) and the QGIS plugin (plugin_qgis/):

- **Jobs and workers.** :class:`Job` is a job as a front end shows it. :class:`WorkerSession` is a
  pure state machine of one worker process: fed its stdout bytes, stderr text and exit, it routes
  events to jobs, decides their final states and messages, and says when a cancel must escalate to
  SIGTERM and SIGKILL. It does no I/O, so any event loop can drive it: :class:`WorkerProcess` drives
  it with subprocess and threads (the plugin, Processing, scripts), the GUI with QProcess.
- **Spec builders** (``localize_spec`` ...): the JSON objects the worker reads. Required fields are
  positional in the order of the kind's dataclass (rs_vlm_app/jobs/kinds/), every option is passed
  by its field name and declared only there; unset options (None) are left out so the worker's
  defaults apply. tests/jobs/test_client_specs.py parses every builder's output with the worker's
  own parser.
- **Layer plan** (:func:`layer_plan`): which result files become which layers (name, sub-layer,
  style, visibility, group), chosen by the files' roles; each front end opens the planned layers
  with its own map library.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import protocol

# -- the cancel policy ------------------------------------------------------------------------------

#: A cancelled job still running this long after the cancel request gets SIGTERM (the worker then
#: stops at once, through the job's cleanup) ...
CANCEL_GRACE_S = 15.0
#: ... and SIGKILL this long after the SIGTERM.
KILL_GRACE_S = 5.0
#: stderr lines kept to explain a worker that died
STDERR_TAIL = 60
#: log lines kept per job
MAX_LOG_LINES = 2000

QUEUED, RUNNING, CANCELLING, DONE, FAILED, CANCELLED = (
    "queued", "running", "cancelling", "done", "failed", "cancelled")
FINISHED_STATES = (DONE, FAILED, CANCELLED)
#: Job.status of each finished state
_STATUS = {DONE: "ok", FAILED: "error", CANCELLED: "cancelled"}

#: error kind of a job whose worker died, or could not be started
WORKER_ERROR = "worker"
#: the message of a job cancelled by stopping its worker (it never said "cancelled" itself)
STOPPED_MESSAGE = "cancelled; the worker was stopped, finished work is kept: run the same job again to resume"


@dataclass
class Job:
    """One job as a front end knows it, built from the worker's events.

    ``state``: queued, running, cancelling, done, failed or cancelled. When finished, ``status`` is
    "ok", "error" or "cancelled" and ``message`` says why in one line.
    """

    id: str
    kind: str
    title: str
    spec: dict[str, Any]
    state: str = QUEUED
    stage: str = ""
    done: int = 0
    total: int | None = None
    rate: float | None = None
    eta: float | None = None
    submitted: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    log: list[str] = field(default_factory=list)
    result: Any = None                      # protocol.Result once done
    error: str = ""
    error_kind: str = ""
    interactive: bool = False
    cancel_message: str = ""
    cancel_requested: float | None = field(default=None, repr=False)   # time.monotonic()
    running_since: float | None = field(default=None, repr=False)      # time.monotonic()

    @classmethod
    def ended(cls, status: str, message: str = "", error_kind: str = "", spec: dict | None = None) -> Job:
        """A job that finished without a worker (it could not start, or was cancelled first)."""
        spec = spec or {}
        job = cls(id="", kind=str(spec.get("kind", "")), title="", spec=spec)
        if status == "cancelled":
            job.cancel_message = message
            job.state = CANCELLED
        else:
            job.error, job.error_kind, job.state = message, error_kind or WORKER_ERROR, FAILED
        job.finished = time.time()
        return job

    @property
    def finished_state(self) -> bool:
        return self.state in FINISHED_STATES

    @property
    def status(self) -> str:
        """"ok", "error" or "cancelled" once finished, else "running"."""
        return _STATUS.get(self.state, "running")

    @property
    def ok(self) -> bool:
        return self.state == DONE

    @property
    def message(self) -> str:
        """Why a failed or cancelled job ended, in one line."""
        if self.state == FAILED:
            return self.error
        if self.state == CANCELLED:
            return self.cancel_message or protocol.Cancelled().message
        return ""

    @property
    def logs(self) -> list[str]:
        return self.log

    @property
    def fraction(self) -> float | None:
        if self.state == DONE:
            return 1.0
        if not self.total:
            return None
        return max(0.0, min(1.0, self.done / self.total))

    def files(self, role: str | None = None) -> list:
        """The result's files (protocol.ResultFile), all or those of one role."""
        if self.result is None:
            return []
        return [f for f in self.result.files if role is None or f.role == role]

    def status_text(self) -> str:
        if self.state == FAILED:
            return self.error or "failed"
        if self.state == CANCELLED:
            return "cancelled; finished work is kept"
        if self.state == DONE:
            return "done"
        if self.state == QUEUED:
            return "waiting for the worker"
        text = self.stage or "starting"
        if self.total:
            text += f" {self.done}/{self.total}"
        if self.state == CANCELLING:
            text = "stopping at the next batch... " + text
        return text


def describe_exit(returncode: int | None, stderr: list[str], started: bool, program: str = "",
                  hint: str = "") -> str:
    """One line saying why a worker ended before its job finished.

    ``returncode``: the exit status, negative for a signal, None when unknown (a crash). ``started``:
    whether the job had begun. ``program``: the worker's interpreter, named when the worker died
    before starting (most often a problem of that environment). ``hint``: what the user can do about
    a wrong interpreter, in the front end's words.
    """
    text = "\n".join(stderr)
    if "No module named rs_vlm_app" in text or "No module named 'rs_vlm_app'" in text:
        where = program or "this Python"
        line = f"{where} cannot run rs-vlm (No module named 'rs_vlm_app'): use the Python of the environment " \
               "where rs-vlm is installed"
        return f"{line}; {hint}" if hint else line
    when = "during the job" if started else "before the job started"
    if returncode is None:
        how = f"was killed or crashed {when}"
    elif returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        how = f"was killed by {name} {when}"
    elif returncode in (0, 2, 3):  # a clean exit, yet without the job's final event
        how = "ended before the job finished" if started else "ended before the job started"
    else:
        how = f"exited with status {returncode} {when}"
    line = f"the worker process {how}" if started or not program else f"the worker process ({program}) {how}"
    if started:
        line += "; finished work is kept, run it again to resume"
    last = last_words(stderr)
    return f"{line} (its last words: {last})" if last else f"{line} (it wrote nothing to stderr)"


def last_words(lines: list[str]) -> str:
    """The last stderr line that says something (traceback frames skipped)."""
    for line in reversed(lines):
        text = " ".join(line.split())
        if text and not text.startswith(("File ", "Traceback", "^", "~")):
            return text[:300]
    return ""


def cannot_start(program: str, reason: str, hint: str = "") -> str:
    line = f"{program}: cannot start the rs-vlm worker ({reason})"
    return f"{line}; {hint}" if hint else line


def worker_args(serve: bool, job_id: str = "job") -> list[str]:
    """Arguments after the interpreter: a persistent worker, or one job whose spec comes on stdin."""
    return ["-m", "rs_vlm_app", "worker", "--serve"] if serve else ["-m", "rs_vlm_app", "worker", "-", "--id", job_id]


@dataclass
class Update:
    """What one event did: ``job`` (None: the worker itself), the event, and whether it ended the job."""

    job: Job | None
    event: Any
    finished: bool = False


class WorkerSession:
    """The state of one worker process and its jobs, without any I/O.

    The driver (threads or QProcess) writes what :meth:`submit`, :meth:`cancel` and
    :meth:`shutdown_line` return to the worker's stdin, passes its stdout to :meth:`feed` and its
    stderr to :meth:`feed_stderr`, calls :meth:`escalation` now and then (every 0.1-0.5 s while
    :attr:`needs_ticks`) and does what it says, and calls :meth:`process_ended` once when the process
    is gone. ``serve``: a persistent worker (many jobs, routed by id) or a one-shot (one job).
    """

    def __init__(self, serve: bool, program: str = "", hint: str = "",
                 clock: Callable[[], float] = time.monotonic):
        self.serve = serve
        self.program = program
        self.hint = hint
        self.clock = clock
        self.jobs: dict[str, Job] = {}          # unfinished jobs of this worker, by id
        self.hello: Any = None
        self.protocol_error = ""
        self.stderr: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL)
        self.ended = False
        self.returncode: int | None = None
        self._stream = protocol.EventStream()
        self._terminated_at: float | None = None
        self._killed = False

    # -- requests --------------------------------------------------------------------------------

    def submit(self, job: Job) -> str:
        """Take ``job``; returns the line to write to the worker's stdin."""
        if self.ended:
            raise RuntimeError("the worker process has ended")
        if not self.serve and self.jobs:
            raise RuntimeError("a one-shot worker runs one job")
        self.jobs[job.id] = job
        if self.serve:
            return protocol.run_request(job.id, job.spec)
        return json.dumps(job.spec, ensure_ascii=False) + "\n"

    def cancel(self, job: Job) -> str | None:
        """Ask ``job`` to stop at its next batch; the line to write (None: nothing to do)."""
        if job.finished_state or job.state == CANCELLING or job.id not in self.jobs:
            return None
        job.state = CANCELLING
        job.cancel_requested = self.clock()
        return protocol.cancel_request(job.id) if self.serve else "cancel\n"

    def shutdown_line(self) -> str:
        """The line that ends the worker (serve: after the jobs sent; one-shot: cancels its job)."""
        return protocol.encode_request(protocol.Request("shutdown")) if self.serve else "cancel\n"

    # -- the process's output --------------------------------------------------------------------

    def feed(self, chunk: bytes | str) -> list[Update]:
        """Events of a chunk of stdout, applied to their jobs."""
        return [self._apply(event) for event in self._stream.feed(chunk)]

    def close_stdout(self) -> list[Update]:
        return [self._apply(event) for event in self._stream.close()]

    def feed_stderr(self, text: bytes | str) -> list[str]:
        """Keep the last stderr lines; returns the non-blank ones of ``text``."""
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        lines = [line.rstrip() for line in text.splitlines() if line.strip()]
        self.stderr.extend(lines)
        return lines

    def _apply(self, event) -> Update:
        if isinstance(event, protocol.Hello):
            self.hello = event
            if event.protocol != protocol.PROTOCOL_VERSION:
                self.protocol_error = (
                    f"the rs-vlm worker (rs-vlm {event.app_version}) speaks protocol {event.protocol}, this "
                    f"front end {protocol.PROTOCOL_VERSION}: use the same rs-vlm version for both")
                if self.hint:
                    self.protocol_error += f"; {self.hint}"
            return Update(None, event)
        job = self.jobs.get(event.job or "") if self.serve else next(iter(self.jobs.values()), None)
        if job is None:
            return Update(None, event)
        if isinstance(event, protocol.Started):
            job.state = CANCELLING if job.state == CANCELLING else RUNNING
            job.started = time.time()
            job.running_since = self.clock()
            job.title = job.title or event.title
        elif isinstance(event, protocol.Progress):
            job.stage, job.done, job.total, job.rate, job.eta = (
                event.stage, event.done, event.total, event.rate, event.eta)
            if job.state == QUEUED:
                job.state = RUNNING
            if job.running_since is None:
                job.running_since = self.clock()
        elif isinstance(event, protocol.Log):
            if event.level != "debug" or "Traceback" in event.message:
                prefix = "" if event.level == "info" else f"{event.level}: "
                job.log.append(prefix + event.message)
                del job.log[:-MAX_LOG_LINES]
        elif isinstance(event, protocol.Result):
            job.result = event
            return Update(job, event, self._finish(job, DONE))
        elif isinstance(event, protocol.Error):
            job.error, job.error_kind = event.message, event.kind
            return Update(job, event, self._finish(job, FAILED))
        elif isinstance(event, protocol.Cancelled):
            job.cancel_message = event.message
            return Update(job, event, self._finish(job, CANCELLED))
        return Update(job, event)

    def _finish(self, job: Job, state: str) -> bool:
        self.jobs.pop(job.id, None)
        if job.finished_state:
            return False
        job.state = state
        job.finished = time.time()
        if job.error:
            job.log.append(f"error: {job.error}")
        return True

    # -- the cancel policy -----------------------------------------------------------------------

    @property
    def needs_ticks(self) -> bool:
        """Whether :meth:`escalation` may have something to do."""
        return not self.ended and (self._terminated_at is not None
                                   or any(j.cancel_requested is not None for j in self.jobs.values()))

    def escalation(self) -> str | None:
        """"terminate" or "kill" when the driver must do that to the process now, else None.

        A cancelled job that has run CANCEL_GRACE_S since the cancel (or since it started, if it was
        queued then) without ending gets its worker SIGTERMed, then SIGKILLed KILL_GRACE_S later.
        """
        if self.ended:
            return None
        now = self.clock()
        if self._terminated_at is not None:
            if not self._killed and now - self._terminated_at >= KILL_GRACE_S:
                self._killed = True
                return "kill"
            return None
        for job in self.jobs.values():
            if job.cancel_requested is None or job.running_since is None:
                continue
            if now - max(job.cancel_requested, job.running_since) >= CANCEL_GRACE_S:
                self._terminated_at = now
                return "terminate"
        return None

    def terminating(self) -> None:
        """The driver terminated the process itself (shutting down): escalate to kill if it lingers."""
        if self._terminated_at is None:
            self._terminated_at = self.clock()

    # -- the end ---------------------------------------------------------------------------------

    def process_ended(self, returncode: int | None, start_error: str = "") -> list[Job]:
        """The process is gone (``returncode`` negative: a signal; None: unknown or a crash).
        Every job without its final event ends now: cancelled if a cancel was asked, else failed
        with a message saying why. Returns those jobs."""
        if self.ended:
            return []
        self.ended = True
        self.returncode = returncode
        orphans = list(self.jobs.values())
        self.jobs.clear()
        for job in orphans:
            if job.state == CANCELLING:
                job.cancel_message = STOPPED_MESSAGE
                job.state = CANCELLED
            else:
                job.error = start_error or self.protocol_error or describe_exit(
                    returncode, list(self.stderr), job.running_since is not None or job.started is not None,
                    self.program, self.hint)
                job.error_kind = WORKER_ERROR
                job.log.extend(f"worker stderr: {line}" for line in self.stderr)
                job.log.append(f"error: {job.error}")
                job.state = FAILED
            job.finished = time.time()
        return orphans


# -- driving a session with subprocess and threads ------------------------------------------------

OnEvent = Callable[[Any], None]
IsCancelled = Callable[[], bool]


class WorkerError(Exception):
    """The worker cannot be used (it could not start, or has ended). ``str()`` is one line."""


class WorkerProcess:
    """A worker process driven by threads: one reads its events, one its stderr, one applies the cancel
    policy. Thread-safe; :meth:`submit` returns a :class:`JobHandle` to wait on from any thread.

    ``command``: the interpreter and :func:`worker_args`; ``env`` and ``cwd`` for the process.
    """

    _ids = itertools.count(1)

    def __init__(self, command: list[str], serve: bool = True, env: dict[str, str] | None = None,
                 cwd: str | None = None, hint: str = "", on_stderr: Callable[[str], None] | None = None):
        self.serve = serve
        self.session = WorkerSession(serve, program=command[0], hint=hint)
        self.hello_received = threading.Event()
        self._on_stderr = on_stderr
        self._queues: dict[str, queue.Queue] = {}
        self._lock = threading.RLock()
        self._write_lock = threading.Lock()
        self._exited = threading.Event()
        kwargs: dict[str, Any] = {}
        if sys.platform.startswith("win"):
            kwargs["creationflags"] = getattr(subprocess, "CREATE_NO_WINDOW", 0)
        else:
            kwargs["start_new_session"] = True  # a Ctrl-C in the front end's terminal is not meant for it
        try:
            self.popen = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, env=env, cwd=cwd, **kwargs)
        except OSError as exc:
            raise WorkerError(cannot_start(command[0], exc.strerror or str(exc), hint)) from None
        self.pid = self.popen.pid
        self._stderr_done = threading.Event()
        for target, name in ((self._read_stdout, "events"), (self._read_stderr, "stderr"), (self._supervise, "cancel")):
            threading.Thread(target=target, daemon=True, name=f"rsvlm-{name}-{self.pid}").start()

    @property
    def hello(self):
        return self.session.hello

    @property
    def alive(self) -> bool:
        return not self._exited.is_set() and self.popen.poll() is None

    # -- jobs -------------------------------------------------------------------------------------

    def submit(self, spec: dict, job_id: str | None = None, title: str = "") -> JobHandle:
        """Send ``spec`` (a job spec object) and return the handle to wait on."""
        job_id = job_id or f"job-{os.getpid()}-{next(self._ids)}"
        job = Job(id=job_id, kind=str(spec.get("kind", "")), title=title, spec=spec)
        handle = JobHandle(self, job)
        with self._lock:
            if self.session.protocol_error:
                raise WorkerError(self.session.protocol_error)
            if self._exited.is_set() or self.session.ended:
                raise WorkerError(describe_exit(self.session.returncode, list(self.session.stderr), False,
                                                self.session.program, self.session.hint))
            line = self.session.submit(job)
            self._queues[job_id] = handle.queue
        self.write(line)
        return handle

    def cancel(self, job: Job) -> None:
        with self._lock:
            line = self.session.cancel(job)
        if line:
            self.write(line)

    def write(self, line: str) -> None:
        with self._write_lock:
            try:
                self.popen.stdin.write(line.encode("utf-8"))
                self.popen.stdin.flush()
            except (OSError, ValueError):
                pass  # the process is gone; its reader reports why

    def terminate(self) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(OSError):
                self.popen.terminate()

    def kill(self) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(OSError):
                self.popen.kill()

    def shutdown(self, timeout: float = 5.0) -> None:
        """Ask the worker to finish (a persistent one: after the jobs sent), then make sure it did:
        SIGTERM after ``timeout`` seconds, SIGKILL KILL_GRACE_S later."""
        if self.popen.poll() is None:
            self.write(self.session.shutdown_line())
            with contextlib.suppress(OSError):
                self.popen.stdin.close()
            for action, wait in ((None, timeout), (self.terminate, KILL_GRACE_S), (self.kill, KILL_GRACE_S)):
                if action is not None:
                    action()
                try:
                    self.popen.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        self._exited.wait(timeout)

    def wait_hello(self, timeout: float) -> Any:
        """The worker's hello event; WorkerError if it ended (or said nothing) first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.hello_received.wait(0.1) and self.session.hello is not None:
                if self.session.protocol_error:
                    raise WorkerError(self.session.protocol_error)
                return self.session.hello
            if self._exited.is_set():
                raise WorkerError(describe_exit(self.session.returncode, list(self.session.stderr), False,
                                                self.session.program, self.session.hint))
        raise WorkerError(f"the rs-vlm worker ({self.session.program}) did not answer within {timeout:.0f} s")

    # -- threads ----------------------------------------------------------------------------------

    def _read_stdout(self) -> None:
        pipe = self.popen.stdout
        try:
            for line in iter(pipe.readline, b""):
                with self._lock:
                    updates = self.session.feed(line)
                self._deliver(updates)
            with self._lock:
                updates = self.session.close_stdout()
            self._deliver(updates)
        except (OSError, ValueError):
            pass
        try:
            returncode = self.popen.wait(KILL_GRACE_S)
        except subprocess.TimeoutExpired:
            self.kill()
            returncode = self.popen.wait()
        self._stderr_done.wait(2.0)  # the last stderr lines explain the exit
        with self._lock:
            ended = self.session.process_ended(returncode)
            queues = dict(self._queues)
            self._queues.clear()
            self._exited.set()
        self.hello_received.set()
        for job in ended:
            q = queues.get(job.id)
            if q is not None:
                q.put(None)

    def _deliver(self, updates: list[Update]) -> None:
        for update in updates:
            if update.job is None:
                if isinstance(update.event, protocol.Hello):
                    self.hello_received.set()
                elif isinstance(update.event, protocol.Error) and self._on_stderr is not None:
                    self._on_stderr(f"worker: {update.event.message}")
                continue
            q = self._queues.get(update.job.id)
            if q is not None:
                q.put(update.event)
                if update.finished:
                    with self._lock:
                        self._queues.pop(update.job.id, None)
                    q.put(None)

    def _read_stderr(self) -> None:
        try:
            for raw in iter(self.popen.stderr.readline, b""):
                with self._lock:
                    lines = self.session.feed_stderr(raw)
                if self._on_stderr is not None:
                    for line in lines:
                        self._on_stderr(line)
        except (OSError, ValueError):
            pass
        finally:
            self._stderr_done.set()

    def _supervise(self) -> None:
        while not self._exited.wait(0.1):
            with self._lock:
                action = self.session.escalation()
            if action == "terminate":
                self.terminate()
            elif action == "kill":
                self.kill()


class JobHandle:
    """One submitted job: wait for it (its events delivered on the waiting thread), or cancel it."""

    def __init__(self, process: WorkerProcess, job: Job):
        self.process = process
        self.job = job
        self.id = job.id
        self.queue: queue.Queue = queue.Queue()

    def cancel(self) -> None:
        self.process.cancel(self.job)

    @property
    def cancel_requested(self) -> bool:
        return self.job.cancel_requested is not None

    def wait(self, on_event: OnEvent | None = None, is_cancelled: IsCancelled | None = None,
             timeout: float | None = None) -> Job:
        """Block until the job ends and return it. ``is_cancelled`` is polled: once true the job is
        cancelled (the cancel policy above applies); so it is after ``timeout`` seconds."""
        started = time.monotonic()
        while True:
            if not self.cancel_requested and not self.job.finished_state and (
                    (is_cancelled is not None and is_cancelled())
                    or (timeout is not None and time.monotonic() - started > timeout)):
                self.cancel()
            try:
                item = self.queue.get(timeout=0.1)
            except queue.Empty:
                continue
            if item is None:
                return self.job
            if on_event is not None:
                on_event(item)


def run_job(command: list[str], spec: dict, on_event: OnEvent | None = None,
            is_cancelled: IsCancelled | None = None, env: dict[str, str] | None = None, cwd: str | None = None,
            hint: str = "", on_stderr: Callable[[str], None] | None = None) -> Job:
    """Run ``spec`` in a one-shot worker of its own (``command`` = interpreter + worker_args(False)) and
    wait for it; a worker that cannot start gives a failed job, never an exception."""
    try:
        process = WorkerProcess(command, serve=False, env=env, cwd=cwd, hint=hint, on_stderr=on_stderr)
        handle = process.submit(spec)
    except WorkerError as exc:
        return Job.ended("error", str(exc), WORKER_ERROR, spec)
    try:
        return handle.wait(on_event, is_cancelled)
    finally:
        process.shutdown(timeout=KILL_GRACE_S)


# -- job spec builders ------------------------------------------------------------------------------


def _compact(value: Any) -> Any:
    """Plain JSON values; None (and empty strings) left out, so the worker's defaults apply."""
    if isinstance(value, dict):
        return {str(k): _compact(v) for k, v in value.items() if v is not None and v != ""}
    if isinstance(value, list | tuple):
        return [_compact(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def job_spec(kind: str, **fields: Any) -> dict:
    """A job spec of any kind: ``{"kind": kind, **fields}`` without unset (None) fields."""
    return {"kind": kind, **_compact(fields)}


def model_spec(name: str | None = None, checkpoint: str | os.PathLike | None = None, **options: Any) -> dict:
    """A spec's ``model`` object: a catalogue ``name`` or a ``checkpoint`` file, and the options of
    rs_vlm_app.jobs.specs.ModelSpec (arch, model_config, quick_gelu, device, precision, batch_size,
    allow_download)."""
    return _compact({"name": name, "checkpoint": checkpoint, **options})


def localize_spec(scene, queries: list[str], out, model: dict | None = None, **options: Any) -> dict:
    """Heat map and hot spots of each query; options: grid, compat, bands, min_valid,
    hotspot_threshold, heatmap_pixel, cog, aoi (an area of interest, ``FILE[:LAYER]``)
    (rs_vlm_app/jobs/kinds/localize.py)."""
    return job_spec("localize", scene=scene, queries=list(queries), out=out, model=model, **options)


def caption_spec(scene, out, model: dict | None = None, **options: Any) -> dict:
    """A caption per tile in ``out`` (a .gpkg); options: clip_model, grid, bands, decoding, beams,
    max_len, aoi, ... (rs_vlm_app/jobs/kinds/caption.py)."""
    return job_spec("caption", scene=scene, out=out, model=model, **options)


def classify_spec(scene, classes: str | list[str], out, model: dict | None = None, **options: Any) -> dict:
    """Zero-shot classes of every tile into the folder ``out``. ``classes``: a bundled list name
    (:func:`bundled_class_lists`), a class file, or the class names themselves (a list)."""
    classes = list(classes) if isinstance(classes, list | tuple) else str(classes)
    return job_spec("classify", scene=scene, classes=classes, out=out, model=model, **options)


def search_spec(scenes: list, query: str, out, model: dict | None = None, **options: Any) -> dict:
    """The tiles of ``scenes`` best matching ``query``, in ``out`` (a .gpkg); options: top_k, grid,
    contact_sheet, ... (rs_vlm_app/jobs/kinds/search.py)."""
    return job_spec("search", scenes=[os.fspath(s) for s in scenes], query=query, out=out, model=model, **options)


def eval_selo_spec(out, model: dict | None = None, **options: Any) -> dict:
    """The SeLo evaluation, into the folder ``out``: on an AIR-SLT folder (option ``data``) or on a
    ``scene`` with vector ``truth``; options: query_field, compat, grid, save_probmaps."""
    return job_spec("eval-selo", out=out, model=model, **options)


def archive_localize_spec(archive, queries: list[str], out, model: dict | None = None, **options: Any) -> dict:
    """Heat maps and hot spots of ``queries`` over an indexed archive; options: scenes, where, aoi,
    hotspot_threshold, heatmap_pixel, cog."""
    return job_spec("archive-localize", archive=archive, queries=list(queries), out=out, model=model, **options)


def scene_batch_spec(job: str, template: dict, out, **options: Any) -> dict:
    """Run a ``job`` ("caption" or "classify") spec ``template`` (without its scene and out) on many
    scenes; options: scenes, scene_lists, asset, engine, workers, ray_address."""
    return job_spec("scene-batch", job=job, template=template, out=out, **options)


def archive_search_spec(archive, query: str, out, model: dict | None = None, **options: Any) -> dict:
    """The tiles of an indexed archive best matching ``query``, in ``out`` (a .gpkg); options: top_k,
    where, aoi, exact, contact_sheet, columns."""
    return job_spec("archive-search", archive=archive, query=query, out=out, model=model, **options)


def index_spec(archive, model: dict | None = None, **options: Any) -> dict:
    """Encode scenes into the archive folder ``archive``; options: scenes, scene_lists, asset, grid,
    bands, min_valid, engine, workers, ray_address, unit_tiles."""
    return job_spec("index", archive=archive, model=model, **options)


def dataset_export_spec(dataset, **options: Any) -> dict:
    """Export a built dataset's captions; options: format (csv, wds, jsonl), output, exclude_flagged."""
    return job_spec("dataset-export", dataset=dataset, **options)


def eval_caption_spec(pred, refs, out, **options: Any) -> dict:
    """Caption metrics of predictions ``pred`` against references ``refs``; option: spice."""
    return job_spec("eval-caption", pred=pred, refs=refs, out=out, **options)


def eval_retrieval_spec(data, out, model: dict | None = None, **options: Any) -> dict:
    """Image-text retrieval recall on a caption CSV."""
    return job_spec("eval-retrieval", data=data, out=out, model=model, **options)


def eval_zeroshot_spec(data, out, model: dict | None = None, **options: Any) -> dict:
    """Zero-shot accuracy on a folder of class folders; options: classes, templates."""
    return job_spec("eval-zeroshot", data=data, out=out, model=model, **options)


def dataset_build_spec(config, **options: Any) -> dict:
    """Build (or resume) a captioned dataset from a YAML build config; options: out, shard."""
    return job_spec("dataset-build", config=config, **options)


def fine_tune_spec(task: str, data, out, **options: Any) -> dict:
    """Fine-tune a CLIP (``task`` "clip") or CoCa ("coca") model; options: the fields of
    rs_vlm_app/jobs/kinds/fine_tune.py (recipe, arch, epochs, lr, ...); unset ones take the recipe's."""
    return job_spec("fine-tune", task=task, data=data, out=out, **options)


#: the builder of each kind (a kind without one here is built with :func:`job_spec`)
SPEC_BUILDERS: dict[str, Callable[..., dict]] = {
    "localize": localize_spec, "caption": caption_spec, "classify": classify_spec, "search": search_spec,
    "eval-selo": eval_selo_spec, "eval-caption": eval_caption_spec, "eval-retrieval": eval_retrieval_spec,
    "eval-zeroshot": eval_zeroshot_spec, "dataset-build": dataset_build_spec, "fine-tune": fine_tune_spec,
    "archive-search": archive_search_spec, "index": index_spec, "dataset-export": dataset_export_spec,
    "archive-localize": archive_localize_spec, "scene-batch": scene_batch_spec,
}


# -- bundled class lists ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClassListInfo:
    """A class list shipped in resources/classes/: ``key`` (what a spec's ``classes`` names),
    ``label`` (what a menu shows, e.g. "AID (30 scene classes)"), ``name`` ("AID"), ``count``."""

    key: str
    name: str
    label: str
    count: int


def bundled_class_lists(folder: str | os.PathLike) -> list[ClassListInfo]:
    """The class lists in ``folder`` (resources/classes/ of the app, or the plugin's copy): every
    ``<key>.txt``, named and counted from the file itself (its first comment line names the data set
    and says "N <what> classes"), sorted by key."""
    out = []
    for path in sorted(Path(folder).glob("*.txt")):
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError):
            continue
        comments = " ".join(line.lstrip("#").strip() for line in itertools.takewhile(
            lambda x: x.startswith("#"), lines))
        count = sum(1 for line in lines if line.strip() and not line.lstrip().startswith("#"))
        name = re.split(r"[,(:]| the ", comments, maxsplit=1)[0].strip() if comments else path.stem
        what = re.search(rf"\b{count} ([^.;:()]*?)\s*classes\b", comments)
        label = f"{name} ({count} {what.group(1) + ' ' if what and what.group(1) else ''}classes)"
        out.append(ClassListInfo(path.stem, name or path.stem, label, count))
    return out


# -- the layer plan -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlannedLayer:
    """One map layer to open from a result file.

    ``source``: "raster" or "vector"; ``sublayer``: the GeoPackage layer; ``style``: a style shipped
    in resources/styles/ (``<style>.qml``), "" = the file's own (a .qml beside it, or none);
    ``role``: what it shows (heatmap, hotspots, tiles, captions, classes, results); ``query``: the
    text query it answers, if any.
    """

    name: str
    path: str
    source: str
    role: str
    group: str
    sublayer: str = ""
    style: str = ""
    visible: bool = True
    query: str = ""

    def uri(self) -> str:
        """The path, with ``|layername=`` for a GeoPackage layer (QGIS's OGR URI)."""
        return f"{self.path}|layername={self.sublayer}" if self.sublayer else self.path


@dataclass
class LayerGroupPlan:
    """Layers shown together (top first) under one group name."""

    name: str
    layers: list[PlannedLayer] = field(default_factory=list)


def layer_plan(kind: str, files: list, title: str = "") -> list[LayerGroupPlan]:
    """The layers a result of ``kind`` shows, by the roles of its ``files`` (protocol.ResultFile).

    localize, archive-localize: a group per heat map (named by its query): hot spots, heat map, tile
    scores (hidden); hot spots without a heat map (an archive's merged ones) in a group of their own.
    caption: the captioned tiles. classify: the tiles with their classes, the class raster.
    search, archive-search: the best tiles. ``title`` names the group of the others (default: the kind). Kinds
    whose results are not map layers (evaluations, training, dataset builds) plan nothing.
    """
    title = title or kind
    if kind in ("localize", "archive-localize"):
        return _localize_plan(files)
    groups: list[LayerGroupPlan] = []
    if kind == "caption":
        tiles = _first(files, ("tiles", "vectors"), ".gpkg")
        if tiles is not None:
            groups.append(LayerGroupPlan(title, [PlannedLayer(
                "captions", tiles.path, "vector", "captions", title, _sublayer(tiles, "captions"), "captions")]))
    elif kind == "classify":
        layers = []
        tiles = _first(files, ("tiles", "vectors"), ".gpkg")
        if tiles is not None:
            layers.append(PlannedLayer("tile classes", tiles.path, "vector", "tiles", title,
                                       _sublayer(tiles, "tiles"), "tile_classes"))
        raster = _first(files, ("classes",))
        if raster is not None:  # its colour table and legend (classes.qml beside it) come with the file
            layers.append(PlannedLayer("classes", raster.path, "raster", "classes", title))
        if layers:
            groups.append(LayerGroupPlan(title, layers))
    elif kind in ("search", "archive-search"):
        tiles = _first(files, ("tiles", "vectors"), ".gpkg")
        if tiles is not None:
            groups.append(LayerGroupPlan(title, [PlannedLayer(
                "search results", tiles.path, "vector", "results", title, _sublayer(tiles, "results"),
                "search_results", query=tiles.title)]))
    return groups


def _localize_plan(files: list) -> list[LayerGroupPlan]:
    groups: list[LayerGroupPlan] = []
    for heat in [f for f in files if f.role == "heatmap"]:
        query = heat.title
        vectors = next((f for f in files if f.role == "vectors" and f.title == query), None)
        layers = []
        if vectors is not None:
            layers.append(PlannedLayer("hot spots", vectors.path, "vector", "hotspots", query, "hotspots",
                                       "hotspots", True, query))
        layers.append(PlannedLayer("heat map", heat.path, "raster", "heatmap", query, "", "heatmap", True, query))
        if vectors is not None:
            layers.append(PlannedLayer("tile scores", vectors.path, "vector", "tiles", query, "tiles",
                                       "tile_scores", False, query))
        groups.append(LayerGroupPlan(query, layers))
    queries = {g.name for g in groups}
    for vectors in [f for f in files if f.role == "vectors" and f.title not in queries]:
        groups.append(LayerGroupPlan(vectors.title, [PlannedLayer(  # e.g. an archive's merged hot spots
            "hot spots", vectors.path, "vector", "hotspots", vectors.title, _sublayer(vectors, "hotspots"), "hotspots")]))
    return groups


def _first(files: list, roles: tuple[str, ...], suffix: str = ""):
    for role in roles:
        for f in files:
            if f.role == role and (not suffix or f.path.lower().endswith(suffix)):
                return f
    return None


def _sublayer(f, default: str) -> str:
    return f.layers[0] if f.layers else default


def result_layer_plan(job: Job, title: str = "") -> list[LayerGroupPlan]:
    """:func:`layer_plan` of a finished job's result (none for a job without one)."""
    if job.result is None:
        return []
    return layer_plan(job.result.kind or job.kind, job.result.files, title or job.title)
