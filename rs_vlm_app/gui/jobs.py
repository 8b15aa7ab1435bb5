"""Jobs seen from the desktop app: the shared client (rs_vlm_app/jobs/client.py) driven by QProcess.

All model work runs in ``python -m rs_vlm_app worker``: a persistent one (``--serve``) answers the
interactive queries of a session with models loaded once; one-shot workers run batch specs. What a
job's state is, how a cancel escalates and what a dead worker's job says are the client's
(:class:`~rs_vlm_app.jobs.client.WorkerSession`), the same as in the QGIS plugin; this module only
feeds QProcess's output to it and turns its updates into Qt signals, so the UI never freezes and a
crashing worker cannot take the window down.
"""

from __future__ import annotations

import itertools
import os
import sys
import time
from pathlib import Path
from typing import Any

from PyQt6.QtCore import QObject, QProcess, QProcessEnvironment, QTimer, pyqtSignal

import rs_vlm_app
from rs_vlm_app.jobs import client, protocol
from rs_vlm_app.jobs.client import (  # noqa: F401 - the GUI's names for the client's states
    CANCELLED,
    CANCELLING,
    DONE,
    FAILED,
    FINISHED_STATES,
    QUEUED,
    RUNNING,
    Job,
)

#: the client's cancel policy, in the milliseconds Qt counts in
CANCEL_GRACE_MS = int(client.CANCEL_GRACE_S * 1000)
KILL_GRACE_MS = int(client.KILL_GRACE_S * 1000)
#: how often a worker with a cancelled job asks the client whether to escalate
TICK_MS = 250


def worker_command(*args: str) -> tuple[str, list[str], QProcessEnvironment]:
    """How to start a worker: this Python, this copy of rs_vlm_app (also from a source checkout)."""
    env = QProcessEnvironment.systemEnvironment()
    root = str(Path(rs_vlm_app.__file__).resolve().parent.parent)
    python_path = env.value("PYTHONPATH", "")
    env.insert("PYTHONPATH", root + (os.pathsep + python_path if python_path else ""))
    env.insert("PYTHONUNBUFFERED", "1")
    env.insert("PYTHONIOENCODING", "utf-8")
    return sys.executable, list(args), env


class WorkerProcess(QObject):
    """One worker process: QProcess's output fed to a client.WorkerSession, its updates emitted."""

    updated = pyqtSignal(object)          # client.Update
    ended = pyqtSignal(object)            # list[Job]: the jobs the worker's end finished

    def __init__(self, serve: bool, parent: QObject | None = None):
        super().__init__(parent)
        program, arguments, env = worker_command(*client.worker_args(serve))
        self.session = client.WorkerSession(serve, program=program)
        self.process = QProcess(self)
        self.process.setProgram(program)
        self.process.setArguments(arguments)
        self.process.setProcessEnvironment(env)
        self.process.readyReadStandardOutput.connect(self._read_stdout)
        self.process.readyReadStandardError.connect(self._read_stderr)
        self.process.finished.connect(self._finished)
        self.process.errorOccurred.connect(self._error)
        self._ticker = QTimer(self)
        self._ticker.setInterval(TICK_MS)
        self._ticker.timeout.connect(self._tick)

    @property
    def hello(self) -> protocol.Hello | None:
        return self.session.hello

    def start(self) -> None:
        self.process.start()

    def running(self) -> bool:
        return self.process.state() != QProcess.ProcessState.NotRunning

    def pid(self) -> int:
        return int(self.process.processId())

    def submit(self, job: Job) -> None:
        self._send(self.session.submit(job))

    def cancel(self, job: Job) -> None:
        line = self.session.cancel(job)
        if line:
            self._send(line)
            self._ticker.start()

    def _send(self, line: str) -> None:
        if self.running():
            self.process.write(line.encode("utf-8"))

    def terminate(self) -> None:
        if self.running():
            self.process.terminate()

    def kill(self) -> None:
        if self.running():
            self.process.kill()

    def shutdown(self, wait_ms: int) -> None:
        """Ask it to end, SIGTERM at once (the app is closing: running jobs are cancelled, their
        finished work kept), SIGKILL if it is still there after ``wait_ms``."""
        self._send(self.session.shutdown_line())
        self.terminate()
        if self.running() and not self.process.waitForFinished(wait_ms):
            self.kill()
            self.process.waitForFinished(1000)

    def _tick(self) -> None:
        action = self.session.escalation()
        if action == "terminate":
            self.terminate()
        elif action == "kill":
            self.kill()
        if not self.session.needs_ticks:
            self._ticker.stop()

    def _read_stdout(self) -> None:
        for update in self.session.feed(bytes(self.process.readAllStandardOutput().data())):
            self.updated.emit(update)

    def _read_stderr(self) -> None:
        self.session.feed_stderr(bytes(self.process.readAllStandardError().data()))

    def _finished(self, code: int, status: QProcess.ExitStatus) -> None:
        self._read_stdout()
        for update in self.session.close_stdout():
            self.updated.emit(update)
        self._read_stderr()
        if status == QProcess.ExitStatus.CrashExit:  # on POSIX, Qt's exit code is then the signal
            returncode = -code if code > 0 and os.name == "posix" else None
        else:
            returncode = code
        self._end(returncode)

    def _error(self, error: QProcess.ProcessError) -> None:
        if error == QProcess.ProcessError.FailedToStart:
            self._end(None, client.cannot_start(self.process.program(), self.process.errorString()))

    def _end(self, returncode: int | None, start_error: str = "") -> None:
        self._ticker.stop()
        if not self.session.ended:
            self.ended.emit(self.session.process_ended(returncode, start_error))


