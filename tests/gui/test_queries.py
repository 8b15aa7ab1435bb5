"""The desktop app with a real worker process and the tiny model: queries, cancel, crashes."""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import pytest
import rasterio
from PyQt6.QtCore import Qt

from rs_vlm_app.gui.jobs import CANCELLED, DONE, FAILED
from rs_vlm_app.gui.layers import HeatmapLayer, VectorLayer
from tests.conftest import SAMPLES

SCENE = SAMPLES / "naip_2020_5m.tif"
WORKER_TIMEOUT_MS = 240_000  # a cold worker imports torch and open_clip on a busy machine
pytestmark = pytest.mark.slow


def finished(job):
    return job.state in (DONE, FAILED, CANCELLED)


def slow_spec(window, tiny_choice, scene=SCENE) -> dict:
    """A localize job with hundreds of one-tile batches: long enough to cancel or kill mid-way."""
    model = tiny_choice.spec("cpu", "auto")
    model["batch_size"] = 1
    return {"kind": "localize", "scene": str(scene), "queries": ["slow"], "out": str(window.results_folder()),
            "model": model, "grid": "48"}


def test_a_query_shows_its_heat_map_over_the_scene(qtbot, window, tiny_choice):
    window.model_picker.add_custom(tiny_choice)
    window.settings.setValue("worker/start_early", True)
    assert window.open_scene(SCENE)
    assert window.worker_label.text() == "worker: starting…"
    qtbot.waitUntil(lambda: "worker ready" in window.worker_label.text(), timeout=WORKER_TIMEOUT_MS)
    assert window.jobs.jobs == []  # warm, nothing run
    window.query.setText("a lake")
    qtbot.mouseClick(window.ask_button, Qt.MouseButton.LeftButton)
    job = window.jobs.jobs[-1]
    assert job.interactive and job.spec["queries"] == ["a lake"]
    qtbot.waitUntil(lambda: finished(job), timeout=WORKER_TIMEOUT_MS)
    assert job.state == DONE, (job.error, job.log[-5:])
    # the overlay lies exactly on the scene
    heat = next(x for x in window.layer_list() if isinstance(x, HeatmapLayer) and x.group == "a lake")
    rect = heat.extent()
    assert (rect.left(), rect.top(), rect.width(), rect.height()) == pytest.approx((0, 0, 934, 723), abs=0.5)
    assert heat.items[0].isVisible() and heat.items[0].scene() is window.map.scene()
    with rasterio.open(heat.path) as ds, rasterio.open(SCENE) as scene:
        assert ds.crs == scene.crs and ds.bounds == pytest.approx(scene.bounds)
    spots = next(x for x in window.layer_list() if isinstance(x, VectorLayer) and x.kind == "hotspots")
    assert spots.loaded and len(spots.features.records) >= 1
    assert window.messages.last()[0] == "success" and "“a lake”" in window.messages.last()[1]
    assert window.jobs_panel.row_texts(job)[1] == "done"
    assert "worker ready" in window.worker_label.text()
    # a second query: same worker, model loaded once, previous answer hidden but kept
    pid = window.jobs.server.pid()
    second = window.ask("a road")
    qtbot.waitUntil(lambda: finished(second), timeout=WORKER_TIMEOUT_MS)
    assert second.state == DONE, second.error
    assert window.jobs.server.pid() == pid
    assert second.result.summary["model_loads"] == 1
    assert second.result.summary["encoding"]["cache_hit"] is True
    assert set(window.layers.groups()) == {"a lake", "a road"}
    assert not heat.items[0].isVisible()
    # "open result" on the first job shows it again
    window.open_job_result(job)
    assert heat.items[0].isVisible()


def test_cancel_a_running_job_from_the_jobs_panel(qtbot, window, tiny_choice):
    window.open_scene(SCENE)
    job = window.jobs.submit(slow_spec(window, tiny_choice), "slow job", interactive=True)
    qtbot.waitUntil(lambda: job.done > 0 or finished(job), timeout=WORKER_TIMEOUT_MS)
    assert job.state == "running" and job.total and job.done < job.total
    window.jobs_panel.select(job)
    assert window.jobs_panel.cancel_button.isEnabled()
    window.jobs_panel.cancel_button.click()
    assert window.jobs_panel.row_texts(job)[1] == "cancelling"
    qtbot.waitUntil(lambda: finished(job), timeout=60_000)
    assert job.state == CANCELLED
    assert window.jobs_panel.row_texts(job)[1] == "cancelled"
    assert not window.jobs_panel.cancel_button.isEnabled()
    assert "cancelled" in window.messages.last()[1]
    assert not list(Path(window.results_folder()).glob("slow*"))
    # the same worker keeps answering
    window.model_picker.add_custom(tiny_choice)
    after = window.ask("a lake")
    qtbot.waitUntil(lambda: finished(after), timeout=WORKER_TIMEOUT_MS)
    assert after.state == DONE, after.error


