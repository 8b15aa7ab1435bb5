"""run_job in-process: how every way a job can end becomes events (no model needed)."""

from __future__ import annotations

import logging
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from rs_vlm_app.errors import EXIT_CANCELLED, EXIT_USER_ERROR, UserError
from rs_vlm_app.jobs import protocol
from rs_vlm_app.jobs.runner import EXIT_INTERNAL_ERROR, EventReporter, run_job
from rs_vlm_app.jobs.specs import JobResult, JobSpec
from rs_vlm_app.reporting import check_cancelled


@dataclass
class CountSpec(JobSpec):
    """A job that counts to ``n`` in batches, with hooks for every way to end."""

    kind: ClassVar[str] = "test-count"
    n: int = 5
    out: Path | None = None
    fail: str = ""           # "user", "crash", "vanish"
    watched: list[Path] = field(default_factory=list)
    on_batch: object = None  # callable(i)

    def inputs(self) -> list[Path]:
        return list(self.watched)

    def check(self) -> None:
        if self.n < 0:
            raise UserError(f"n must not be negative, not {self.n}")

    def run(self, ctx) -> JobResult:
        logging.getLogger("rs_vlm_app.tasks.test").info("counting to %d", self.n)
        for i in range(self.n):
            check_cancelled(ctx.reporter)
            if self.on_batch:
                self.on_batch(i)
            ctx.reporter.progress("count", i + 1, self.n)
        if self.fail == "user":
            raise UserError("the input is wrong", path="in.tif")
        if self.fail in ("crash", "vanish"):
            {}["missing"]
        target = self.out / "count.txt"
        target.write_text(str(self.n))
        return JobResult([protocol.ResultFile(str(target), "report", "count")], {"n": self.n})


def run(spec, **kw):
    events: list[protocol.Event] = []
    outcome = run_job(spec, events.append, job_id="t", **kw)
    return outcome, events


def test_a_job_that_finishes_ends_with_its_result(tmp_path):
    outcome, events = run(CountSpec(n=3, out=tmp_path))
    assert outcome.status == "ok" and outcome.exit_code == 0
    assert events[0] == protocol.Started(kind="test-count", title="test-count", job="t")
    assert events[-1].type == "result"
    assert events[-1].files == [protocol.ResultFile(str(tmp_path / "count.txt"), "report", "count")]
    assert events[-1].summary == {"n": 3, "model_loads": 0}
    assert [e.type for e in events].count("result") == 1
    assert all(e.job == "t" for e in events)
    progress = [e for e in events if isinstance(e, protocol.Progress)]
    assert progress[0].done == 1 and progress[-1].done == 3 and progress[-1].eta == 0.0


def test_library_logs_become_log_events(tmp_path):
    def warn(i):
        if i == 0:
            warnings.warn("a library warning", UserWarning, stacklevel=1)

    _outcome, events = run(CountSpec(n=2, out=tmp_path, on_batch=warn))
    logs = [(e.level, e.message) for e in events if isinstance(e, protocol.Log)]
    assert ("info", "counting to 2") in logs
    assert any(level == "warning" and "a library warning" in message for level, message in logs)


def test_a_user_error_is_an_error_event_with_exit_2(tmp_path):
    outcome, events = run(CountSpec(n=2, out=tmp_path, fail="user"))
    assert outcome.exit_code == EXIT_USER_ERROR
    assert events[-1] == protocol.Error(message="in.tif: the input is wrong", kind="user", job="t")


def test_check_runs_first(tmp_path):
    outcome, events = run(CountSpec(n=-1, out=tmp_path))
    assert outcome.exit_code == EXIT_USER_ERROR
    assert not [e for e in events if isinstance(e, protocol.Progress)]
    assert events[-1].message == "n must not be negative, not -1"


def test_a_crash_is_readable_and_the_traceback_goes_to_the_log(tmp_path):
    outcome, events = run(CountSpec(n=1, out=tmp_path, fail="crash"))
    assert outcome.exit_code == EXIT_INTERNAL_ERROR
    error = events[-1]
    assert error.kind == "internal"
    assert error.message == "internal error: KeyError: 'missing' (the job log has the details)"
    debug = [e.message for e in events if isinstance(e, protocol.Log) and e.level == "debug"]
    assert any("Traceback" in m and "KeyError" in m for m in debug)


def test_an_input_that_vanished_during_the_job_is_named(tmp_path):
    scene = tmp_path / "scene.tif"
    scene.write_bytes(b"x")
    outcome, events = run(CountSpec(n=2, out=tmp_path, fail="vanish", watched=[scene],
                                    on_batch=lambda i: scene.unlink() if i == 1 else None))
    assert outcome.exit_code == EXIT_USER_ERROR
    assert events[-1].kind == "input-changed"
    assert events[-1].message.startswith(f"{scene}: the file disappeared while the job was running")


def test_an_input_missing_from_the_start_is_a_plain_user_error(tmp_path):
    outcome, events = run(CountSpec(n=2, out=tmp_path, fail="user", watched=[tmp_path / "never.tif"]))
    assert events[-1].kind == "user"


def test_cancel_stops_at_the_next_batch(tmp_path):
    cancel = threading.Event()
    seen = []

    def batch(i):
        seen.append(i)
        if i == 2:
            cancel.set()

    outcome, events = run(CountSpec(n=100, out=tmp_path, on_batch=batch), cancel=cancel)
    assert outcome.status == "cancelled" and outcome.exit_code == EXIT_CANCELLED
    assert seen == [0, 1, 2]
    assert events[-1].type == "cancelled"
    assert not (tmp_path / "count.txt").exists()


def test_event_reporter_throttles_but_always_sends_first_and_last():
    events = []
    reporter = EventReporter(events.append, "j", min_interval_s=3600)
    for done in range(0, 101):
        reporter.progress("encode", done, 100)
    reporter.progress("encode", 100, 100)  # repeated: nothing new
    assert [e.done for e in events] == [0, 100]
    reporter.progress("write", 0, None)
    assert events[-1].stage == "write" and events[-1].total is None and events[-1].eta is None
