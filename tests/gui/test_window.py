"""The main window without a worker: opening scenes, bad files, layers, settings."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine
from PyQt6.QtCore import QMimeData, QPointF, Qt, QUrl
from PyQt6.QtGui import QDropEvent

from rs_vlm_app.gui.layers import HeatmapLayer, VectorLayer
from rs_vlm_app.gui.main_window import MainWindow
from rs_vlm_app.gui.model_picker import ModelChoice
from tests.conftest import SAMPLES

SCENE = SAMPLES / "naip_2020_5m.tif"
LANDSAT = SAMPLES / "landsat_2020_4326.tif"


def wait_for_tiles(qtbot, window):
    qtbot.waitUntil(lambda: window.map.tiles_read > 0 and window.map.reader.pending() == 0
                    and not window.map._refresh.isActive(), timeout=20000)


def drop(widget, paths):
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
    event = QDropEvent(QPointF(20, 20), Qt.DropAction.CopyAction, mime, Qt.MouseButton.NoButton,
                       Qt.KeyboardModifier.NoModifier)
    widget.dropEvent(event)


def big_scene(path: Path, width: int = 6000, height: int = 4000) -> Path:
    """A large georeferenced RGB raster (a smooth gradient: compresses to little)."""
    from affine import Affine

    cols = np.linspace(0, 255, width, dtype=np.float32)
    with rasterio.open(path, "w", driver="GTiff", width=width, height=height, count=3, dtype="uint8",
                       crs="EPSG:32614", transform=Affine(0.5, 0, 500000, 0, -0.5, 5200000),
                       tiled=True, compress="deflate") as out:
        for row0 in range(0, height, 512):
            h = min(512, height - row0)
            block = np.broadcast_to(cols, (h, width)).astype(np.uint8)
            out.write(np.stack([block, 255 - block, np.full_like(block, 90)]),
                      window=((row0, row0 + h), (0, width)))
    return path


def test_the_map_reads_screen_resolution_tiles_never_the_whole_raster(qtbot, window, tmp_path):
    scene = big_scene(tmp_path / "big.tif")
    assert window.open_scene(scene)
    wait_for_tiles(qtbot, window)
    frame = window.map.frame
    assert (frame.width, frame.height) == (6000, 4000) and frame.crs.to_epsg() == 32614
    assert window.windowTitle().startswith("big.tif")
    assert "EPSG:32614" in window.crs_label.text()
    # the whole scene is in view, drawn from a handful of decimated tiles
    assert window.map.visible_rect().contains(window.map.scene_rect())
    keys = window.map.loaded_tiles()
    assert keys and {k.level for k in keys} == {3}
    pixels = sum(window.map._tiles[k].pixmap().width() * window.map._tiles[k].pixmap().height() for k in keys)
    assert pixels < 0.02 * 6000 * 4000
    for key in keys:
        pixmap = window.map._tiles[key].pixmap()
        assert pixmap.width() <= 256 and pixmap.height() <= 256
    # zoomed in on a corner: only the tiles in view are read, at full resolution
    window.map.zoom_to(window.map.scene_rect().adjusted(0, 0, -5700, -3800))
    wait_for_tiles(qtbot, window)
    fine = [k for k in window.map.loaded_tiles() if k.level == 0]
    assert fine and all(k.tx <= 1 and k.ty <= 1 for k in fine)
    assert str((tmp_path / "big.tif").resolve()) in window.recent_files()


def test_the_map_shows_the_pixels_of_the_scene(qtbot, window):
    window.open_scene(SCENE)
    wait_for_tiles(qtbot, window)
    image = window.map.viewport().grab().toImage()
    centre = window.map.mapFromScene(QPointF(467, 361))
    colour = image.pixelColor(centre.x(), centre.y())
    with rasterio.open(SCENE) as ds:
        block = ds.read(window=((351, 372), (457, 478)))[:3].reshape(3, -1).mean(axis=1)
    assert np.allclose([colour.red(), colour.green(), colour.blue()], block, atol=40)


def test_a_dropped_non_raster_is_a_readable_message_and_the_scene_stays(qtbot, window, tmp_path):
    window.open_scene(SCENE)
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    drop(window.map, [notes])
    level, text = window.messages.last()
    assert level == "error" and "notes.txt" in text and "not a raster" in text
    assert window.scene_path == SCENE and window.map.frame.width == 934
    assert window.messages.isVisible()
    # still usable: another scene opens
    assert window.open_scene(LANDSAT)
    assert window.map.frame.crs.to_epsg() == 4326
    window.map.mouse_moved.emit(10.5, 20.5)
    lon, lat = window.map.frame.to_map(10.5, 20.5)
    assert window.coords.text() == f"lon {lon:.6f}  lat {lat:.6f}   ·   column 10  row 20"


def test_a_missing_recent_file_is_forgotten(qtbot, window, tmp_path):
    gone = tmp_path / "gone.tif"
    window.settings.setValue("recent/scenes", [str(gone), str(SCENE)])
    assert not window.open_scene(gone)
    assert "file not found" in window.messages.last()[1]
    assert window.recent_files() == [str(SCENE)]


def test_ask_without_a_scene_says_what_to_do(qtbot, window):
    assert window.ask("a lake") is None
    assert "Open a scene first" in window.messages.last()[1]
    assert not window.jobs.jobs


def write_heatmap(path: Path, value: np.ndarray, query: str = "a lake") -> Path:
    with rasterio.open(SCENE) as ds:
        transform = ds.transform @ Affine.scale(ds.width / value.shape[1], ds.height / value.shape[0])
        crs = ds.crs
    with rasterio.open(path, "w", driver="GTiff", width=value.shape[1], height=value.shape[0], count=1,
                       dtype="float32", crs=crs, transform=transform, nodata=-9999) as out:
        out.write(value.astype(np.float32), 1)
        out.update_tags(query=query, cosine_min="0.1", cosine_max="0.3")
    return path


def test_heatmap_layer_lies_on_the_scene_and_follows_the_opacity_slider(qtbot, window, tmp_path):
    window.open_scene(SCENE)
    heat = np.tile(np.linspace(0, 1, 117, dtype=np.float32), (90, 1))
    path = write_heatmap(tmp_path / "a_lake_heatmap.tif", heat)
    drop(window, [path])  # a heat map dropped on an open scene becomes a layer
    layer = next(x for x in window.layer_list() if isinstance(x, HeatmapLayer))
    rect = layer.extent()
    assert (rect.left(), rect.top(), rect.width(), rect.height()) == pytest.approx((0, 0, 934, 723), abs=0.5)
    assert layer.query == "a lake" and window.layers.legend.cosine_range == (0.1, 0.3)
    window.layers.opacity.setValue(30)
    assert layer.items[0].opacity() == pytest.approx(0.3)
    # the colours: transparent where low, opaque where high
    image = layer.items[0].pixmap().toImage()
    assert image.pixelColor(0, 45).alpha() == 0
    assert image.pixelColor(116, 45).alpha() > 200


def test_a_heatmap_in_another_crs_is_refused(qtbot, window, tmp_path):
    window.open_scene(LANDSAT)
    path = write_heatmap(tmp_path / "h.tif", np.zeros((10, 10)))
    window.add_heatmap_file(path)
    assert "open the scene it was computed on" in window.messages.last()[1]
    assert not window.layer_list()


def write_caption_tiles(path: Path) -> Path:
    """A tile GeoPackage as captioning / classification writes it: polygons with caption and classes."""
    import pyogrio.raw

    with rasterio.open(SCENE) as ds:
        t, crs = ds.transform, ds.crs.to_string()
    polygons, captions, top1, scales = [], [], [], []
    for r in range(0, 723 - 255, 256):
        for c in range(0, 934 - 255, 256):
            (x0, y0), (x1, y1) = t @ (c, r), t @ (c + 256, r + 256)
            polygons.append(shapely.box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)))
            captions.append(f"tile at row {r} column {c}")
            top1.append("Forest" if c < 256 else "Pond")
            scales.append(256)
    pyogrio.raw.write(path, shapely.to_wkb(np.array(polygons, dtype=object)),
                  [np.array(captions, dtype=object), np.array(top1, dtype=object), np.array(scales),
                   np.linspace(0.2, 0.9, len(polygons))],
                  fields=["caption", "top1_class", "scale", "top1_score"], layer="captions", driver="GPKG",
                  geometry_type="Polygon", crs=crs)
    return path


def test_tile_captions_and_classes_show_on_hover_and_click(qtbot, window, tmp_path):
    window.open_scene(SCENE)
    path = write_caption_tiles(tmp_path / "captions.gpkg")
    drop(window.map, [path])
    layer = next(x for x in window.layer_list() if isinstance(x, VectorLayer))
    assert layer.caption_field == "caption" and layer.class_field == "top1_class"
    assert [name for name, _colour in layer.legend] == ["Forest", "Pond"]
    window.map.mouse_moved.emit(300.0, 10.0)  # over the tile at row 0, column 256
    assert "tile at row 0 column 256" in window.info.toPlainText()
    assert "Pond" in window.info.toPlainText()
    window.map.clicked.emit(10.0, 300.0)  # pinned: hovering elsewhere keeps it
    window.map.mouse_moved.emit(600.0, 300.0)
    assert "tile at row 256 column 0" in window.info.toPlainText() and window.info.pinned
    window.map.clicked.emit(-50.0, -50.0)  # a click on nothing unpins
    assert not window.info.pinned
    assert "column" in window.coords.text() or window.coords.text() == ""


def test_layers_toggle_remove_and_export(qtbot, window, tmp_path):
    window.open_scene(SCENE)
    heat = write_heatmap(tmp_path / "q_heatmap.tif", np.random.default_rng(0).random((90, 117)), "a road")
    (tmp_path / "q_heatmap.qml").write_text("<qgis/>")
    window.add_heatmap_file(heat)
    layer = window.layer_list()[0]
    window.layers.set_group_visible("a road", False)
    assert not layer.items[0].isVisible()
    window.layers.set_group_visible("a road", True)
    assert layer.items[0].isVisible()
    copies = window.layers.export_group("a road", tmp_path / "export")
    assert sorted(p.name for p in copies) == ["q_heatmap.qml", "q_heatmap.tif"]
    assert (tmp_path / "export" / "q_heatmap.tif").read_bytes() == heat.read_bytes()
    window.layers.remove_group("a road")
    assert not window.layer_list() and layer.items[0].scene() is None


def test_earlier_answers_come_back_when_the_scene_is_reopened(qtbot, window, tmp_path):
    folder = window.results_folder(SCENE)
    folder.mkdir(parents=True)
    write_heatmap(folder / "a_lake_heatmap.tif", np.ones((90, 117)))
    write_caption_tiles(folder / "a_lake.gpkg")
    (folder / "localize.json").write_text(json.dumps({"queries": [
        {"query": "a lake", "heatmap": "a_lake_heatmap.tif", "vectors": "a_lake.gpkg", "scene": str(SCENE)}]}))
    window.open_scene(SCENE)
    assert window.layers.groups() == ["a lake"]
    assert not any(item.isVisible() for layer in window.layer_list() for item in layer.items)


def test_model_and_device_choices_are_remembered(qtbot, settings, tiny_choice):
    first = MainWindow(settings)
    qtbot.addWidget(first)
    first.model_picker.add_custom(tiny_choice)
    first.model_picker.device.setCurrentIndex(first.model_picker.device.findData("cpu"))
    first.model_picker.precision.setCurrentIndex(first.model_picker.precision.findData("fp32"))
    first.close()
    second = MainWindow(settings)
    qtbot.addWidget(second)
    spec = second.model_picker.model_spec()
    assert spec == {"device": "cpu", "precision": "fp32", "checkpoint": tiny_choice.checkpoint,
                    "model_config": tiny_choice.model_config, "quick_gelu": False}
    assert ModelChoice.from_json(tiny_choice.to_json()) == tiny_choice
    second.close()


def test_catalogue_models_are_offered_with_the_default_first(qtbot, window):
    names = [window.model_picker.model.itemText(i) for i in range(window.model_picker.model.count())]
    assert names[-1] == "Custom checkpoint…"
    assert names[0].endswith("(default)")
    assert window.model_picker.model_spec()["name"] == names[0].removesuffix("  (default)")