def test_a_killed_worker_is_a_readable_error_and_the_app_keeps_working(qtbot, window, tiny_choice):
    window.model_picker.add_custom(tiny_choice)
    window.open_scene(SCENE)
    job = window.jobs.submit(slow_spec(window, tiny_choice), "slow job", interactive=True)
    qtbot.waitUntil(lambda: job.done > 0 or finished(job), timeout=WORKER_TIMEOUT_MS)
    os.kill(window.jobs.server.pid(), signal.SIGKILL)
    qtbot.waitUntil(lambda: finished(job), timeout=30_000)
    assert job.state == FAILED
    # the client's message, word for word what the QGIS plugin says for the same death
    assert "was killed by SIGKILL during the job" in job.error and "finished work is kept" in job.error
    assert window.jobs_panel.row_texts(job)[1] == "failed"
    level, text = window.messages.last()
    assert level == "error" and "slow job failed" in text and "A new worker starts" in text
    # a new query starts a new worker
    again = window.ask("a lake")
    qtbot.waitUntil(lambda: finished(again), timeout=WORKER_TIMEOUT_MS)
    assert again.state == DONE, again.error


def test_a_model_that_fails_to_load_is_shown_and_nothing_is_lost(qtbot, window, tiny_choice, tmp_path):
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not weights")
    window.model_picker.add_custom(type(tiny_choice)(checkpoint=str(broken), model_config=tiny_choice.model_config))
    window.open_scene(SCENE)
    job = window.ask("a lake")
    qtbot.waitUntil(lambda: finished(job), timeout=WORKER_TIMEOUT_MS)
    assert job.state == FAILED and job.error_kind == "model"
    assert "broken.pt" in job.error
    level, text = window.messages.last()
    assert level == "error" and "Choose another model" in text
    assert window.scene_path == SCENE and window.map.frame is not None
    # pick the good model again and ask: the same worker answers
    window.model_picker.add_custom(tiny_choice)
    good = window.ask("a lake")
    qtbot.waitUntil(lambda: finished(good), timeout=WORKER_TIMEOUT_MS)
    assert good.state == DONE, good.error


def test_a_scene_that_disappears_is_reported_and_the_app_stays_usable(qtbot, window, tiny_choice, tmp_path):
    scene = tmp_path / "copy.tif"
    shutil.copy(SCENE, scene)
    window.model_picker.add_custom(tiny_choice)
    assert window.open_scene(scene)
    job = window.jobs.submit(slow_spec(window, tiny_choice, scene), "slow job", interactive=True)
    qtbot.waitUntil(lambda: job.done > 0 or finished(job), timeout=WORKER_TIMEOUT_MS)
    scene.unlink()
    qtbot.waitUntil(lambda: finished(job), timeout=WORKER_TIMEOUT_MS)
    if job.state == FAILED:  # GDAL may keep reading the open file: either outcome must be clean
        assert "copy.tif" in job.error
    next_job = window.ask("a lake")
    qtbot.waitUntil(lambda: finished(next_job), timeout=WORKER_TIMEOUT_MS)
    assert next_job.state == FAILED and next_job.error_kind == "user"
    assert "copy.tif: file not found" in next_job.error
    assert "copy.tif: file not found" in window.messages.last()[1]
    assert window.open_scene(SCENE)  # still usable


def test_a_job_spec_file_runs_in_a_worker_of_its_own_and_cancels_by_sigterm(qtbot, window, tiny_choice, tmp_path):
    window.open_scene(SCENE)
    spec = tmp_path / "job.json"
    spec.write_text(json.dumps(slow_spec(window, tiny_choice)))
    job = window.run_spec_file(spec)
    assert not job.interactive
    qtbot.waitUntil(lambda: job.done > 0 or finished(job), timeout=WORKER_TIMEOUT_MS)
    assert window.jobs.server is None  # not the persistent worker
    window.jobs.cancel(job)
    qtbot.waitUntil(lambda: finished(job), timeout=60_000)
    assert job.state == CANCELLED
