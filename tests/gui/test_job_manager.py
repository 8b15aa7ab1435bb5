"""JobManager against scripted stand-ins for the worker: every way a worker can let a job down."""

from __future__ import annotations

import sys

import pytest
from PyQt6.QtCore import QProcessEnvironment

from rs_vlm_app.gui import jobs as gui_jobs
from rs_vlm_app.gui.jobs import DONE, FAILED, JobManager

# Each script plays a serve-mode worker: it answers the first run request, then behaves badly.
PRELUDE = """
import json, sys
def say(**event):
    sys.stdout.write(json.dumps(event) + "\\n"); sys.stdout.flush()
say(event="hello", protocol=1, mode="serve", pid=1, versions={"torch": "x"}, device={"default": "cpu"})
request = json.loads(sys.stdin.readline())
job = request["id"]
say(event="started", job=job, kind="localize", title="t")
say(event="progress", job=job, stage="encode tiles", done=3, total=10, rate=1.0, eta=7.0)
sys.stdout.write("garbage that is not JSON\\n"); sys.stdout.flush()
say(event="heartbeat", job=job)
"""

SCRIPTS = {
    "exits_quietly": PRELUDE + "sys.exit(0)\n",
    "dies_talking": PRELUDE + "sys.stderr.write('Segmentation fault (core dumped)\\n'); sys.exit(139)\n",
    "answers": PRELUDE + "say(event='result', job=job, kind='localize', files=[{'path': '/x.tif', 'role': 'heatmap'}], "
               "summary={'model_loads': 1})\nsys.stdin.readline()\n",
}


@pytest.fixture
def scripted(monkeypatch):
    def use(name):
        def command(*args):
            return sys.executable, ["-c", SCRIPTS[name]], QProcessEnvironment.systemEnvironment()
        monkeypatch.setattr(gui_jobs, "worker_command", command)
    return use


def run_one(qtbot, manager):
    job = manager.submit({"kind": "localize"}, "t")
    qtbot.waitUntil(lambda: job.finished_state, timeout=30000)
    return job


def test_a_worker_that_exits_without_a_result_fails_the_job_readably(qtbot, scripted):
    scripted("exits_quietly")
    manager = JobManager()
    job = run_one(qtbot, manager)
    assert job.state == FAILED and job.error_kind == "worker"
    assert job.error.startswith("the worker process ended before the job finished")
    assert (job.done, job.total, job.eta) == (3, 10, 7.0)  # the progress it reported is kept
    manager.shutdown()


def test_a_crashing_worker_is_named_with_its_last_words(qtbot, scripted):
    scripted("dies_talking")
    manager = JobManager()
    job = run_one(qtbot, manager)
    assert job.state == FAILED
    assert "exited with status 139" in job.error and "Segmentation fault" in job.error
    assert any("Segmentation fault" in line for line in job.log)
    manager.shutdown()


def test_garbage_and_unknown_events_do_not_disturb_a_job(qtbot, scripted):
    scripted("answers")
    manager = JobManager()
    ready = []
    manager.worker_ready.connect(ready.append)
    job = run_one(qtbot, manager)
    assert job.state == DONE and job.result.paths("heatmap") == ["/x.tif"]
    assert ready and ready[0].device == {"default": "cpu"}
    server = manager.server
    manager.shutdown()
    assert not server.running()
