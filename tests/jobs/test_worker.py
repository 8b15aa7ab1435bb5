"""The worker process, for real: a tiny model, the NAIP sample, JSON lines on stdout, cancel, serve."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import rasterio

from rs_vlm_app.errors import EXIT_CANCELLED, EXIT_USER_ERROR
from rs_vlm_app.jobs import protocol
from tests.conftest import REPO, SAMPLES
from tests.jobs.workerproc import WorkerProc, tiny_model, worker_env, write_spec

SCENE = SAMPLES / "naip_2020_5m.tif"
pytestmark = pytest.mark.slow



def localize_spec(tiny_clip, out: Path, queries=("a lake",), **extra) -> dict:
    spec = {"kind": "localize", "scene": str(SCENE), "queries": list(queries), "out": str(out),
            "model": tiny_model(tiny_clip), "grid": "256,512"}
    spec.update(extra)
    return spec


def slow_spec(tiny_clip, out: Path) -> dict:
    spec = localize_spec(tiny_clip, out, grid="48")
    spec["model"]["batch_size"] = 1
    return spec


def assert_only_events(worker: WorkerProc) -> None:
    assert worker.lines, "the worker wrote nothing on stdout"
    for line in worker.lines:
        data = json.loads(line)  # every stdout line is one JSON event, nothing else
        assert isinstance(data, dict) and isinstance(data.get("event"), str), line


def test_worker_runs_a_spec_file_and_reports_every_file(tiny_clip, tmp_path):
    spec = write_spec(tmp_path / "job.json", localize_spec(tiny_clip, tmp_path / "out", ["a lake", "a road"]))
    worker = WorkerProc("worker", str(spec), "--id", "j1")
    assert worker.wait() == 0, worker.stderr
    assert_only_events(worker)
    types = [e.type for e in worker.events]
    assert types[0] == "hello" and types[1] == "started" and types[-1] == "result"
    hello = worker.events[0]
    assert hello.protocol == protocol.PROTOCOL_VERSION and hello.mode == "job"
    assert hello.device["default"] == "cpu" and hello.versions["torch"]
    assert {e.job for e in worker.events[1:]} == {"j1"}
    progress = [e for e in worker.events if isinstance(e, protocol.Progress) and e.stage == "encode tiles"]
    assert progress and progress[-1].done == progress[-1].total > 0
    result = worker.events[-1]
    assert result.kind == "localize"
    roles = {f.role for f in result.files}
    assert {"heatmap", "vectors", "manifest"} <= roles
    for f in result.files:
        assert Path(f.path).is_file(), f.path
    assert sorted(f.title for f in result.files if f.role == "heatmap") == ["a lake", "a road"]
    assert [q["query"] for q in result.summary["queries"]] == ["a lake", "a road"]
    assert result.summary["model_loads"] == 1
    heat = result.paths("heatmap")[0]
    with rasterio.open(heat) as h, rasterio.open(SCENE) as s:
        assert h.crs == s.crs
        assert h.bounds == pytest.approx(s.bounds, abs=1e-6)


def test_worker_reads_a_multi_line_spec_from_stdin(tiny_clip, tmp_path):
    worker = WorkerProc("worker", "-")
    worker.send(json.dumps(localize_spec(tiny_clip, tmp_path / "out"), indent=2))
    result = worker.final()
    assert result.type == "result", worker.stderr
    assert result.job == "job"
    worker.close_stdin()
    assert worker.wait() == 0


@pytest.mark.parametrize("spec, words", [
    ({"kind": "localize", "scene": str(SCENE), "queries": "a lake", "out": "/tmp/x"}, "localize.queries must be a list"),
    ({"kind": "paint"}, "unknown job kind 'paint'"),
])
def test_a_bad_spec_is_one_error_event_and_exit_2(tmp_path, spec, words):
    path = write_spec(tmp_path / "bad.json", spec)
    worker = WorkerProc("worker", str(path))
    assert worker.wait() == EXIT_USER_ERROR
    assert_only_events(worker)
    assert [e.type for e in worker.events] == ["error"]
    assert worker.events[0].kind == "user" and words in worker.events[0].message
    assert "Traceback" not in worker.stderr


def test_a_missing_scene_is_a_user_error_naming_the_file(tiny_clip, tmp_path):
    spec = localize_spec(tiny_clip, tmp_path / "out", scene=str(tmp_path / "gone.tif"))
    worker = WorkerProc("worker", str(write_spec(tmp_path / "job.json", spec)))
    assert worker.wait() == EXIT_USER_ERROR
    error = worker.events[-1]
    assert error.type == "error" and error.kind == "user"
    assert "gone.tif: file not found" in error.message


def test_a_model_that_fails_to_load_is_a_model_error(tiny_clip, tmp_path):
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"this is not a checkpoint")
    spec = localize_spec(tiny_clip, tmp_path / "out")
    spec["model"]["checkpoint"] = str(broken)
    worker = WorkerProc("worker", str(write_spec(tmp_path / "job.json", spec)))
    assert worker.wait() == EXIT_USER_ERROR
    error = worker.events[-1]
    assert error.type == "error" and error.kind == "model", error
    assert "broken.pt" in error.message and "\n" not in error.message
    assert not (tmp_path / "out" / "a_lake_heatmap.tif").exists()


@pytest.mark.parametrize("how", ["sigterm", "stdin"])
def test_cancel_stops_at_a_batch_keeps_progress_and_resumes(tiny_clip, tmp_path, how, _isolated_cache):
    out = tmp_path / "out"
    spec_path = write_spec(tmp_path / "job.json", slow_spec(tiny_clip, out))
    worker = WorkerProc("worker", str(spec_path))
    first = worker.wait_for(lambda e: isinstance(e, protocol.Progress) and e.stage == "encode tiles" and e.done > 0)
    assert first.total > first.done
    if how == "sigterm":
        worker.proc.send_signal(signal.SIGTERM)
    else:
        worker.send("cancel")
    final = worker.final()
    assert final.type == "cancelled", (final, worker.stderr[-2000:])
    assert worker.wait() == EXIT_CANCELLED
    assert_only_events(worker)
    # nothing half-written is left: no outputs, no temporary siblings
    assert not list(out.glob("*heatmap*")) and not list(out.glob("*.gpkg"))
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]
    # the finished tiles are kept: a checkpoint in the embedding cache
    partial = list((_isolated_cache / "embeddings").glob("*.partial"))
    assert len(partial) == 1
    kept = json.loads((partial[0] / "progress.json").read_text())["done"]
    assert 0 < kept < first.total
    # the same job again resumes there and finishes
    again = WorkerProc("worker", str(spec_path))
    assert again.wait() == 0, again.stderr[-2000:]
    logs = [e.message for e in again.events if isinstance(e, protocol.Log)]
    assert any(f"resuming tile encoding at {kept} of {first.total} tiles" in m for m in logs), logs
    assert again.events[-1].type == "result"


def test_a_second_sigterm_stops_at_once_through_cleanup(tiny_clip, tmp_path):
    out = tmp_path / "out"
    worker = WorkerProc("worker", str(write_spec(tmp_path / "job.json", slow_spec(tiny_clip, out))))
    worker.wait_for(lambda e: isinstance(e, protocol.Progress) and e.stage == "encode tiles" and e.done > 0)
    worker.proc.send_signal(signal.SIGTERM)
    worker.proc.send_signal(signal.SIGTERM)
    assert worker.wait() == EXIT_CANCELLED
    assert worker.events[-1].type == "cancelled"
    assert not [p for p in tmp_path.rglob("*") if ".tmp" in p.name]


def test_serve_mode_loads_the_model_once_for_many_queries(tiny_clip, tmp_path):
    out = tmp_path / "out"
    worker = WorkerProc("worker", "--serve")
    hello = worker.wait_for(lambda e: e.type == "hello")
    assert hello.mode == "serve" and hello.extra["model_loads"] == 0
    worker.send(protocol.run_request("q1", localize_spec(tiny_clip, out, ["a lake"])))
    first = worker.final("q1")
    assert first.type == "result", worker.stderr[-2000:]
    worker.send(protocol.run_request("q2", localize_spec(tiny_clip, out, ["a road"])))
    second = worker.final("q2")
    assert second.type == "result", worker.stderr[-2000:]
    # one model load for both; the second query reused the scene's tile embeddings too
    assert first.summary["model_loads"] == 1 and second.summary["model_loads"] == 1
    assert first.summary["encoding"]["cache_hit"] is False
    assert second.summary["encoding"]["cache_hit"] is True
    q2_logs = [e.message for e in worker.events if isinstance(e, protocol.Log) and e.job == "q2"]
    assert not any(m.startswith("loading ") for m in q2_logs), q2_logs
    assert len([e for e in worker.events if e.type == "hello"]) == 1  # same process throughout
    # both answers are in the folder's manifest
    manifest = json.loads((out / "localize.json").read_text())
    assert sorted(q["query"] for q in manifest["queries"]) == ["a lake", "a road"]
    worker.send('{"request": "shutdown"}')
    assert worker.wait() == 0
    assert_only_events(worker)


def test_serve_mode_survives_bad_requests_and_failed_jobs(tiny_clip, tmp_path):
    worker = WorkerProc("worker", "--serve")
    worker.wait_for(lambda e: e.type == "hello")
    worker.send("please localize")
    error = worker.wait_for(lambda e: e.type == "error")
    assert error.kind == "protocol" and "not a request" in error.message
    worker.send(protocol.run_request("bad", {"kind": "localize", "scene": 3}))
    error = worker.final("bad")
    assert error.type == "error" and error.kind == "user"
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"junk")
    spec = localize_spec(tiny_clip, tmp_path / "out")
    spec["model"]["checkpoint"] = str(broken)
    worker.send(protocol.run_request("model", spec))
    error = worker.final("model")
    assert error.type == "error" and error.kind == "model"
    worker.send(protocol.run_request("good", localize_spec(tiny_clip, tmp_path / "out")))
    assert worker.final("good").type == "result", worker.stderr[-2000:]
    worker.close_stdin()  # EOF ends the session
    assert worker.wait() == 0


def test_serve_mode_cancels_one_job_and_keeps_serving(tiny_clip, tmp_path):
    out = tmp_path / "out"
    worker = WorkerProc("worker", "--serve")
    worker.send(protocol.run_request("long", slow_spec(tiny_clip, out)))
    worker.send(protocol.run_request("queued", localize_spec(tiny_clip, out, ["a road"])))
    worker.wait_for(lambda e: isinstance(e, protocol.Progress) and e.job == "long" and e.done > 0)
    worker.send(protocol.cancel_request("queued"))
    worker.send(protocol.cancel_request("long"))
    assert worker.final("long").type == "cancelled"
    assert worker.final("queued").type == "cancelled"
    worker.send(protocol.run_request("after", localize_spec(tiny_clip, out, ["a lake"])))
    assert worker.final("after").type == "result"
    worker.proc.send_signal(signal.SIGTERM)
    assert worker.wait() in (0, EXIT_CANCELLED)


def test_stray_output_goes_to_stderr_never_to_the_event_stream(tmp_path):
    code = (
        "import os, sys\n"
        "from rs_vlm_app.jobs import protocol, worker\n"
        "emit = worker.EventWriter(worker.protect_stdout())\n"
        "print('a stray print')\n"
        "os.write(1, b'C code writing to fd 1\\n')\n"
        "emit(protocol.Log(message='an event'))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=worker_env(), capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.decode().splitlines() == ['{"event":"log","message":"an event","level":"info"}']
    assert "a stray print" in out.stderr.decode() and "C code writing to fd 1" in out.stderr.decode()


def test_the_selo_evaluation_runs_as_a_job(tiny_clip, tmp_path):
    import cv2

    data = tmp_path / "airslt"
    (data / "imgs").mkdir(parents=True)
    (data / "annotations").mkdir()
    with rasterio.open(SCENE) as ds:
        rgb = ds.read((1, 2, 3), window=((0, 512), (0, 512))).transpose(1, 2, 0)
    cv2.imwrite(str(data / "imgs" / "scene_0.png"), rgb[..., ::-1])
    anno = [{"caption": "a dark lake", "jpg_name": "scene_0.png", "points": [[[100, 100], [300, 100], [300, 300]]]}]
    (data / "annotations" / "anno.json").write_text(json.dumps(anno))
    spec = {"kind": "eval-selo", "data": str(data), "out": str(tmp_path / "metrics"), "model": tiny_model(tiny_clip),
            "grid": "256"}
    worker = WorkerProc("worker", str(write_spec(tmp_path / "job.json", spec)))
    assert worker.wait() == 0, worker.stderr[-2000:]
    result = worker.events[-1]
    assert result.type == "result" and result.kind == "eval-selo"
    assert {f.role for f in result.files} == {"report", "table"}
    report = json.loads(Path(result.paths("report")[0]).read_text())
    assert report["per_sample"][0]["caption"] == "a dark lake"
    assert result.summary["mean"] == report["mean"]
    assert set(report["mean"]) >= {"Rsu", "Ras", "Rda", "Rmi"}
