"""Caption, classify and search: the panel on the visible extent, and the Processing algorithms."""

from __future__ import annotations

import processing
import pytest
from processing.core.Processing import Processing
from qgis.core import (
    QgsApplication,
    QgsLayerTreeGroup,
    QgsProject,
    QgsRasterLayer,
    QgsRectangle,
    QgsVectorLayer,
    QgsWkbTypes,
)

from tests.qgis.conftest import LANDSAT, NAIP, need_kind, wait_until


@pytest.fixture(scope="module")
def registry(plugin):
    Processing.initialize()
    return QgsApplication.processingRegistry()


def clip(models, device=2):
    return {"MODEL": models["clip"]["checkpoint"], "MODEL_CONFIG": models["clip"]["config"], "DEVICE": device}


def coca(models, device=2):
    return {"MODEL": models["coca"]["checkpoint"], "MODEL_CONFIG": models["coca"]["config"], "DEVICE": device}


def add_raster(path, name="scene") -> QgsRasterLayer:
    layer = QgsRasterLayer(str(path), name, "gdal")
    QgsProject.instance().addMapLayer(layer)
    return layer


def run(panel, task, timeout=300):
    assert task is not None, panel.iface.messages()
    assert wait_until(lambda: task not in panel.tasks, timeout=timeout), "the task did not finish"
    return task.outcome


def top_group() -> QgsLayerTreeGroup:
    group = QgsProject.instance().layerTreeRoot().children()[0]
    assert isinstance(group, QgsLayerTreeGroup)
    return group


def view_quarter(iface, scene) -> QgsRectangle:
    canvas = iface.mapCanvas()
    canvas.setDestinationCrs(scene.crs())
    canvas.resize(800, 600)
    full = scene.extent()
    canvas.setExtent(QgsRectangle(full.xMinimum(), full.center().y(), full.center().x(), full.yMaximum()))
    canvas.refresh()
    return canvas.extent().intersect(full)


@pytest.mark.slow
def test_panel_captions_the_visible_extent(plugin, configured, iface, worker_kinds):
    need_kind(worker_kinds, "caption")
    panel = plugin.panel
    scene = add_raster(NAIP, "naip")
    visible = view_quarter(iface, scene)
    panel.layer_combo.setLayer(scene)
    panel.visible.setChecked(True)
    try:
        outcome = run(panel, panel.run_caption())
    finally:
        panel.whole.setChecked(True)
    assert outcome.ok, outcome.message
    group = top_group()
    assert group.name() == "captions · naip"
    captions = group.findLayers()[0].layer()
    assert isinstance(captions, QgsVectorLayer) and captions.crs() == scene.crs()
    assert captions.featureCount() >= 1
    assert "caption" in captions.fields().names()
    assert all(isinstance(f["caption"], str) for f in captions.getFeatures())
    pixel = scene.extent().width() / scene.width()
    assert visible.buffered(pixel).contains(captions.extent())
    assert captions.displayExpression() == '"caption"'  # the shipped captions style


def test_panel_classifies_with_a_class_list(plugin, configured, iface, worker_kinds):
    need_kind(worker_kinds, "classify")
    panel = plugin.panel
    scene = add_raster(LANDSAT, "landsat")
    panel.layer_combo.setLayer(scene)
    panel.class_set.setCurrentIndex(panel.class_set.findData("eurosat"))
    outcome = run(panel, panel.run_classify())
    assert outcome.ok, outcome.message
    group = top_group()
    assert group.name() == "classes: EuroSAT · landsat"
    layers = {node.layer().name(): node.layer() for node in group.findLayers()}
    assert set(layers) == {"tile classes", "classes"}
    classes = layers["classes"]
    assert classes.crs() == scene.crs()
    assert classes.renderer().type() == "paletted"  # the colour table / legend of the class raster
    labels = {c.label for c in classes.renderer().classes()}
    assert "Forest" in labels or "forest" in {label.lower() for label in labels}
    tiles = layers["tile classes"]
    assert {"class_1", "prob_1"} <= set(tiles.fields().names())


def test_panel_classifies_with_typed_class_names(plugin, configured, iface, worker_kinds, monkeypatch):
    from qgis.PyQt.QtWidgets import QInputDialog

    need_kind(worker_kinds, "classify")
    panel = plugin.panel
    scene = add_raster(NAIP, "naip")
    panel.layer_combo.setLayer(scene)
    names_index = panel.class_set.findData("names")
    answers = iter([(" lake ", True), ("water = a lake or a river;  field ; forest", True)])
    monkeypatch.setattr(QInputDialog, "getText", staticmethod(lambda *args, **kwargs: next(answers)))
    panel.class_set.setCurrentIndex(names_index)
    assert panel.run_classify() is None  # one name is not a class list
    assert any("at least two class names" in m for m in iface.messages())
    outcome = run(panel, panel.run_classify())
    assert outcome.ok, outcome.message
    group = top_group()
    assert group.name() == "classes: water = a lake or a river, field, forest · naip"
    classes = {node.layer().name(): node.layer() for node in group.findLayers()}["classes"]
    assert {c.label for c in classes.renderer().classes()} >= {"water", "field", "forest"}
    assert panel.class_set.itemText(names_index).startswith("Classes: water")


def test_caption_algorithm(registry, configured, tmp_path, worker_kinds):
    need_kind(worker_kinds, "caption")
    result = processing.run("rsvlm:caption", {
        "INPUT": str(NAIP), "DECODING": 1, "MAX_LEN": 8, "GRID": "512", **coca(configured),
        "OUTPUT": str(tmp_path / "captions.gpkg")})
    layer = QgsVectorLayer(result["OUTPUT"], "c", "ogr")
    assert layer.isValid() and layer.crs().authid() == "EPSG:26914"
    assert layer.featureCount() >= 2
    assert layer.geometryType() == QgsWkbTypes.GeometryType.PolygonGeometry
    assert "clip_score" not in layer.fields().names()


