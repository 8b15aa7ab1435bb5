"""Drive a real worker process from tests: start it, read its events, wait for one."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

from rs_vlm_app.jobs import protocol
from tests.conftest import REPO

TIMEOUT_S = 180  # a cold start imports torch and open_clip on a busy 2-core machine


def worker_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["HF_HUB_OFFLINE"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def tiny_model(tiny_clip) -> dict:
    return {"model_config": str(tiny_clip["config"]), "checkpoint": str(tiny_clip["checkpoint"]), "device": "cpu"}


class WorkerProc:
    """A ``python -m rs_vlm_app ARGS`` process whose stdout lines are collected as raw text and events."""

    def __init__(self, *args: str, cwd: Path | None = None):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "rs_vlm_app", *args], cwd=cwd or REPO, env=worker_env(),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        self.lines: list[str] = []
        self.events: list[protocol.Event] = []
        self._queue: queue.Queue = queue.Queue()
        self.stderr = ""
        self._threads = [threading.Thread(target=self._read_stdout, daemon=True),
                         threading.Thread(target=self._read_stderr, daemon=True)]
        for thread in self._threads:
            thread.start()

    def _read_stdout(self) -> None:
        for raw in self.proc.stdout:
            line = raw.decode("utf-8")
            self.lines.append(line)
            event = protocol.decode_event(line)
            if event is not None:
                self.events.append(event)
                self._queue.put(event)
        self._queue.put(None)

    def _read_stderr(self) -> None:
        self.stderr = self.proc.stderr.read().decode("utf-8", "replace")

    def send(self, line: str) -> None:
        self.proc.stdin.write(line.encode("utf-8") if line.endswith("\n") else (line + "\n").encode("utf-8"))
        self.proc.stdin.flush()

    def close_stdin(self) -> None:
        self.proc.stdin.close()

    def wait_for(self, predicate, timeout: float = TIMEOUT_S) -> protocol.Event:
        """The next event (from now on) for which ``predicate(event)`` is true."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no such event within {timeout}s; events: {self.events[-5:]}; "
                                     f"stderr: {self.stderr[-2000:]}")
            try:
                event = self._queue.get(timeout=left)
            except queue.Empty:
                continue
            if event is None:
                self.proc.wait(timeout=30)
                raise AssertionError(f"worker exited ({self.proc.returncode}) first; events: {self.events[-5:]}; "
                                     f"stderr: {self.stderr[-3000:]}")
            if predicate(event):
                return event

    def final(self, job: str | None = None, timeout: float = TIMEOUT_S) -> protocol.Event:
        return self.wait_for(lambda e: e.type in protocol.FINAL_EVENTS and (job is None or e.job == job), timeout)

    def wait(self, timeout: float = TIMEOUT_S) -> int:
        code = self.proc.wait(timeout=timeout)
        for thread in self._threads:
            thread.join(timeout=30)  # every line read
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)


def write_spec(path: Path, spec: dict) -> Path:
    path.write_text(json.dumps(spec, indent=1))
    return path
