"""Caption tiles / Classify tiles on the open scene: the dialogs, and the jobs through a real worker."""

from __future__ import annotations

from pathlib import Path

import pytest
import rasterio

from rs_vlm_app.gui.jobs import CANCELLED, DONE, FAILED
from rs_vlm_app.gui.layers import VectorLayer
from rs_vlm_app.gui.model_picker import ModelChoice
from rs_vlm_app.gui.tile_jobs import OWN_CLASSES, CaptionDialog, ClassifyDialog, parse_class_text
from tests.geo import rasters

WORKER_TIMEOUT_MS = 240_000


@pytest.fixture
def scene(tmp_path) -> Path:
    """A 256 x 256 georeferenced crop of the NAIP sample."""
    with rasterio.open(rasters.NAIP) as src:
        window = ((100, 356), (200, 456))
        data, transform, crs = src.read((1, 2, 3), window=window), src.window_transform(window), src.crs
    return rasters.write(tmp_path / "scene.tif", data, crs=crs.to_string(), transform=transform)


def test_class_text_is_one_class_per_line_or_comma_separated():
    assert parse_class_text("lake\n\n# a comment\nforest = a dense forest\n") == ["lake", "forest = a dense forest"]
    assert parse_class_text("lake, forest , road") == ["lake", "forest", "road"]


def test_classify_dialog_offers_the_bundled_lists_and_own_classes(qtbot, settings):
    dialog = ClassifyDialog(settings)
    qtbot.addWidget(dialog)
    assert dialog.classes() == "aid" and dialog.problem_text() is None
    dialog.own.setPlainText("lake")
    assert dialog.class_list.currentData() == OWN_CLASSES
    assert dialog.problem_text() == "Type at least two classes, one per line."
    dialog.own.setPlainText("lake\nforest")
    dialog.grid.setText("0")
    assert "grid" in dialog.problem_text().lower() or "window" in dialog.problem_text().lower()
    dialog.grid.setText("128")
    assert dialog.problem_text() is None
    assert dialog.values() == {"classes": ["lake", "forest"], "grid": "128"}


def test_caption_dialog_takes_a_checkpoint_of_a_coca(qtbot, settings, tiny_coca):
    dialog = CaptionDialog(settings)
    qtbot.addWidget(dialog)
    choice = ModelChoice(checkpoint=str(tiny_coca["checkpoint"]), model_config=str(tiny_coca["config"]))
    dialog.set_custom(choice)
    assert dialog.choice() == choice and dialog.problem_text() is None
    assert dialog.values()["choice"] == choice
    again = CaptionDialog(settings)  # remembered
    qtbot.addWidget(again)
    assert again.choice() == choice


def test_tile_actions_need_an_open_scene(window):
    assert not window.caption_action.isEnabled() and not window.classify_action.isEnabled()
    assert window.classify_tiles("aid") is None
    assert window.messages.last()[0] == "warning" and "Open a scene first" in window.messages.last()[1]
    assert window.jobs.jobs == []


@pytest.mark.slow
def test_caption_and_classify_tiles_become_layers(qtbot, window, tiny_choice, taught_coca, scene):
    window.model_picker.add_custom(tiny_choice)
    assert window.open_scene(scene) and window.caption_action.isEnabled()
    coca = ModelChoice(checkpoint=str(taught_coca["checkpoint"]), model_config=str(taught_coca["config"]))
    job = window.caption_tiles(coca, grid="128", decoding="greedy", clip_score=True)
    assert job.kind == "caption" and job.interactive
    qtbot.waitUntil(lambda: job.state in (DONE, FAILED, CANCELLED), timeout=WORKER_TIMEOUT_MS)
    assert job.state == DONE, (job.error, job.log[-5:])
    captions = next(x for x in window.layer_list() if isinstance(x, VectorLayer) and x.group == job.title)
    assert captions.caption_field == "caption" and len(captions.features.records) == 4
    hits = window.identify(10.0, 10.0)
    assert hits and hits[0][1]["caption"] == taught_coca["sentence"]
    assert window.messages.last()[0] == "success"

    job = window.classify_tiles(["lake", "forest", "road"], grid="128")
    qtbot.waitUntil(lambda: job.state in (DONE, FAILED, CANCELLED), timeout=WORKER_TIMEOUT_MS)
    assert job.state == DONE, (job.error, job.log[-5:])
    assert job.result.summary["model_loads"] == 2  # the CLIP that scored the captions classifies too
    classes = next(x for x in window.layer_list() if isinstance(x, VectorLayer) and x.group == job.title)
    assert classes.class_field == "class_1"
    assert {name for name, _colour in classes.legend} <= {"lake", "forest", "road"}
    assert window.identify(200.0, 200.0)[0][1]["class_1"] in {"lake", "forest", "road"}
