"""Driving the rs-vlm worker process: one-shot jobs and the persistent worker, from any thread.

All model work happens in ``python -m rs_vlm_app worker`` running in the app's own environment
(never in QGIS's process). This module starts it with an environment cleaned of QGIS's variables,
writes job specs to its stdin, turns its JSON-lines stdout into protocol events, and turns every
way it can fail (no interpreter, a wrong one, a crash, a kill) into one line a person can act on.
Standard library only, so it runs in Processing's worker threads and in QgsTask.run().
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .appenv import worker_command, worker_environment
from .jobproto import FINAL_EVENTS, protocol

#: seconds between a cancel request and SIGTERM, and between SIGTERM and SIGKILL
CANCEL_GRACE_S = 20.0
KILL_GRACE_S = 10.0
#: stderr lines kept to explain a worker that died
STDERR_TAIL = 60

OnEvent = Callable[[Any], None]
IsCancelled = Callable[[], bool]


class WorkerError(Exception):
    """The worker cannot be used (not configured, wrong interpreter, died). ``str()`` is one line."""


@dataclass
class JobOutcome:
    """How a job ended. ``status``: "ok", "error" or "cancelled"; ``result``: the protocol Result."""

    status: str
    message: str = ""
    error_kind: str = ""
    result: Any = None
    logs: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def files(self, role: str | None = None) -> list:
        """The result's files (protocol ResultFile), all or those of one role."""
        if self.result is None:
            return []
        return [f for f in self.result.files if role is None or f.role == role]


@dataclass
class _Exit:
    """Put in a job's queue when the worker process ended (EOF on its stdout)."""

    returncode: int | None
    stderr: list[str]


def check_interpreter(python: str) -> None:
    """Cheap checks on the configured interpreter, before starting anything."""
    if not python:
        raise WorkerError(
            "no rs-vlm Python is configured: run `rsvlm qgis install` in the environment where rs-vlm is "
            "installed, or choose its Python in rs-vlm's settings"
        )
    path = Path(python)
    if not path.exists():
        raise WorkerError(f"{python}: the configured rs-vlm Python does not exist; choose another in rs-vlm's settings")
    if path.is_dir() or not os.access(path, os.X_OK):
        raise WorkerError(f"{python}: the configured rs-vlm Python is not an executable program; "
                          "choose the python(.exe) of rs-vlm's environment in rs-vlm's settings")


def describe_exit(python: str, returncode: int | None, stderr: list[str], started: bool) -> str:
    """One line saying why a worker ended without finishing its job."""
    text = "\n".join(stderr)
    if "No module named rs_vlm_app" in text or "No module named 'rs_vlm_app'" in text:
        return (f"{python} cannot run rs-vlm (No module named 'rs_vlm_app'): choose the Python of the environment "
                "where rs-vlm is installed in rs-vlm's settings, or run `rsvlm qgis install` there")
    if returncode is None:
        how = "stopped"
    elif returncode < 0:
        try:
            how = f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            how = f"was killed by signal {-returncode}"
    else:
        how = f"exited with status {returncode}"
    last = _last_meaningful(stderr)
    when = "during the job" if started else "before it started"
    line = f"the rs-vlm worker ({python}) {how} {when}"
    return f"{line}: {last}" if last else f"{line} (it wrote nothing to stderr)"


def _last_meaningful(lines: list[str]) -> str:
    for line in reversed(lines):
        text = " ".join(line.split())
        if text and not text.startswith(("File ", "Traceback", "^", "~")):
            return text[:300]
    return ""


