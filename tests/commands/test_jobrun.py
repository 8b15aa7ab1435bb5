"""The CLI side of jobs: events rendered for people (plain lines, rich bars) or printed raw (--json)."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest

from rs_vlm_app.cli import main
from rs_vlm_app.commands.jobrun import CANCELLED_TEXT, EventConsole, model_spec_from_args
from rs_vlm_app.errors import EXIT_USER_ERROR
from rs_vlm_app.jobs import protocol
from tests.conftest import REPO, SAMPLES
from tests.jobs.workerproc import tiny_model, worker_env

SCENE = SAMPLES / "naip_2020_5m.tif"


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_lines_when_not_a_terminal():
    out = io.StringIO()
    console = EventConsole(out, min_interval_s=3600)
    console(protocol.Progress(stage="encode tiles", done=0, total=40))
    console(protocol.Progress(stage="encode tiles", done=10, total=40, rate=5.0, eta=6.0))  # throttled
    console(protocol.Progress(stage="encode tiles", done=40, total=40, rate=5.0, eta=0.0))
    console(protocol.Log(message="window size 768 skipped", level="warning"))
    console(protocol.Log(message="internal detail", level="debug"))
    console(protocol.Error(message="scene.tif: file not found", kind="user"))
    console(protocol.Cancelled())
    assert out.getvalue().splitlines() == [
        "encode tiles: 0/40",
        "encode tiles: 40/40 (5.0/s)",
        "rsvlm: warning: window size 768 skipped",
        "rsvlm: error: scene.tif: file not found",
        CANCELLED_TEXT,
    ]


def test_verbose_shows_debug_lines():
    out = io.StringIO()
    EventConsole(out, verbose=True)(protocol.Log(message="Traceback ...", level="debug"))
    assert out.getvalue() == "Traceback ...\n"


def test_progress_bars_on_a_terminal():
    out = FakeTTY()
    console = EventConsole(out)
    console(protocol.Progress(stage="encode tiles", done=5, total=40, rate=2.5, eta=14.0))
    console(protocol.Progress(stage="encode tiles", done=40, total=40, rate=2.5, eta=0.0))
    console(protocol.Log(message="a note"))
    console.close()
    text = out.getvalue()
    assert "encode tiles" in text and "40/40" in text and "2.5/s" in text and "a note" in text


def test_model_options_become_a_model_spec(tmp_path):
    import argparse

    args = argparse.Namespace(model=None, checkpoint=tmp_path / "w.pt", arch="ViT-B-32", model_config=None,
                              quick_gelu=True, device="cpu", precision="fp32", batch_size=8, offline=True)
    spec = model_spec_from_args(args)
    assert (spec.checkpoint, spec.arch, spec.quick_gelu, spec.device, spec.batch_size, spec.allow_download) == (
        tmp_path / "w.pt", "ViT-B-32", True, "cpu", 8, False)


def test_worker_command_needs_a_spec_or_serve(capsys):
    assert main(["worker"]) == EXIT_USER_ERROR
    assert "give a job spec file" in capsys.readouterr().err


@pytest.mark.slow
def test_localize_json_prints_only_events_on_stdout(tiny_clip, tmp_path):
    model = tiny_model(tiny_clip)
    command = [sys.executable, "-m", "rs_vlm_app", "localize", str(SCENE), "a lake", "-o", str(tmp_path / "out"),
               "--model-config", model["model_config"], "--checkpoint", model["checkpoint"], "--device", "cpu",
               "--json"]
    done = subprocess.run(command, cwd=REPO, env=worker_env(), capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    events = [json.loads(line) for line in done.stdout.decode().splitlines()]
    assert [e["event"] for e in events][:2] == ["hello", "started"]
    assert events[0]["mode"] == "inprocess"
    assert events[-1]["event"] == "result"
    assert {f["role"] for f in events[-1]["files"]} >= {"heatmap", "vectors", "manifest"}


@pytest.mark.slow
def test_localize_without_json_keeps_its_human_output(tiny_clip, tmp_path):
    model = tiny_model(tiny_clip)
    command = [sys.executable, "-m", "rs_vlm_app", "localize", str(SCENE), "a lake", "-o", str(tmp_path / "out"),
               "--model-config", model["model_config"], "--checkpoint", model["checkpoint"], "--device", "cpu"]
    done = subprocess.run(command, cwd=REPO, env=worker_env(), capture_output=True, timeout=300, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("'a lake': ") and "a_lake_heatmap.tif" in done.stdout
    assert "encode tiles:" in done.stderr


@pytest.mark.slow
def test_localize_json_reports_input_errors_as_events(tmp_path):
    command = [sys.executable, "-m", "rs_vlm_app", "localize", str(tmp_path / "gone.tif"), "a lake",
               "-o", str(tmp_path / "out"), "--json"]
    done = subprocess.run(command, cwd=REPO, env=worker_env(), capture_output=True, timeout=120, text=True)
    assert done.returncode == EXIT_USER_ERROR
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert events == [{"event": "error", "message": f"{tmp_path / 'gone.tif'}: file not found", "kind": "user"}]
