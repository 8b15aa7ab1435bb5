"""The front ends' client (rs_vlm_app/jobs/client.py): one cancel policy, one set of messages for a
worker that dies, one layer plan; the same contract for both drivers of it, the threads the QGIS
plugin uses and the QProcess adapter of the desktop app (rs_vlm_app/gui/jobs.py), against a real
worker process."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from rs_vlm_app.jobs import client, protocol
from tests.conftest import SAMPLES
from tests.jobs.workerproc import TIMEOUT_S, tiny_model, worker_env

SCENE = SAMPLES / "naip_2020_5m.tif"


# -- the session alone: a fake clock, events as a worker writes them --------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def line(**event) -> bytes:
    return (json.dumps(event) + "\n").encode()


def serving(clock: Clock | None = None) -> tuple[client.WorkerSession, client.Job, client.Job]:
    session = client.WorkerSession(serve=True, program="/opt/rsvlm/bin/python", clock=clock or Clock())
    a = client.Job("a", "localize", "first", {"kind": "localize"})
    b = client.Job("b", "localize", "second", {"kind": "localize"})
    assert json.loads(session.submit(a)) == {"request": "run", "id": "a", "spec": {"kind": "localize"}}
    session.submit(b)
    session.feed(line(event="hello", protocol=protocol.PROTOCOL_VERSION, mode="serve"))
    return session, a, b


def test_events_are_routed_to_their_jobs_and_one_final_event_ends_each():
    session, a, b = serving()
    updates = session.feed(line(event="started", job="a", kind="localize", title="t")
                           + line(event="progress", job="a", stage="encode tiles", done=3, total=10)
                           + line(event="log", job="a", message="window 768 skipped", level="warning")
                           + b"not json\n" + line(event="heartbeat", job="a"))
    assert [u.job for u in updates] == [a, a, a, a]
    assert (a.state, a.stage, a.done, a.total, b.state) == ("running", "encode tiles", 3, 10, "queued")
    assert a.log == ["warning: window 768 skipped"]
    (done,) = session.feed(line(event="result", job="a", kind="localize", files=[{"path": "/h.tif", "role": "heatmap"}]))
    assert done.finished and a.ok and a.status == "ok" and a.files("heatmap")[0].path == "/h.tif"
    (failed,) = session.feed(line(event="error", job="b", message="scene.tif: file not found", kind="user"))
    assert failed.finished and (b.status, b.message, b.error_kind) == ("error", "scene.tif: file not found", "user")
    assert session.jobs == {}
    # a late duplicate final event changes nothing
    assert not session.feed(line(event="cancelled", job="a"))[0].finished and a.ok


def test_a_cancel_escalates_to_sigterm_then_sigkill_on_one_clock():
    clock = Clock()
    session, a, b = serving(clock)
    session.feed(line(event="started", job="a", kind="localize"))
    assert session.cancel(a) == protocol.cancel_request("a") and a.state == "cancelling"
    assert session.cancel(a) is None  # asked once
    assert session.cancel(b) == protocol.cancel_request("b")  # queued: the worker drops it at once
    assert session.needs_ticks
    clock.now += client.CANCEL_GRACE_S - 0.1
    assert session.escalation() is None
    clock.now += 0.2
    assert session.escalation() == "terminate"
    clock.now += client.KILL_GRACE_S - 0.1
    assert session.escalation() is None
    clock.now += 0.2
    assert session.escalation() == "kill" and session.escalation() is None
    ended = session.process_ended(-signal.SIGKILL)
    assert ended == [a, b]
    assert a.status == b.status == "cancelled" and a.message == client.STOPPED_MESSAGE


def test_a_queued_job_cancelled_escalates_only_after_it_started():
    clock = Clock()
    session, a, b = serving(clock)
    session.cancel(b)
    clock.now += 3 * client.CANCEL_GRACE_S
    assert session.escalation() is None  # b never started: nothing to stop
    session.feed(line(event="started", job="b", kind="localize"))
    assert b.state == "cancelling"
    clock.now += client.CANCEL_GRACE_S
    assert session.escalation() == "terminate"


@pytest.mark.parametrize("returncode, stderr, started, expected", [
    (-signal.SIGKILL, [], True, "the worker process was killed by SIGKILL during the job; finished work is kept, "
                                "run it again to resume (it wrote nothing to stderr)"),
    (139, ["Traceback (most recent call last):", '  File "x.py"', "Segmentation fault (core dumped)"], True,
     "the worker process exited with status 139 during the job; finished work is kept, run it again to resume "
     "(its last words: Segmentation fault (core dumped))"),
    (0, [], True, "the worker process ended before the job finished; finished work is kept, run it again to resume "
                  "(it wrote nothing to stderr)"),
    (1, ["SyntaxError: invalid syntax"], False,
     "the worker process (/opt/rsvlm/bin/python) exited with status 1 before the job started "
     "(its last words: SyntaxError: invalid syntax)"),
    (1, ["/usr/bin/python3: No module named rs_vlm_app"], False,
     "/opt/rsvlm/bin/python cannot run rs-vlm (No module named 'rs_vlm_app'): use the Python of the environment "
     "where rs-vlm is installed; choose it in the settings"),
])
def test_a_worker_that_dies_fails_its_jobs_with_one_line_saying_why(returncode, stderr, started, expected):
    session = client.WorkerSession(serve=False, program="/opt/rsvlm/bin/python", hint="choose it in the settings")
    job = client.Job("job", "localize", "t", {"kind": "localize"})
    assert json.loads(session.submit(job)) == {"kind": "localize"}  # a one-shot reads the spec itself
    if started:
        session.feed(line(event="hello", protocol=protocol.PROTOCOL_VERSION) + line(event="started", job="job"))
    for text in stderr:
        session.feed_stderr(text + "\n")
    assert session.process_ended(returncode) == [job]
    assert (job.status, job.error_kind, job.message) == ("error", client.WORKER_ERROR, expected)
    assert job.log[-1] == f"error: {expected}"


def test_a_worker_of_another_protocol_is_refused_with_advice():
    session = client.WorkerSession(serve=True, hint="reinstall the plugin")
    job = client.Job("a", "localize", "t", {})
    session.submit(job)
    session.feed(line(event="hello", protocol=protocol.PROTOCOL_VERSION + 1, app_version="9.0"))
    assert "speaks protocol" in session.protocol_error and session.protocol_error.endswith("reinstall the plugin")
    session.process_ended(0)
    assert job.message == session.protocol_error


# -- both drivers against a real worker --------------------------------------------------------------


class ThreadDriver:
    """The client's WorkerProcess: what the QGIS plugin and Processing run on."""

    def __init__(self, command: list[str], env: dict[str, str]):
        self.process = client.WorkerProcess(command, serve=True, env=env)

    def submit(self, spec: dict) -> client.Job:
        return self.process.submit(spec).job

    def cancel(self, job: client.Job) -> None:
        self.process.cancel(job)

    def wait_until(self, predicate, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < deadline, "timed out"
            time.sleep(0.05)

    def pid(self) -> int:
        return self.process.pid

    def close(self) -> None:
        self.process.shutdown(timeout=10)


class QtDriver:
    """The desktop app's JobManager: the same client fed by QProcess."""

    def __init__(self, command: list[str], env: dict[str, str], qtbot, monkeypatch):
        from PyQt6.QtCore import QProcessEnvironment

        from rs_vlm_app.gui import jobs as gui_jobs

        qenv = QProcessEnvironment()
        for key, value in env.items():
            qenv.insert(key, value)
        monkeypatch.setattr(gui_jobs, "worker_command", lambda *args: (command[0], command[1:], qenv))
        self.qtbot = qtbot
        self.manager = gui_jobs.JobManager()

    def submit(self, spec: dict) -> client.Job:
        return self.manager.submit(spec, "contract", interactive=True)

    def cancel(self, job: client.Job) -> None:
        self.manager.cancel(job)

    def wait_until(self, predicate, timeout: float) -> None:
        self.qtbot.waitUntil(predicate, timeout=int(timeout * 1000))

    def pid(self) -> int:
        return self.manager.server.pid()

    def close(self) -> None:
        self.manager.shutdown()


@pytest.fixture(params=["threads", "qt"])
def driver_factory(request, monkeypatch):
    made = []

    def make(command: list[str], env: dict[str, str] | None = None):
        env = env or worker_env()
        if request.param == "threads":
            driver = ThreadDriver(command, env)
        else:
            pytest.importorskip("PyQt6.QtCore")
            driver = QtDriver(command, env, request.getfixturevalue("qtbot"), monkeypatch)
        made.append(driver)
        return driver

    yield make
    for driver in made:
        driver.close()


def real_worker() -> list[str]:
    return [sys.executable, *client.worker_args(serve=True)]


@pytest.mark.slow
def test_results_cancel_and_a_killed_worker_are_the_same_for_both_front_ends(driver_factory, tiny_clip, tmp_path):
    model = tiny_model(tiny_clip)
    driver = driver_factory(real_worker())

    # a result, and the layers it plans
    job = driver.submit(client.localize_spec(str(SCENE), ["a lake"], str(tmp_path / "out"), model, grid="256"))
    driver.wait_until(lambda: job.finished_state, TIMEOUT_S)
    assert job.ok, job.message
    (group,) = client.result_layer_plan(job)
    assert group.name == "a lake"
    assert [(p.name, p.role, p.sublayer, p.style, p.visible) for p in group.layers] == [
        ("hot spots", "hotspots", "hotspots", "hotspots", True), ("heat map", "heatmap", "", "heatmap", True),
        ("tile scores", "tiles", "tiles", "tile_scores", False)]
    heat, vectors = Path(group.layers[1].path), Path(group.layers[0].path)
    assert heat.is_file() and heat.suffix == ".tif" and vectors.is_file() and vectors.suffix == ".gpkg"
    assert group.layers[0].uri() == f"{vectors}|layername=hotspots"

    # cancel: the job stops at a batch, the worker keeps serving
    slow = client.localize_spec(str(SCENE), ["a road"], str(tmp_path / "slow"), dict(model, batch_size=1), grid="48")
    job = driver.submit(slow)
    driver.wait_until(lambda: job.done > 0 or job.finished_state, TIMEOUT_S)
    pid = driver.pid()
    driver.cancel(job)
    driver.wait_until(lambda: job.finished_state, 60)
    assert job.status == "cancelled" and "finished work is kept" in job.message
    assert driver.pid() == pid

    # a worker killed under a job: a failed job saying so, in the same words everywhere
    job = driver.submit(slow)
    driver.wait_until(lambda: job.done > 0 or job.finished_state, TIMEOUT_S)
    os.kill(driver.pid(), signal.SIGKILL)
    driver.wait_until(lambda: job.finished_state, 60)
    assert job.status == "error" and job.error_kind == client.WORKER_ERROR
    assert job.message.startswith("the worker process was killed by SIGKILL during the job; finished work is kept")


STUBBORN = """
import json, signal, sys
signal.signal(signal.SIGTERM, signal.SIG_IGN)   # a worker stuck in native code: deaf to cancel and SIGTERM
def say(**event):
    sys.stdout.write(json.dumps(event) + "\\n"); sys.stdout.flush()
say(event="hello", protocol=1, mode="serve")
request = json.loads(sys.stdin.readline())
say(event="started", job=request["id"], kind="localize")
say(event="progress", job=request["id"], stage="encode tiles", done=1, total=9)
while True:
    sys.stdin.readline()
"""


def test_a_worker_deaf_to_cancel_is_killed_and_its_job_cancelled(driver_factory, monkeypatch):
    monkeypatch.setattr(client, "CANCEL_GRACE_S", 0.3)
    monkeypatch.setattr(client, "KILL_GRACE_S", 0.3)
    driver = driver_factory([sys.executable, "-c", STUBBORN], dict(os.environ))
    job = driver.submit({"kind": "localize"})
    driver.wait_until(lambda: job.done == 1, 30)
    started = time.monotonic()
    driver.cancel(job)
    driver.wait_until(lambda: job.finished_state, 30)
    assert job.status == "cancelled" and job.message == client.STOPPED_MESSAGE
    assert time.monotonic() - started >= 0.6  # the grace, then SIGTERM (ignored), then SIGKILL


def test_the_layer_plan_names_and_styles_each_kinds_layers_by_role():
    rf = protocol.ResultFile
    classify = [rf("/o/classes.tif", "classes", "classes"), rf("/o/classes.qml", "style", "classes"),
                rf("/o/probabilities.tif", "raster", "probabilities"), rf("/o/tiles.gpkg", "tiles", "classes", ["tiles"]),
                rf("/o/classify.json", "report", "classify")]
    (group,) = client.layer_plan("classify", classify, "classes: AID · scene")
    assert group.name == "classes: AID · scene"
    assert [(p.name, p.source, p.role, p.uri(), p.style, p.visible) for p in group.layers] == [
        ("tile classes", "vector", "tiles", "/o/tiles.gpkg|layername=tiles", "tile_classes", True),
        ("classes", "raster", "classes", "/o/classes.tif", "", True)]  # its own .qml: the class colours
    (group,) = client.layer_plan("caption", [rf("/o/c.gpkg", "tiles", "captions", ["captions"])], "captions")
    assert [(p.name, p.uri(), p.style) for p in group.layers] == [("captions", "/o/c.gpkg|layername=captions", "captions")]
    (group,) = client.layer_plan("search", [rf("/o/s.gpkg", "tiles", "a lake", ["results"]), rf("/o/s.png", "file")])
    assert group.name == "search" and [(p.name, p.style, p.query) for p in group.layers] == [
        ("search results", "search_results", "a lake")]
    archive = [rf("/o/a/lake_heatmap.tif", "heatmap", "a lake (a)"), rf("/o/hotspots.gpkg", "vectors", "hot spots of the archive", ["hotspots"])]
    assert [(g.name, [p.name for p in g.layers]) for g in client.layer_plan("archive-localize", archive)] == [
        ("a lake (a)", ["heat map"]), ("hot spots of the archive", ["hot spots"])]
    assert client.layer_plan("eval-selo", [rf("/o/selo_metrics.json", "report")]) == []
