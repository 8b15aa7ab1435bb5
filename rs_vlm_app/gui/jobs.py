"""Jobs seen from the desktop app: worker processes (QProcess) and the state of every job.

All model work runs in ``python -m rs_vlm_app worker``: a persistent one (``--serve``) answers the
interactive queries of a session with models loaded once; one-shot workers run spec files. The UI
only reads their events (rs_vlm_app.jobs.protocol) and the files they write, so it never freezes
and a crashing worker cannot take the window down.
"""

from __future__ import annotations

import itertools
import os
import sys
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PyQt6.QtCore import QObject, QProcess, QProcessEnvironment, QTimer, pyqtSignal

import rs_vlm_app
from rs_vlm_app.jobs import protocol

#: A cancelled job that has not stopped after this long gets SIGTERM, then SIGKILL.
CANCEL_GRACE_MS = 15000
KILL_GRACE_MS = 5000
#: Log lines kept per job.
MAX_LOG_LINES = 2000

QUEUED, RUNNING, CANCELLING, DONE, FAILED, CANCELLED = (
    "queued", "running", "cancelling", "done", "failed", "cancelled")
FINISHED_STATES = (DONE, FAILED, CANCELLED)


@dataclass
class Job:
    """One job as the UI knows it (built from the worker's events)."""

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
    result: protocol.Result | None = None
    error: str = ""
    error_kind: str = ""
    interactive: bool = False

    @property
    def finished_state(self) -> bool:
        return self.state in FINISHED_STATES

    @property
    def fraction(self) -> float | None:
        if self.state == DONE:
            return 1.0
        if not self.total:
            return None
        return max(0.0, min(1.0, self.done / self.total))

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


def worker_command(*args: str) -> tuple[str, list[str], QProcessEnvironment]:
    """How to start a worker: this Python, this copy of rs_vlm_app (also from a source checkout)."""
    env = QProcessEnvironment.systemEnvironment()
    root = str(Path(rs_vlm_app.__file__).resolve().parent.parent)
    python_path = env.value("PYTHONPATH", "")
    env.insert("PYTHONPATH", root + (os.pathsep + python_path if python_path else ""))
    env.insert("PYTHONUNBUFFERED", "1")
    env.insert("PYTHONIOENCODING", "utf-8")
    return sys.executable, ["-m", "rs_vlm_app", "worker", *args], env


