"""File › Search archive…: an archive-search job through the persistent worker; the best tiles arrive
as a layer on the map (the best hit's scene opened when none is)."""

from __future__ import annotations

from pathlib import Path

import pytest
import rasterio

from rs_vlm_app.cli import main
from rs_vlm_app.gui.archive_search import ArchiveSearchDialog, best_hit_scene
from rs_vlm_app.gui.jobs import CANCELLED, DONE, FAILED
from rs_vlm_app.gui.layers import VectorLayer
from tests.geo import rasters

WORKER_TIMEOUT_MS = 240_000


@pytest.fixture(scope="module")
def archive(tmp_path_factory, tiny_clip) -> Path:
    """Two 256 x 256 NAIP crops indexed with the tiny CLIP on a 128 px grid (8 tiles)."""
    folder = tmp_path_factory.mktemp("gui-archive")
    scenes = []
    with rasterio.open(rasters.NAIP) as src:
        for name, (row, col) in (("north", (0, 0)), ("south", (400, 500))):
            window = ((row, row + 256), (col, col + 256))
            data, transform = src.read((1, 2, 3), window=window), src.window_transform(window)
            scenes.append(rasters.write(folder / f"{name}.tif", data, crs=src.crs.to_string(), transform=transform))
    archive = folder / "county"
    code = main(["index", *map(str, scenes), "-o", str(archive), "--grid", "128", "--checkpoint",
                 str(tiny_clip["checkpoint"]), "--model-config", str(tiny_clip["config"]), "--device", "cpu"])
    assert code == 0
    return archive


def test_the_dialog_remembers_the_folder_and_k(qtbot, settings, tmp_path):
    dialog = ArchiveSearchDialog(settings, query="  a  marina ")
    qtbot.addWidget(dialog)
    dialog.folder.setText(str(tmp_path))
    dialog.top_k.setValue(7)
    assert dialog.values() == {"archive": tmp_path, "query": "a marina", "top_k": 7}
    again = ArchiveSearchDialog(settings)
    qtbot.addWidget(again)
    assert again.folder.text() == str(tmp_path) and again.top_k.value() == 7


def test_a_missing_archive_folder_is_one_error_line(window, tmp_path):
    menus = {a.text(): a.menu() for a in window.menuBar().actions()}
    assert "Searc&h archive…" in [a.text() for a in menus["&File"].actions()]
    assert window.search_archive(tmp_path / "nowhere", "a lake") is None
    level, text = window.messages.last()
    assert level == "error" and "nowhere: not a folder" in text and "rsvlm index" in text
    assert window.jobs.jobs == []


@pytest.mark.slow
def test_an_archive_search_shows_the_best_tiles_on_the_best_hits_scene(qtbot, window, tiny_choice, archive):
    window.model_picker.add_custom(tiny_choice)
    assert window.search_archive_action.isEnabled()  # no scene needed
    job = window.search_archive(archive, "  farm  fields ", 5)
    assert job.kind == "archive-search" and job.interactive
    qtbot.waitUntil(lambda: job.state in (DONE, FAILED, CANCELLED), timeout=WORKER_TIMEOUT_MS)
    assert job.state == DONE, (job.error, job.log[-5:])
    gpkg = Path(job.result.summary["out"])
    assert gpkg.is_file() and gpkg.parent.name == "county"
    best = best_hit_scene(gpkg)
    assert best is not None and best.stem in ("north", "south")
    assert window.scene_path == best  # nothing was open: the best hit's scene is
    hits = [x for x in window.layer_list() if isinstance(x, VectorLayer) and x.group == job.title]
    assert len(hits) == 1 and hits[0].visible
    records = hits[0].features.records
    assert len(records) == 5
    assert [r["rank"] for r in records] == [1, 2, 3, 4, 5]
    assert [r["score"] for r in records] == sorted((r["score"] for r in records), reverse=True)
    assert {r["query"] for r in records} == {"farm fields"}
    # the open scene's hits are drawn on it: 128 px tiles of a 256 px scene, in its pixel frame
    own = [g for g, r in zip(hits[0].features.geometries, records, strict=True) if r["scene"] == best.stem]
    assert own
    for geometry in own:
        x0, y0, x1, y1 = geometry.bounds
        assert min(x0, y0) >= -1 and max(x1, y1) <= 257
        assert x1 - x0 == pytest.approx(128, abs=1) and y1 - y0 == pytest.approx(128, abs=1)
    level, text = window.messages.last()
    assert level == "success" and "best 5 tile(s) of 2 scene(s)" in text
