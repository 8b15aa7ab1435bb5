"""The plugin's rs-vlm worker: the configured interpreter, the persistent worker shared by the panel
and the Processing algorithms, one-shot runs and the "test connection" probe.

Processes, jobs, the cancel policy and the messages for a worker that died are the front ends'
shared client (rs_vlm_app/jobs/client.py, loaded through jobproto.py); this module only adds what
is the plugin's own: which Python runs the worker (rs-vlm's settings), its environment cleaned of
QGIS's variables (appenv.py), and the advice a QGIS user needs. Standard library only, so it runs in
Processing's worker threads and in QgsTask.run().
"""

from __future__ import annotations

import itertools
import os
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .appenv import worker_command, worker_environment
from .jobproto import client

WorkerError = client.WorkerError
WorkerProcess = client.WorkerProcess
JobHandle = client.JobHandle
#: a finished job: status "ok" / "error" / "cancelled", message, error_kind, result, logs, files(role)
JobOutcome = client.Job
describe_exit = client.describe_exit

#: what a QGIS user does about a wrong interpreter (appended to the client's messages)
SETUP_HINT = ("choose the Python of rs-vlm's environment in rs-vlm's settings, or run `rsvlm qgis install` "
              "in that environment")

OnEvent = client.OnEvent
IsCancelled = client.IsCancelled


def check_interpreter(python: str) -> None:
    """Cheap checks on the configured interpreter, before starting anything."""
    if not python:
        raise WorkerError(
            "no rs-vlm Python is configured: use Raster > rs-vlm > Set up rs-vlm..., run `rsvlm qgis install` in "
            "the environment where rs-vlm is installed, or choose its Python in rs-vlm's settings"
        )
    path = Path(python)
    if not path.exists():
        raise WorkerError(f"{python}: the configured rs-vlm Python does not exist; choose another in rs-vlm's settings")
    if path.is_dir() or not os.access(path, os.X_OK):
        raise WorkerError(f"{python}: the configured rs-vlm Python is not an executable program; "
                          "choose the python(.exe) of rs-vlm's environment in rs-vlm's settings")


def start_worker(python: str, pythonpath: str = "", serve: bool = True, qgis_prefix: str = "",
                 on_stderr: Callable[[str], None] | None = None) -> client.WorkerProcess:
    """A worker process of ``python``, in an environment without QGIS's variables."""
    check_interpreter(python)
    return client.WorkerProcess(worker_command(python, serve), serve=serve,
                                env=worker_environment(pythonpath=pythonpath, qgis_prefix=qgis_prefix),
                                cwd=tempfile.gettempdir(), hint=SETUP_HINT, on_stderr=on_stderr)


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
        self._process: client.WorkerProcess | None = None
        self._key: tuple[str, str] | None = None
        self._lock = threading.Lock()

    def process(self) -> client.WorkerProcess:
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
                current = start_worker(config.python, config.pythonpath, serve=True,
                                       qgis_prefix=self._qgis_prefix, on_stderr=self._on_stderr)
                self._process, self._key = current, key
            return current

    def submit(self, spec: dict) -> client.JobHandle:
        return self.process().submit(spec, job_id=f"qgis-{os.getpid()}-{next(_ids)}")

    def run(self, spec: dict, on_event: OnEvent | None = None, is_cancelled: IsCancelled | None = None) -> client.Job:
        """Run ``spec`` on the persistent worker and wait for it."""
        try:
            handle = self.submit(spec)
        except WorkerError as exc:
            return client.Job.ended("error", str(exc), client.WORKER_ERROR, spec)
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


_ids = itertools.count(1)


def run_once(config, spec: dict, on_event: OnEvent | None = None, is_cancelled: IsCancelled | None = None,
             qgis_prefix: str = "", on_stderr: Callable[[str], None] | None = None) -> client.Job:
    """Run ``spec`` in a fresh one-shot worker and wait for it."""
    try:
        check_interpreter(config.python)
    except WorkerError as exc:
        return client.Job.ended("error", str(exc), client.WORKER_ERROR, spec)
    return client.run_job(worker_command(config.python, False), spec, on_event, is_cancelled,
                          env=worker_environment(pythonpath=config.pythonpath, qgis_prefix=qgis_prefix),
                          cwd=tempfile.gettempdir(), hint=SETUP_HINT, on_stderr=on_stderr)


def probe(python: str, pythonpath: str = "", qgis_prefix: str = "", timeout: float = 180.0):
    """Start a persistent worker, return its hello event, and stop it (the "test connection")."""
    process = start_worker(python, pythonpath, serve=True, qgis_prefix=qgis_prefix)
    try:
        return process.wait_hello(timeout)
    finally:
        process.shutdown(timeout=5.0)
