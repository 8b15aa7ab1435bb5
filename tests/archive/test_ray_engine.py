"""The ray engine on a real local Ray cluster (two CPU workers): same archive as the local engine,
a worker killed mid-run, the whole command killed mid-run and run again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from rs_vlm_app.archive.store import Archive
from rs_vlm_app.jobs import protocol
from rs_vlm_app.jobs.kinds.index import IndexSpec
from rs_vlm_app.jobs.runner import run_job
from rs_vlm_app.jobs.specs import ModelSpec
from tests.archive.conftest import GRID, SCENES, model_args, run_cli

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def actor_pids() -> list[int]:
    """Processes of the engine's encoder actors (Ray titles them ray::EncoderActor...)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "cmdline").read_bytes().startswith(b"ray::EncoderActor"):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def test_ray_archive_equals_local_and_survives_a_killed_worker(ray_cluster, local_archive, scenes, tiny_clip,
                                                                 tmp_path, capfd):
    archive = tmp_path / "ray"
    spec = IndexSpec(archive=archive, scenes=[str(p) for p in scenes.values()], grid=GRID, engine="ray", workers=2,
                     model=ModelSpec(checkpoint=tiny_clip["checkpoint"], model_config=tiny_clip["config"],
                                     device="cpu"))
    killed: list[int] = []

    def emit(event) -> None:  # SIGKILL one worker once the first scene is in
        if isinstance(event, protocol.Progress) and event.stage == "scenes" and event.done >= 1 and not killed:
            busy = [p for p in actor_pids() if b".encode" in Path(f"/proc/{p}/cmdline").read_bytes()]
            victims = busy or actor_pids()
            if victims:
                os.kill(victims[0], signal.SIGKILL)
                killed.append(victims[0])

    outcome = run_job(spec, emit)
    assert outcome.status == "ok", outcome.final
    summary = outcome.result.summary
    assert killed, "no worker was running when the first scene finished"
    assert sorted(summary["added"]) == sorted(SCENES) and summary["failures"] == []
    ray_scenes, local_scenes = Archive(archive).scenes(), Archive(local_archive).scenes()
    for name in SCENES:  # every scene exactly once, with the same tiles and embeddings as the local engine
        assert ray_scenes[name].parts == 1 and ray_scenes[name].tiles == local_scenes[name].tiles
        assert len(list((archive / "scenes" / name).glob("part-*.parquet"))) == 1
        ours, theirs = (next(Archive(a).parts([name])).embeddings() for a in (archive, local_archive))
        assert np.allclose(ours, theirs, atol=1e-5)
    hits = {}
    for which, path in (("ray", archive), ("local", local_archive)):
        code, result, _ = run_cli(["search", "--archive", str(path), "green fields", "-k", "15", "-o",
                                   str(tmp_path / f"{which}.gpkg"), *model_args(tiny_clip)], capfd)
        assert code == 0
        hits[which] = result["hits"]
    assert [(h["scene"], h["window"]) for h in hits["ray"]] == [(h["scene"], h["window"]) for h in hits["local"]]
    assert np.allclose([h["score"] for h in hits["ray"]], [h["score"] for h in hits["local"]], atol=1e-5)


def test_killed_command_resumes_without_encoding_finished_scenes(ray_cluster, scenes, tiny_clip, tmp_path, capfd):
    archive = tmp_path / "resumed"
    args = ["index", *map(str, scenes.values()), "-o", str(archive), "--grid", GRID, "--engine", "ray",
            "--workers", "1", "--ray-address", ray_cluster, *model_args(tiny_clip)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen([sys.executable, "-m", "rs_vlm_app", *args], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while not list(archive.glob("scenes/*/scene.json")):
            assert process.poll() is None and time.monotonic() < deadline, "no scene finished"
            time.sleep(0.2)
        process.kill()  # SIGKILL: no clean-up at all
        process.wait(30)
    finally:
        if process.poll() is None:
            process.kill()
    before = {s.id: s.committed for s in Archive(archive).scenes(refresh=True).values()}
    assert 1 <= len(before) < len(SCENES)
    (archive / ".lock").unlink(missing_ok=True)  # a killed writer's flock is gone with it; the file stays
    code, summary, _ = run_cli(args, capfd)
    assert code == 0 and sorted(summary["present"]) == sorted(before)
    assert sorted(summary["added"]) == sorted(set(SCENES) - set(before))
    after = Archive(archive).scenes(refresh=True)
    assert {k: after[k].committed for k in before} == before and len(after) == len(SCENES)


def test_cancel_stops_cluster_work_and_keeps_finished_scenes(ray_cluster, scenes, tiny_clip, tmp_path):
    archive = tmp_path / "cancelled"
    cancel = threading.Event()
    spec = IndexSpec(archive=archive, scenes=[str(p) for p in scenes.values()], grid=GRID, engine="ray", workers=1,
                     model=ModelSpec(checkpoint=tiny_clip["checkpoint"], model_config=tiny_clip["config"],
                                     device="cpu"))

    def emit(event) -> None:
        if isinstance(event, protocol.Progress) and event.stage == "scenes" and event.done >= 1:
            cancel.set()

    outcome = run_job(spec, emit, cancel=cancel)
    assert outcome.status == "cancelled"
    kept = Archive(archive).scenes(refresh=True)
    assert 1 <= len(kept) < len(SCENES)
    time.sleep(1.0)
    assert actor_pids() == []  # the actors were stopped
    assert json.loads((archive / "failures.json").read_text()) == []