class WorkerProcess(QObject):
    """One worker process: feeds its stdout to the protocol decoder, keeps its recent stderr."""

    received = pyqtSignal(object)         # protocol.Event
    exited = pyqtSignal(str)              # why it ended, in words ("" = a clean exit)

    def __init__(self, args: list[str], parent: QObject | None = None):
        super().__init__(parent)
        self.stream = protocol.EventStream()
        self.stderr_tail: deque[str] = deque(maxlen=20)
        self.hello: protocol.Hello | None = None
        self.process = QProcess(self)
        program, arguments, env = worker_command(*args)
        self.process.setProgram(program)
        self.process.setArguments(arguments)
        self.process.setProcessEnvironment(env)
        self.process.readyReadStandardOutput.connect(self._read_stdout)
        self.process.readyReadStandardError.connect(self._read_stderr)
        self.process.finished.connect(self._finished)
        self.process.errorOccurred.connect(self._error)
        self._ended = False

    def start(self) -> None:
        self.process.start()

    def running(self) -> bool:
        return self.process.state() != QProcess.ProcessState.NotRunning

    def pid(self) -> int:
        return int(self.process.processId())

    def send(self, line: str) -> None:
        if self.running():
            self.process.write(line.encode("utf-8"))

    def terminate(self) -> None:
        if self.running():
            self.process.terminate()

    def kill(self) -> None:
        if self.running():
            self.process.kill()

    def _read_stdout(self) -> None:
        for event in self.stream.feed(bytes(self.process.readAllStandardOutput().data())):
            if isinstance(event, protocol.Hello):
                self.hello = event
            self.received.emit(event)

    def _read_stderr(self) -> None:
        text = bytes(self.process.readAllStandardError().data()).decode("utf-8", "replace")
        for line in text.splitlines():
            if line.strip():
                self.stderr_tail.append(line.rstrip())

    def _finished(self, code: int, status: QProcess.ExitStatus) -> None:
        self._read_stdout()
        for event in self.stream.close():
            self.received.emit(event)
        self._read_stderr()
        if status == QProcess.ExitStatus.CrashExit:
            reason = "the worker process was killed or crashed"
        elif code not in (0, 2, 3):
            reason = f"the worker process exited with status {code}"
        else:
            reason = ""
        self._end(reason)

    def _error(self, error: QProcess.ProcessError) -> None:
        if error == QProcess.ProcessError.FailedToStart:
            self._end(f"could not start the worker ({self.process.program()}): {self.process.errorString()}")

    def _end(self, reason: str) -> None:
        if not self._ended:
            self._ended = True
            self.exited.emit(reason)


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
        self._server_jobs: list[str] = []
        self._oneshots: dict[str, WorkerProcess] = {}
        self._spec_files: dict[str, Path] = {}

    # -- submitting ------------------------------------------------------------------------------

    def submit(self, spec: dict[str, Any], title: str, interactive: bool = True) -> Job:
        """Run ``spec`` (a job spec as a dict). Interactive jobs go to the persistent worker, which
        keeps models (and the scene's tile embeddings) warm; others get a worker of their own."""
        job = Job(id=f"job-{next(self._ids)}", kind=str(spec.get("kind", "")), title=title, spec=spec,
                  interactive=interactive)
        self.jobs.append(job)
        self._by_id[job.id] = job
        self.job_added.emit(job)
        if interactive:
            self._ensure_server()
            assert self.server is not None
            self._server_jobs.append(job.id)
            self.server.send(protocol.run_request(job.id, spec))
        else:
            self._start_oneshot(job)
        return job

    def warm_up(self) -> None:
        """Start the persistent worker now (it imports torch while the user types a question)."""
        self._ensure_server()

    def _ensure_server(self) -> None:
        if self.server is not None and self.server.running():
            return
        server = WorkerProcess(["--serve"], self)
        server.received.connect(self._on_event)
        server.exited.connect(lambda reason, s=server: self._server_exited(s, reason))
        self.server = server
        self._server_jobs = []
        server.start()

    def _start_oneshot(self, job: Job) -> None:
        import json

        fd, name = tempfile.mkstemp(prefix="rsvlm-job-", suffix=".json")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(job.spec, f)
        self._spec_files[job.id] = Path(name)
        worker = WorkerProcess([name, "--id", job.id], self)
        worker.received.connect(self._on_event)
        worker.exited.connect(lambda reason, j=job: self._oneshot_exited(j, reason))
        self._oneshots[job.id] = worker
        worker.start()

    # -- cancelling ----------------------------------------------------------------------------------

    def cancel(self, job: Job) -> None:
        """Ask ``job`` to stop at its next batch; escalate to SIGTERM / SIGKILL if it does not."""
        if job.finished_state or job.state == CANCELLING:
            return
        was_queued = job.state == QUEUED
        job.state = CANCELLING
        self.job_changed.emit(job)
        if job.id in self._oneshots:
            worker = self._oneshots[job.id]
            worker.terminate()
            QTimer.singleShot(KILL_GRACE_MS, worker.kill)
            return
        if self.server is not None:
            self.server.send(protocol.cancel_request(job.id))
            if not was_queued:
                QTimer.singleShot(CANCEL_GRACE_MS, lambda j=job, s=self.server: self._escalate(j, s))

    def _escalate(self, job: Job, server: WorkerProcess) -> None:
        if job.state == CANCELLING and server.running():
            server.terminate()
            QTimer.singleShot(KILL_GRACE_MS, server.kill)

    # -- events ---------------------------------------------------------------------------------------

    def _on_event(self, event: protocol.Event) -> None:
        if isinstance(event, protocol.Hello):
            if self.sender() is self.server:
                self.worker_ready.emit(event)
            return
        job = self._by_id.get(event.job or "")
        if job is None:
            if isinstance(event, protocol.Error):
                print(f"rsvlm gui: worker error outside any job: {event.message}", file=sys.stderr)
            return
        if isinstance(event, protocol.Started):
            job.state = CANCELLING if job.state == CANCELLING else RUNNING
            job.started = time.time()
            job.title = job.title or event.title
        elif isinstance(event, protocol.Progress):
            job.stage, job.done, job.total, job.rate, job.eta = (
                event.stage, event.done, event.total, event.rate, event.eta)
            if job.state == QUEUED:
                job.state = RUNNING
        elif isinstance(event, protocol.Log):
            if event.level != "debug" or "Traceback" in event.message:
                prefix = "" if event.level == "info" else f"{event.level}: "
                job.log.append(prefix + event.message)
                del job.log[:-MAX_LOG_LINES]
        elif isinstance(event, protocol.Result):
            job.result = event
            self._finish(job, DONE)
            return
        elif isinstance(event, protocol.Error):
            job.error, job.error_kind = event.message, event.kind
            self._finish(job, FAILED)
            return
        elif isinstance(event, protocol.Cancelled):
            self._finish(job, CANCELLED)
            return
        self.job_changed.emit(job)

    def _finish(self, job: Job, state: str) -> None:
        if job.finished_state:
            return
        job.state = state
        job.finished = time.time()
        if job.id in self._server_jobs:
            self._server_jobs.remove(job.id)
        spec_file = self._spec_files.pop(job.id, None)
        if spec_file is not None:
            spec_file.unlink(missing_ok=True)
        if job.error:
            job.log.append(f"error: {job.error}")
        self.job_changed.emit(job)
        self.job_finished.emit(job)

    def _server_exited(self, server: WorkerProcess, reason: str) -> None:
        if server is not self.server:
            return
        orphans = [self._by_id[i] for i in self._server_jobs]
        self.server = None
        self._server_jobs = []
        for job in orphans:
            self._orphaned(job, server, reason)

    def _oneshot_exited(self, job: Job, reason: str) -> None:
        worker = self._oneshots.pop(job.id, None)
        if worker is not None and not job.finished_state:
            self._orphaned(job, worker, reason)

    def _orphaned(self, job: Job, worker: WorkerProcess, reason: str) -> None:
        """The worker is gone and ``job`` never got its final event."""
        if job.state == CANCELLING:
            self._finish(job, CANCELLED)
            return
        last = next((line for line in reversed(worker.stderr_tail) if line.strip()), "")
        job.error = (f"{reason or 'the worker process ended'} before the job finished; "
                     "finished work is kept, run it again to resume")
        if last:
            job.error += f" (its last words: {last[:200]})"
        job.error_kind = "worker"
        job.log.extend(f"worker stderr: {line}" for line in worker.stderr_tail)
        self._finish(job, FAILED)

    # -- lifetime -----------------------------------------------------------------------------------------

    def job(self, job_id: str) -> Job | None:
        return self._by_id.get(job_id)

    def running_jobs(self) -> list[Job]:
        return [j for j in self.jobs if not j.finished_state]

    def shutdown(self, wait_ms: int = 3000) -> None:
        """Stop every worker (cancelling running jobs: their finished work is kept)."""
        workers = list(self._oneshots.values())
        if self.server is not None:
            self.server.send(protocol.encode_request(protocol.Request("shutdown")))
            workers.append(self.server)
        for worker in workers:
            worker.terminate()
        deadline = time.monotonic() + wait_ms / 1000
        for worker in workers:
            left = max(0, int((deadline - time.monotonic()) * 1000))
            if worker.running() and not worker.process.waitForFinished(left):
                worker.kill()
                worker.process.waitForFinished(1000)
        for path in self._spec_files.values():
            path.unlink(missing_ok=True)
        self._spec_files.clear()