class JobManager(QObject):
    """Every job of the session, running or finished, and the workers that run them."""

    job_added = pyqtSignal(object)     # Job
    job_changed = pyqtSignal(object)   # Job
    job_finished = pyqtSignal(object)  # Job (done, failed or cancelled)
    worker_ready = pyqtSignal(object)  # protocol.Hello of the persistent worker

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self.jobs: list[Job] = []
        self._by_id: dict[str, Job] = {}
        self._ids = itertools.count(1)
        self.server: WorkerProcess | None = None
        self._oneshots: dict[str, WorkerProcess] = {}

    # -- submitting ------------------------------------------------------------------------------

    def submit(self, spec: dict[str, Any], title: str, interactive: bool = True) -> Job:
        """Run ``spec`` (a job spec as a dict, see rs_vlm_app.jobs.client's builders). Interactive
        jobs go to the persistent worker, which keeps models (and the scene's tile embeddings) warm;
        others get a worker of their own."""
        job = Job(id=f"job-{next(self._ids)}", kind=str(spec.get("kind", "")), title=title, spec=spec,
                  interactive=interactive)
        self.jobs.append(job)
        self._by_id[job.id] = job
        self.job_added.emit(job)
        if interactive:
            self._ensure_server()
            assert self.server is not None
            self.server.submit(job)
        else:
            worker = self._worker(serve=False)
            self._oneshots[job.id] = worker
            worker.start()
            worker.submit(job)
        return job

    def warm_up(self) -> None:
        """Start the persistent worker now (it imports torch while the user types a question)."""
        self._ensure_server()

    def _ensure_server(self) -> None:
        if self.server is not None and self.server.running():
            return
        self.server = self._worker(serve=True)
        self.server.start()

    def _worker(self, serve: bool) -> WorkerProcess:
        worker = WorkerProcess(serve, self)
        worker.updated.connect(lambda update, w=worker: self._on_update(w, update))
        worker.ended.connect(lambda jobs, w=worker: self._worker_ended(w, jobs))
        return worker

    # -- cancelling ----------------------------------------------------------------------------------

    def cancel(self, job: Job) -> None:
        """Ask ``job`` to stop at its next batch; the client's policy escalates to SIGTERM / SIGKILL."""
        worker = self._oneshots.get(job.id) or self.server
        if worker is None or job.finished_state or job.state == CANCELLING:
            return
        worker.cancel(job)
        self.job_changed.emit(job)

    # -- updates ---------------------------------------------------------------------------------------

    def _on_update(self, worker: WorkerProcess, update: client.Update) -> None:
        if update.job is None:
            if isinstance(update.event, protocol.Hello):
                if worker is self.server:
                    self.worker_ready.emit(update.event)
            elif isinstance(update.event, protocol.Error):
                print(f"rsvlm gui: worker error outside any job: {update.event.message}", file=sys.stderr)
            return
        self.job_changed.emit(update.job)
        if update.finished:
            self._finished(update.job)

    def _worker_ended(self, worker: WorkerProcess, jobs: list[Job]) -> None:
        if worker is self.server:
            self.server = None
        for job_id in [i for i, w in self._oneshots.items() if w is worker]:
            del self._oneshots[job_id]
        for job in jobs:
            self.job_changed.emit(job)
            self._finished(job)

    def _finished(self, job: Job) -> None:
        self._oneshots.pop(job.id, None)
        self.job_finished.emit(job)

    # -- lifetime -----------------------------------------------------------------------------------------

    def job(self, job_id: str) -> Job | None:
        return self._by_id.get(job_id)

    def shutdown(self, wait_ms: int = 3000) -> None:
        """Stop every worker (cancelling running jobs: their finished work is kept)."""
        deadline = time.monotonic() + wait_ms / 1000
        workers = list(self._oneshots.values()) + ([self.server] if self.server is not None else [])
        for worker in workers:
            worker.shutdown(max(0, int((deadline - time.monotonic()) * 1000)))