class WorkerProcess:
    """One worker process and the threads reading its stdout (events) and stderr (kept tail).

    Events are routed to the queue of the job they name (``job`` field); in one-shot mode every
    event goes to the single job. When stdout closes, every job still waiting gets an ``_Exit``.
    """

    _ids = itertools.count(1)

    def __init__(self, python: str, pythonpath: str = "", serve: bool = True, qgis_prefix: str = "",
                 on_stderr: Callable[[str], None] | None = None):
        check_interpreter(python)
        self.python = python
        self.serve = serve
        self.hello = None
        self.hello_received = threading.Event()
        self.protocol_error = ""
        self.stderr: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL)
        self._on_stderr = on_stderr
        self._queues: dict[str, queue.Queue] = {}
        self._single: queue.Queue | None = None
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._exited = threading.Event()
        self.returncode: int | None = None
        kwargs: dict[str, Any] = {}
        if sys.platform.startswith("win"):
            kwargs["creationflags"] = getattr(subprocess, "CREATE_NO_WINDOW", 0)
        else:
            kwargs["start_new_session"] = True  # a Ctrl-C in QGIS's terminal is not meant for the worker
        try:
            self.popen = subprocess.Popen(
                worker_command(python, serve), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, env=worker_environment(pythonpath=pythonpath, qgis_prefix=qgis_prefix),
                cwd=tempfile.gettempdir(), **kwargs,
            )
        except OSError as exc:
            raise WorkerError(f"{python}: cannot start the rs-vlm worker ({exc.strerror or exc})") from None
        self.pid = self.popen.pid
        threading.Thread(target=self._read_stdout, daemon=True, name=f"rsvlm-events-{self.pid}").start()
        threading.Thread(target=self._read_stderr, daemon=True, name=f"rsvlm-stderr-{self.pid}").start()

    # -- jobs ---------------------------------------------------------------------------------------

    def submit(self, spec: dict, job_id: str | None = None) -> JobHandle:
        """Send ``spec`` (a job spec object) and return the handle to wait on."""
        job_id = job_id or f"qgis-{os.getpid()}-{next(self._ids)}"
        handle = JobHandle(self, job_id)
        with self._lock:
            if self._exited.is_set():
                raise WorkerError(describe_exit(self.python, self.returncode, list(self.stderr), True))
            if self.protocol_error:
                raise WorkerError(self.protocol_error)
            if self.serve:
                self._queues[job_id] = handle.queue
            else:
                if self._single is not None:
                    raise RuntimeError("a one-shot worker runs one job")
                self._single = handle.queue
        line = protocol.run_request(job_id, spec) if self.serve else _spec_line(spec)
        self.write(line)
        return handle

    def cancel(self, job_id: str | None) -> None:
        self.write(protocol.cancel_request(job_id) if self.serve else "cancel\n")

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
        """Ask the worker to finish (a persistent one: after its current job), then make sure it did."""
        if self.popen.poll() is None:
            self.write(protocol.encode_request(protocol.Request("shutdown")) if self.serve else "cancel\n")
            with contextlib.suppress(OSError):
                self.popen.stdin.close()
            for action in (None, self.terminate, self.kill):
                if action is not None:
                    action()
                try:
                    self.popen.wait(timeout)
                    break
                except subprocess.TimeoutExpired:
                    continue
        self._exited.wait(timeout)

    @property
    def alive(self) -> bool:
        return not self._exited.is_set() and self.popen.poll() is None

    def wait_hello(self, timeout: float) -> Any:
        """The worker's hello event; WorkerError if it ended (or said nothing) first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.hello_received.wait(0.1):
                if self.protocol_error:
                    raise WorkerError(self.protocol_error)
                return self.hello
            if self._exited.is_set():
                raise WorkerError(describe_exit(self.python, self.returncode, list(self.stderr), False))
        raise WorkerError(f"the rs-vlm worker ({self.python}) did not answer within {timeout:.0f} s")

    # -- reader threads -----------------------------------------------------------------------------

    def _read_stdout(self) -> None:
        stream = protocol.EventStream()
        pipe = self.popen.stdout
        try:
            for line in iter(pipe.readline, b""):
                for event in stream.feed(line):
                    self._dispatch(event)
            for event in stream.close():
                self._dispatch(event)
        except (OSError, ValueError):
            pass
        try:
            self.returncode = self.popen.wait(KILL_GRACE_S)
        except subprocess.TimeoutExpired:
            self.kill()
            self.returncode = self.popen.wait()
        time.sleep(0.05)  # let the stderr reader take the last lines
        with self._lock:
            self._exited.set()
            waiting = list(self._queues.values()) + ([self._single] if self._single is not None else [])
            self._queues.clear()
        for q in waiting:
            q.put(_Exit(self.returncode, list(self.stderr)))

    def _read_stderr(self) -> None:
        try:
            for raw in iter(self.popen.stderr.readline, b""):
                line = raw.decode("utf-8", "replace").rstrip()
                self.stderr.append(line)
                if self._on_stderr is not None and line.strip():
                    self._on_stderr(line)
        except (OSError, ValueError):
            pass

    def _dispatch(self, event) -> None:
        if event.type == "hello":
            self.hello = event
            if event.protocol != protocol.PROTOCOL_VERSION:
                self.protocol_error = (
                    f"the rs-vlm worker ({self.python}, rs-vlm {event.app_version}) speaks protocol "
                    f"{event.protocol}, this plugin {protocol.PROTOCOL_VERSION}: reinstall the plugin from that "
                    "environment with `rsvlm qgis install`"
                )
            self.hello_received.set()
            return
        with self._lock:
            if not self.serve:
                target = self._single
            else:
                target = self._queues.get(event.job) if event.job is not None else None
                if target is not None and event.type in FINAL_EVENTS:
                    self._queues.pop(event.job, None)
        if target is not None:
            target.put(event)
        elif event.type == "error" and self._on_stderr is not None:
            self._on_stderr(f"worker: {event.message}")


class JobHandle:
    """One submitted job: wait for it (forwarding its events), or cancel it."""

    def __init__(self, process: WorkerProcess, job_id: str):
        self.process = process
        self.id = job_id
        self.queue: queue.Queue = queue.Queue()
        self.cancel_requested = False

    def cancel(self) -> None:
        if not self.cancel_requested:
            self.cancel_requested = True
            self.process.cancel(self.id)

    def wait(self, on_event: OnEvent | None = None, is_cancelled: IsCancelled | None = None,
             timeout: float | None = None) -> JobOutcome:
        """Block until the job ends; ``on_event`` gets every event on the calling thread.

        ``is_cancelled`` is polled: once true, the job is asked to stop (a cancel request), then the
        worker gets SIGTERM after CANCEL_GRACE_S and SIGKILL after KILL_GRACE_S more.
        """
        logs: list[str] = []
        started = time.monotonic()
        cancel_at = terminate_at = None
        while True:
            now = time.monotonic()
            if is_cancelled is not None and not self.cancel_requested and is_cancelled():
                self.cancel()
            if self.cancel_requested and cancel_at is None:
                cancel_at = now
            if cancel_at is not None and terminate_at is None and now - cancel_at > CANCEL_GRACE_S:
                terminate_at = now
                self.process.terminate()
            if terminate_at is not None and now - terminate_at > KILL_GRACE_S:
                self.process.kill()
            if timeout is not None and now - started > timeout and not self.cancel_requested:
                self.cancel()
            try:
                item = self.queue.get(timeout=0.1)
            except queue.Empty:
                continue
            if isinstance(item, _Exit):
                if self.cancel_requested:
                    return JobOutcome("cancelled", "cancelled; the worker was stopped", logs=logs)
                message = self.process.protocol_error or describe_exit(
                    self.process.python, item.returncode, item.stderr, self.process.hello is not None)
                return JobOutcome("error", message, "worker-died", logs=logs)
            if item.type == "log":
                logs.append(item.message)
            if on_event is not None:
                on_event(item)
            if item.type == "result":
                return JobOutcome("ok", result=item, logs=logs)
            if item.type == "error":
                return JobOutcome("error", item.message, item.kind, logs=logs)
            if item.type == "cancelled":
                return JobOutcome("cancelled", item.message, logs=logs)


def _spec_line(spec: dict) -> str:
    import json

    return json.dumps(spec, ensure_ascii=False) + "\n"


class WorkerService:
    """The persistent worker (``worker --serve``) shared by the panel and the Processing algorithms.

    Started on first use; models stay loaded between jobs; restarted when it died or when the
    interpreter setting changed. Thread-safe.
    """

    def __init__(self, config_provider: Callable[[], Any], qgis_prefix: str = "",
                 on_stderr: Callable[[str], None] | None = None):
        self._config_provider = config_provider
        self._qgis_prefix = qgis_prefix
        self._on_stderr = on_stderr
        self._process: WorkerProcess | None = None
        self._key: tuple[str, str] | None = None
        self._lock = threading.Lock()

    def process(self) -> WorkerProcess:
        """The running worker, started (or restarted) as needed."""
        config = self._config_provider()
        key = (config.python, config.pythonpath)
        with self._lock:
            current = self._process
            if current is not None and (not current.alive or key != self._key):
                self._process = None
                threading.Thread(target=current.shutdown, daemon=True).start()
                current = None
            if current is None:
                current = WorkerProcess(config.python, config.pythonpath, serve=True,
                                        qgis_prefix=self._qgis_prefix, on_stderr=self._on_stderr)
                self._process, self._key = current, key
            return current

    def submit(self, spec: dict) -> JobHandle:
        return self.process().submit(spec)

    def run(self, spec: dict, on_event: OnEvent | None = None, is_cancelled: IsCancelled | None = None) -> JobOutcome:
        """Run ``spec`` on the persistent worker and wait for it."""
        try:
            handle = self.submit(spec)
        except WorkerError as exc:
            return JobOutcome("error", str(exc), "worker-unavailable")
        return handle.wait(on_event, is_cancelled)

    @property
    def hello(self):
        process = self._process
        return process.hello if process is not None and process.alive else None

    @property
    def running(self) -> bool:
        process = self._process
        return process is not None and process.alive

    def stop(self, timeout: float = 5.0) -> None:
        with self._lock:
            process, self._process = self._process, None
        if process is not None:
            process.shutdown(timeout)


def run_once(config, spec: dict, on_event: OnEvent | None = None, is_cancelled: IsCancelled | None = None,
             qgis_prefix: str = "", on_stderr: Callable[[str], None] | None = None) -> JobOutcome:
    """Run ``spec`` in a fresh one-shot worker (``worker -``) and wait for it."""
    try:
        process = WorkerProcess(config.python, config.pythonpath, serve=False, qgis_prefix=qgis_prefix,
                                on_stderr=on_stderr)
        handle = process.submit(spec)
    except WorkerError as exc:
        return JobOutcome("error", str(exc), "worker-unavailable")
    try:
        return handle.wait(on_event, is_cancelled)
    finally:
        process.shutdown(timeout=KILL_GRACE_S)


def probe(python: str, pythonpath: str = "", qgis_prefix: str = "", timeout: float = 180.0):
    """Start a persistent worker, return its hello event, and stop it (the "test connection")."""
    process = WorkerProcess(python, pythonpath, serve=True, qgis_prefix=qgis_prefix)
    try:
        return process.wait_hello(timeout)
    finally:
        process.shutdown(timeout=5.0)
