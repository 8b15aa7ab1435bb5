"""The loop in the desktop app, with real workers: build a dataset from the form against a local chat
server, watch the gallery, stop, resume, export, fine-tune a tiny CLIP on the export while its
curves fill, "Use this model", and ask the map a question with it.

RSVLM_SCREENSHOTS=DIR saves each window's picture there (docs/images/ is made this way, under Xvfb).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rs_vlm_app.gui.jobs import CANCELLED, DONE
from rs_vlm_app.mpgi.browse import build_progress
from tests.conftest import SAMPLES
from tests.gui.test_tool_windows import fill_dataset_form
from tests.mpgi import data
from tests.mpgi.fakechat import FakeChatServer
from tests.mpgi.helpers import ok_attempts_per_unit

SCENE = SAMPLES / "naip_2020_5m.tif"
WORKER_TIMEOUT_MS = 240_000  # a cold worker imports torch on a busy machine
IMAGES = 8
pytestmark = pytest.mark.slow

CAPTIONS = ["Dense green forest canopy with a winding dirt track along its edge.",
            "A river meanders between wooded banks and small sandy bars.",
            "Forest stands of varied height surround a narrow clearing.",
            "Braided river channels cross a wide floodplain with sparse trees."]


def reply(body: dict) -> str:
    """Different plausible text per request (the duplicate check stays on)."""
    reply.count = getattr(reply, "count", 0) + 1
    return f"{CAPTIONS[reply.count % len(CAPTIONS)]} (reply {reply.count})"


def screenshot(widget, name: str) -> None:
    folder = os.environ.get("RSVLM_SCREENSHOTS")
    if folder:
        widget.resize(1280, 860)
        widget.grab().save(str(Path(folder) / name))


def test_build_stop_resume_export_train_use_the_model_and_ask(qtbot, window, tiny_clip, tmp_path):
    data.class_folders(tmp_path / "AID", {"forest": IMAGES // 2, "river": IMAGES // 2})
    with FakeChatServer(responder=reply) as server:
        server.delay_s = 0.3
        dataset = window.tools.dataset_window()
        fill_dataset_form(dataset.form, tmp_path / "ds", tmp_path / "AID", server.base_url)
        dataset.form.quality["duplicates"].setCurrentText("drop")
        dataset.form.backends.item(0, 4).setText("1")
        qtbot.waitUntil(lambda: dataset.form.source_counts()[0][1] == IMAGES, timeout=10000)
        dataset.start()
        qtbot.waitUntil(lambda: dataset.job is not None, timeout=30000)
        first = dataset.job
        manifest = tmp_path / "ds" / "manifest.sqlite"
        qtbot.waitUntil(lambda: (dataset.gallery.count() >= 1 and build_progress(manifest).complete >= 1)
                        or first.finished_state, timeout=WORKER_TIMEOUT_MS)
        assert not first.finished_state, (first.state, first.error, first.log[-5:])
        assert all("(reply " in text for text in dataset.gallery_captions().values())
        assert "images done" in dataset.summary.text() and "requests/s" in dataset.summary.text()
        dataset.stop()
        qtbot.waitUntil(lambda: first.finished_state, timeout=60000)
        assert first.state == CANCELLED, (first.state, first.error)
        stopped = build_progress(manifest)
        assert 1 <= stopped.complete < IMAGES
        assert dataset.start_button.text() == "Resume"
        qtbot.waitUntil(lambda: "last run: cancelled" in dataset.summary.text(), timeout=10000)
        # an image of the gallery: every perspective and the integrated captions
        dataset.gallery.setCurrentRow(0)
        detail = dataset.detail.toPlainText()
        for words in ("Rule facts", "Relay (grounded description)", "Perspective: scene", "Perspective: objects",
                      "Integrated captions", "short", "long"):
            assert words in detail

        dataset.start()  # resume
        qtbot.waitUntil(lambda: dataset.job is not first, timeout=30000)
        second = dataset.job
        qtbot.waitUntil(lambda: second.finished_state, timeout=WORKER_TIMEOUT_MS)
        assert second.state == DONE, (second.error, second.log[-5:])
        assert second.result.summary["status"] == "completed" and second.result.summary["images_added"] == 0
    assert set(ok_attempts_per_unit(manifest).values()) == {1}  # nothing asked twice across the stop
    assert build_progress(manifest).complete == IMAGES
    qtbot.waitUntil(lambda: dataset.gallery.count() == IMAGES and "last run: completed" in dataset.summary.text(),
                    timeout=10000)
    dataset.gallery.setCurrentRow(1)
    assert "[keep]" in dataset.detail.toPlainText()
    assert "images: 8 ingested" in dataset.failures.toPlainText()
    screenshot(dataset, "gui-dataset.png")

    # one click: export the captions as CSV and open the training window on them
    dataset.train_on_it()
    training = window.tools.training_window()
    qtbot.waitUntil(lambda: training.data.text().endswith("captions.csv"), timeout=WORKER_TIMEOUT_MS)
    csv_path = Path(training.data.text())
    assert csv_path == tmp_path / "ds" / "export" / "captions.csv"
    rows = csv_path.read_text().splitlines()
    assert rows[0] == "filepath,caption" and len(rows) == 1 + 2 * IMAGES

    training.model_config.setText(str(tiny_clip["config"]))
    training.init.setCurrentText(str(tiny_clip["checkpoint"]))
    training.epochs.setValue(1)
    training.batch_size.setValue(4)
    training.device.setCurrentIndex(training.device.findData("cpu"))
    training.out.setText(str(tmp_path / "run"))
    training.val_data.setText(str(csv_path))
    training.extra = {"workers": 0, "log_every": 1, "warmup": 1, "lr": 1e-3, "save_every": 0, "tensorboard": False,
                      "eval_every": 2}
    training.start()
    qtbot.waitUntil(lambda: training.job is not None, timeout=30000)
    job = training.job
    qtbot.waitUntil(lambda: training.curves.series().get("loss", 0) >= 1 or job.finished_state,
                    timeout=WORKER_TIMEOUT_MS)
    qtbot.waitUntil(lambda: job.finished_state, timeout=WORKER_TIMEOUT_MS)
    assert job.state == DONE, (job.error, job.log[-5:])
    qtbot.waitUntil(lambda: training.use_button.isEnabled(), timeout=5000)
    steps = 2 * IMAGES // 4
    series = training.curves.series()
    assert series["loss"] == steps and series["lr"] == steps
    evaluated = {name: n for name, n in series.items() if name.startswith("eval/")}
    assert "eval/val/contrastive_loss" in evaluated and min(evaluated.values()) >= 2, series  # steps 2 and 4
    assert "Finished: 4 steps" in training.status.text()
    screenshot(training, "gui-training.png")

    training.use_button.click()
    model = tmp_path / "run" / "model.safetensors"
    assert window.model_picker.choice().checkpoint == str(model)
    assert window.messages.last()[0] == "success"
    assert window.open_scene(SCENE)
    asked = window.ask("a lake")
    assert asked.spec["model"]["checkpoint"] == str(model)
    qtbot.waitUntil(lambda: asked.finished_state, timeout=WORKER_TIMEOUT_MS)
    assert asked.state == DONE, (asked.error, asked.log[-5:])
    assert "“a lake”" in window.messages.last()[1]


def test_training_stops_resumably_and_resumes_to_the_end(qtbot, window, tiny_clip, tmp_path):
    from tests.training import synthetic

    train = synthetic.write_csv_dataset(tmp_path / "shapes", 48)
    training = window.tools.training_window()
    training.set_data(str(train))
    training.model_config.setText(str(tiny_clip["config"]))
    training.init.setCurrentText(str(tiny_clip["checkpoint"]))
    training.epochs.setValue(2)
    training.batch_size.setValue(4)
    training.device.setCurrentIndex(training.device.findData("cpu"))
    training.out.setText(str(tmp_path / "run"))
    training.extra = {"workers": 0, "log_every": 1, "warmup": 1, "lr": 1e-3, "save_every": 0, "tensorboard": False}
    training.start()
    qtbot.waitUntil(lambda: training.job is not None, timeout=30000)
    first = training.job
    qtbot.waitUntil(lambda: first.done >= 3 or first.finished_state, timeout=WORKER_TIMEOUT_MS)
    training.stop_button.click()
    qtbot.waitUntil(lambda: first.finished_state, timeout=60000)
    assert first.state == CANCELLED, (first.state, first.error, first.log[-5:])
    qtbot.waitUntil(lambda: training.resume_button.isEnabled(), timeout=10000)
    assert not training.use_button.isEnabled()
    stopped_at = max(step for step, _ in training.watch.curves["loss"])
    assert 3 <= stopped_at < 24
    training.resume_button.click()
    qtbot.waitUntil(lambda: training.job is not first, timeout=30000)
    second = training.job
    assert second.spec["resume"] is True
    qtbot.waitUntil(lambda: second.finished_state, timeout=WORKER_TIMEOUT_MS)
    assert second.state == DONE and second.result.summary["finished"], (second.error, second.log[-5:])
    qtbot.waitUntil(lambda: training.use_button.isEnabled(), timeout=10000)
    assert [step for step, _ in training.watch.curves["loss"]] == list(range(1, 25))  # one row per step, no gap
    assert training.curves.series()["loss"] == 24
