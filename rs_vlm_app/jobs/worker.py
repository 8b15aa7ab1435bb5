"""The worker process: ``python -m rs_vlm_app worker [SPEC.json | -] | --serve``.

Writes protocol events, one JSON object per line, to stdout and NOTHING else: at start-up the
real stdout is set aside for events and file descriptor 1 is pointed at stderr, so stray prints
(ours, a library's, C code's) end up on stderr. Log records and warnings become ``log`` events.

Cancel: SIGTERM (or SIGINT), or a ``cancel`` line on stdin. The job stops at its next batch
boundary, keeps its checkpoints, and the worker exits with EXIT_CANCELLED (a second SIGTERM
stops at once, still through the job's cleanup). Serve mode answers ``run`` requests one after
another with the same loaded models; see docs/jobs.md.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import sys
import threading
import traceback
from pathlib import Path
from typing import BinaryIO

from rs_vlm_app.errors import EXIT_CANCELLED, EXIT_USER_ERROR, Cancelled, UserError
from rs_vlm_app.jobs import protocol
from rs_vlm_app.jobs.runner import run_job
from rs_vlm_app.jobs.specs import JobSpec, load_spec, spec_from_dict
from rs_vlm_app.models.cache import ModelCache


class EventWriter:
    """Writes events to the protected stdout, one line each, from any thread. If the reader is
    gone (broken pipe) it stops writing and calls ``on_broken`` (the job is then cancelled)."""

    def __init__(self, stream: BinaryIO, on_broken=None):
        self.stream = stream
        self.on_broken = on_broken
        self.broken = False
        self._lock = threading.Lock()

    def __call__(self, event: protocol.Event) -> None:
        line = protocol.encode_event(event).encode("utf-8")
        with self._lock:
            if self.broken:
                return
            try:
                self.stream.write(line)
                self.stream.flush()
            except (BrokenPipeError, ValueError, OSError):
                self.broken = True
        if self.broken and self.on_broken is not None:
            self.on_broken()


def protect_stdout() -> BinaryIO:
    """Set the real stdout aside for events; fd 1 and sys.stdout then go to stderr."""
    sys.stdout.flush()
    events_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return os.fdopen(events_fd, "wb", buffering=0)


class LineReader:
    """Lines from a file descriptor, read with os.read: a thread blocked here holds no Python I/O
    lock, so the process can always exit (a daemon thread in sys.stdin.readline() cannot)."""

    def __init__(self, fd: int = 0):
        self.fd = fd
        self._buffer = b""
        self._eof = False

    def readline(self) -> bytes:
        while b"\n" not in self._buffer and not self._eof:
            try:
                chunk = os.read(self.fd, 65536)
            except OSError:
                chunk = b""
            if not chunk:
                self._eof = True
            self._buffer += chunk
        if b"\n" in self._buffer:
            line, self._buffer = self._buffer.split(b"\n", 1)
            return line + b"\n"
        line, self._buffer = self._buffer, b""
        return line


class _Cancel:
    """The cancel flag of the running job, set by signals and stdin lines."""

    def __init__(self) -> None:
        self.current = threading.Event()
        self.signalled = 0

    def on_signal(self, signum, frame) -> None:
        self.signalled += 1
        self.current.set()
        if self.signalled >= 2:
            raise Cancelled()  # a second signal: stop now (atomic writes still clean up)


def run_once(spec_arg: str, job_id: str = "job") -> int:
    """Run one spec (a file, or ``-`` for JSON on stdin) and exit with the job's status."""
    stdin = LineReader(0)
    cancel = _Cancel()
    emit = EventWriter(protect_stdout(), on_broken=cancel.current.set)
    _install_signals(cancel)
    try:
        spec = _read_spec(spec_arg, stdin)
    except UserError as exc:
        emit(protocol.Error(message=str(exc), kind="user", job=job_id))
        return EXIT_USER_ERROR
    emit(_hello("job", None))
    threading.Thread(target=_watch_stdin_for_cancel, args=(stdin, cancel), daemon=True,
                     name="rsvlm-stdin").start()
    try:
        outcome = run_job(spec, emit, job_id=job_id, cancel=cancel.current)
    except Cancelled:  # a second signal arrived outside the job's own handling
        emit(protocol.Cancelled(job=job_id))
        return EXIT_CANCELLED
    return outcome.exit_code


