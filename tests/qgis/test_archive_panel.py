"""The dock's "Archive" field: with an archive folder (made by `rsvlm index`) chosen, the query searches
every indexed scene through an ``archive-search`` job; the best tiles arrive as one styled layer of
EPSG:4326 footprints ranked by score."""

from __future__ import annotations

import pytest
from qgis.core import QgsCoordinateReferenceSystem, QgsProject, QgsVectorLayer, QgsWkbTypes

from tests.qgis.conftest import LANDSAT, NAIP, run_app, wait_until

GRID = "256"


@pytest.fixture(scope="session")
def archive(tmp_path_factory, tiny_models):
    """NAIP (UTM) and Landsat (EPSG:4326) indexed with the tiny CLIP the panel's settings name."""
    folder = tmp_path_factory.mktemp("qgis-archive") / "county"
    clip = tiny_models["clip"]
    run_app("-m", "rs_vlm_app", "index", str(NAIP), str(LANDSAT), "-o", str(folder), "--grid", GRID,
            "--checkpoint", clip["checkpoint"], "--model-config", clip["config"], "--device", "cpu", timeout=600)
    return folder


@pytest.fixture
def panel(plugin, configured):
    plugin.panel.show()
    yield plugin.panel
    plugin.panel.archive_edit.clear()


def _scene_extents_4326():
    from qgis.core import QgsCoordinateTransform, QgsRasterLayer

    wgs84 = QgsCoordinateReferenceSystem("EPSG:4326")
    out = []
    for path in (NAIP, LANDSAT):
        layer = QgsRasterLayer(str(path), "s", "gdal")
        transform = QgsCoordinateTransform(layer.crs(), wgs84, QgsProject.instance())
        out.append(transform.transformBoundingBox(layer.extent()).buffered(1e-6))
    return out


@pytest.mark.slow
def test_an_archive_query_adds_the_best_tiles_as_a_styled_layer(panel, iface, archive):
    panel.archive_edit.setText(str(archive))
    panel.top_k.setValue(5)
    panel.query.setText("  farm   fields ")
    task = panel.run_localize()  # Enter / the button: with an archive set, the archive is searched
    assert task is not None, iface.messages()
    assert wait_until(lambda: task not in panel.tasks, timeout=300), "the task did not finish"
    outcome = task.outcome
    assert outcome.ok, outcome.message
    assert outcome.kind == "archive-search"
    root = QgsProject.instance().layerTreeRoot()
    group = root.children()[0]
    assert group.name() == f"farm fields · archive {archive.name}"
    layers = [node.layer() for node in group.findLayers()]
    assert [layer.name() for layer in layers] == ["search results"]
    hits = layers[0]
    assert isinstance(hits, QgsVectorLayer) and hits.isValid()
    assert hits.geometryType() == QgsWkbTypes.GeometryType.PolygonGeometry
    assert hits.crs() == QgsCoordinateReferenceSystem("EPSG:4326")
    assert hits.featureCount() == 5
    features = sorted(hits.getFeatures(), key=lambda f: f["rank"])
    assert [f["rank"] for f in features] == [1, 2, 3, 4, 5]
    scores = [f["score"] for f in features]
    assert scores == sorted(scores, reverse=True)
    assert {f["scene"] for f in features} <= {NAIP.stem, LANDSAT.stem}
    assert {f["query"] for f in features} == {"farm fields"}
    extents = _scene_extents_4326()
    for feature in features:  # every footprint lies inside the scene it came from
        box = feature.geometry().boundingBox()
        assert any(extent.contains(box) for extent in extents), (feature["scene"], box.toString())
    assert hits.customProperty("rs_vlm/role") == "results"
    assert hits.customProperty("rs_vlm/query") == "farm fields"
    assert hits.labelsEnabled()  # the shipped search_results style labels ranks
    assert "best 5 tiles of 2 scene(s)" in panel.status.text()


def test_a_missing_archive_folder_is_one_message_and_no_task(panel, iface, tmp_path):
    panel.archive_edit.setText(str(tmp_path / "nowhere"))
    panel.query.setText("a lake")
    assert panel.run_localize() is None
    assert any("nowhere: not a folder" in m and "rsvlm index" in m for m in iface.messages()), iface.messages()