def test_caption_algorithm_scores_captions_with_clip(registry, configured, tmp_path, worker_kinds):
    need_kind(worker_kinds, "caption")
    result = processing.run("rsvlm:caption", {
        "INPUT": str(NAIP), "DECODING": 1, "MAX_LEN": 6, "GRID": "512", "CLIP_SCORE": True, **coca(configured),
        "OUTPUT": str(tmp_path / "captions.gpkg")})
    layer = QgsVectorLayer(result["OUTPUT"], "c", "ogr")
    scores = [f["clip_score"] for f in layer.getFeatures()]
    assert scores and all(-1.0 <= s <= 1.0 for s in scores)
    del layer


def test_classify_algorithm_with_a_class_file(registry, configured, tmp_path, worker_kinds):
    need_kind(worker_kinds, "classify")
    classes = tmp_path / "classes.txt"
    classes.write_text("# three land covers\nwater = a lake or a river\nfield\nforest\n")
    result = processing.run("rsvlm:classify", {
        "INPUT": str(NAIP), "CLASSES": 3, "CLASSES_FILE": str(classes), "TOP_K": 2, **clip(configured),
        "OUTPUT_CLASSES": str(tmp_path / "classes.tif"), "OUTPUT_PROBABILITIES": str(tmp_path / "probs.tif"),
        "OUTPUT_TILES": str(tmp_path / "tiles.gpkg")})
    raster = QgsRasterLayer(result["OUTPUT_CLASSES"], "c", "gdal")
    assert raster.isValid() and raster.crs().authid() == "EPSG:26914"
    assert (tmp_path / "classes.qml").is_file()
    assert raster.renderer().type() == "paletted"
    assert {c.label for c in raster.renderer().classes()} >= {"water", "field", "forest"}
    probs = QgsRasterLayer(result["OUTPUT_PROBABILITIES"], "p", "gdal")
    assert probs.bandCount() == 3
    tiles = QgsVectorLayer(result["OUTPUT_TILES"], "t", "ogr")
    assert {"class_1", "prob_1", "class_2", "prob_2"} <= set(tiles.fields().names())
    assert {f["class_1"] for f in tiles.getFeatures()} <= {"water", "field", "forest"}
    del raster, probs, tiles


def test_classify_algorithm_with_typed_class_names(registry, configured, tmp_path, worker_kinds):
    need_kind(worker_kinds, "classify")
    result = processing.run("rsvlm:classify", {
        "INPUT": str(LANDSAT), "CLASSES": 4, "CLASS_NAMES": "cloud = bright white clouds; water ;forest", "TOP_K": 1,
        "BANDS": "3,2,1", **clip(configured),
        "OUTPUT_CLASSES": str(tmp_path / "classes.tif"), "OUTPUT_TILES": str(tmp_path / "tiles.gpkg")})
    raster = QgsRasterLayer(result["OUTPUT_CLASSES"], "c", "gdal")
    assert raster.crs().authid() == "EPSG:4326"
    assert {c.label for c in raster.renderer().classes()} >= {"cloud", "water", "forest"}
    tiles = QgsVectorLayer(result["OUTPUT_TILES"], "t", "ogr")
    assert "class_2" not in tiles.fields().names()
    assert {f["class_1"] for f in tiles.getFeatures()} <= {"cloud", "water", "forest"}
    del raster, tiles


def test_classify_with_one_class_name_says_so(registry, configured, tmp_path):
    from qgis.core import QgsProcessingException

    with pytest.raises(QgsProcessingException, match="at least two class names"):
        processing.run("rsvlm:classify", {
            "INPUT": str(NAIP), "CLASSES": 4, "CLASS_NAMES": " lake ; ", **clip(configured),
            "OUTPUT_CLASSES": str(tmp_path / "c.tif"), "OUTPUT_TILES": str(tmp_path / "t.gpkg")})


def test_classify_without_a_class_file_says_so(registry, configured, tmp_path):
    from qgis.core import QgsProcessingException

    with pytest.raises(QgsProcessingException, match="give a class list file"):
        processing.run("rsvlm:classify", {
            "INPUT": str(NAIP), "CLASSES": 3, **clip(configured),
            "OUTPUT_CLASSES": str(tmp_path / "c.tif"), "OUTPUT_TILES": str(tmp_path / "t.gpkg")})


def test_search_algorithm_over_two_scenes(registry, configured, tmp_path, worker_kinds):
    need_kind(worker_kinds, "search")
    result = processing.run("rsvlm:search", {
        "INPUTS": [str(NAIP), str(LANDSAT)], "QUERY": "a lake", "TOP_K": 5, **clip(configured),
        "OUTPUT": str(tmp_path / "hits.gpkg"), "OUTPUT_SHEET": str(tmp_path / "sheet.png")})
    hits = QgsVectorLayer(result["OUTPUT"], "h", "ogr")
    assert hits.featureCount() == 5
    assert sorted(f["rank"] for f in hits.getFeatures()) == [1, 2, 3, 4, 5]
    assert hits.crs().authid() == "EPSG:26914"  # the first scene's
    scores = [f["score"] for f in sorted(hits.getFeatures(), key=lambda f: f["rank"])]
    assert scores == sorted(scores, reverse=True)
    assert (tmp_path / "sheet.png").stat().st_size > 1000