def _read_spec(spec_arg: str, stdin: LineReader) -> JobSpec:
    if spec_arg != "-":
        return load_spec(Path(spec_arg))
    text = ""
    decoder = json.JSONDecoder()
    while True:
        line = stdin.readline()
        if not line:
            break
        text += line.decode("utf-8", "replace")
        if not text.strip():
            continue
        try:
            data, _end = decoder.raw_decode(text.strip())
        except ValueError:
            continue  # the object continues on the next line
        return spec_from_dict(data)
    if not text.strip():
        raise UserError("no job spec on stdin (expected one JSON object)")
    try:
        json.loads(text)
    except ValueError as exc:
        raise UserError(f"the job spec on stdin is not valid JSON ({exc})") from None
    raise UserError("the job spec on stdin is not a JSON object")


def _watch_stdin_for_cancel(stdin: LineReader, cancel: _Cancel) -> None:
    while True:
        line = stdin.readline()
        if not line:
            return  # EOF: the job goes on (a script may close stdin after the spec)
        try:
            request = protocol.decode_request(line)
        except ValueError as exc:
            print(f"rsvlm worker: ignored stdin line ({exc})", file=sys.stderr)
            continue
        if request is not None and request.request in ("cancel", "shutdown"):
            cancel.current.set()


# -- persistent mode --------------------------------------------------------------------------------

_EOF = object()


class _Server:
    """Serve mode: requests from stdin, one job at a time, models loaded once per process."""

    def __init__(self) -> None:
        self.cancel = _Cancel()
        self.emit = EventWriter(protect_stdout(), on_broken=self._client_gone)
        self.models = ModelCache()
        self.requests: queue.Queue = queue.Queue()
        self.current_id: str | None = None
        self.dropped: set[str] = set()
        self.stopping = False
        self.cancelled_any = False
        self._lock = threading.Lock()
        self._counter = 0

    def _client_gone(self) -> None:
        self.stopping = True
        self.cancel.current.set()

    def read_requests(self, stdin: LineReader) -> None:
        while True:
            line = stdin.readline()
            if not line:
                self.requests.put(_EOF)
                return
            try:
                request = protocol.decode_request(line)
            except ValueError as exc:
                self.emit(protocol.Error(message=str(exc), kind="protocol"))
                continue
            if request is None:
                continue
            if request.request == "cancel":
                self._cancel(request.id)
            elif request.request == "shutdown":
                self.requests.put(_EOF)
            else:
                with self._lock:
                    if request.id is None:
                        self._counter += 1
                        request.id = f"request-{self._counter}"
                self.requests.put(request)

    def _cancel(self, job_id: str | None) -> None:
        with self._lock:
            if job_id is None or job_id == self.current_id:
                self.cancel.current.set()
            else:
                self.dropped.add(job_id)  # still queued: answered "cancelled" when its turn comes

    def serve(self) -> int:
        _install_signals(self.cancel)
        self.emit(_hello("serve", self.models))
        threading.Thread(target=self.read_requests, args=(LineReader(0),), daemon=True,
                         name="rsvlm-stdin").start()
        while not self.stopping:
            try:
                request = self.requests.get(timeout=0.2)
            except queue.Empty:
                if self.cancel.signalled:
                    break
                continue
            except Cancelled:
                break
            if request is _EOF:
                break
            self._run(request)
            if self.cancel.signalled:
                break
        return EXIT_CANCELLED if self.cancel.signalled and self.cancelled_any else 0

    def _run(self, request: protocol.Request) -> None:
        job_id = request.id
        with self._lock:
            if job_id in self.dropped:
                self.dropped.discard(job_id)
                self.emit(protocol.Cancelled(job=job_id, message="cancelled before it started"))
                return
            self.current_id = job_id
            self.cancel.current = threading.Event()
        try:
            spec = spec_from_dict(request.spec)
        except UserError as exc:
            self.emit(protocol.Error(message=str(exc), kind="user", job=job_id))
            return
        try:
            outcome = run_job(spec, self.emit, job_id=job_id, cancel=self.cancel.current, models=self.models)
            self.cancelled_any |= outcome.status == "cancelled"
        except Cancelled:
            self.cancelled_any = True
            self.emit(protocol.Cancelled(job=job_id))
        except Exception:  # run_job reports job failures itself; this is a bug in the server
            traceback.print_exc()
            self.emit(protocol.Error(message="internal error in the worker (see its stderr)", job=job_id))
        finally:
            with self._lock:
                self.current_id = None


def serve() -> int:
    """Persistent mode: answer ``run`` requests from stdin until ``shutdown``, EOF or SIGTERM."""
    return _Server().serve()


# -- shared -------------------------------------------------------------------------------------------


def _install_signals(cancel: _Cancel) -> None:
    for name in ("SIGTERM", "SIGINT"):
        signum = getattr(signal, name, None)
        if signum is not None:
            signal.signal(signum, cancel.on_signal)


def _hello(mode: str, models: ModelCache | None) -> protocol.Event:
    from rs_vlm_app.jobs.runner import hello

    return hello(mode, models)
