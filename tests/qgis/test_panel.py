"""The dock: a query on a raster layer (all of it or the visible extent) through the persistent
worker, results as styled layers grouped under the query; cancel; errors in the message bar."""

from __future__ import annotations

import os
import signal

import pytest
from qgis.core import (
    QgsLayerTreeGroup,
    QgsProject,
    QgsRasterLayer,
    QgsRectangle,
    QgsSettings,
    QgsVectorLayer,
    QgsWkbTypes,
)

from tests.qgis.conftest import LANDSAT, NAIP, area_layer, heat_map_valid_columns, wait_until


@pytest.fixture
def panel(plugin, configured):
    plugin.panel.show()
    return plugin.panel


def add_raster(path, name="scene") -> QgsRasterLayer:
    layer = QgsRasterLayer(str(path), name, "gdal")
    assert layer.isValid()
    QgsProject.instance().addMapLayer(layer)
    return layer


def run(panel, task, timeout=300):
    assert task is not None, panel.iface.messages()
    assert wait_until(lambda: task not in panel.tasks, timeout=timeout), "the task did not finish"
    return task.outcome


def groups() -> list[str]:
    return [c.name() for c in QgsProject.instance().layerTreeRoot().children() if isinstance(c, QgsLayerTreeGroup)]


def top_group(name: str) -> QgsLayerTreeGroup:
    root = QgsProject.instance().layerTreeRoot()
    group = root.children()[0]
    assert isinstance(group, QgsLayerTreeGroup) and group.name() == name, [c.name() for c in root.children()]
    return group


def test_localize_adds_styled_layers_grouped_under_the_query(panel, iface):
    scene = add_raster(NAIP, "naip 2020")
    panel.layer_combo.setLayer(scene)
    panel.whole.setChecked(True)
    panel.query.setText("  a   river crossing fields ")
    outcome = run(panel, panel.run_localize())
    assert outcome.ok, outcome.message
    group = top_group("a river crossing fields")
    layers = [node.layer() for node in group.findLayers()]
    assert [layer.name() for layer in layers] == ["hot spots", "heat map", "tile scores"]
    spots, heat, tiles = layers
    # the heat map: a raster in the scene's CRS over the scene, styled with the shipped ramp
    assert isinstance(heat, QgsRasterLayer) and heat.isValid()
    assert heat.crs() == scene.crs()
    px = scene.extent().width() / 934 * 8  # heat-map cells are a few source pixels
    for a, b in ((heat.extent().xMinimum(), scene.extent().xMinimum()),
                 (heat.extent().yMaximum(), scene.extent().yMaximum()),
                 (heat.extent().xMaximum(), scene.extent().xMaximum()),
                 (heat.extent().yMinimum(), scene.extent().yMinimum())):
        assert abs(a - b) <= px
    assert heat.renderer().type() == "singlebandpseudocolor"
    assert heat.renderer().opacity() == pytest.approx(0.75)
    ramp = heat.renderer().shader().rasterShaderFunction().colorRampItemList()
    assert [round(item.value, 2) for item in ramp] == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    # hot spots: polygons inside the scene, ranked, in its CRS; at least the peak region
    assert isinstance(spots, QgsVectorLayer) and spots.isValid()
    assert spots.geometryType() == QgsWkbTypes.GeometryType.PolygonGeometry
    assert spots.crs() == scene.crs()
    assert spots.featureCount() >= 1
    assert sorted(f["rank"] for f in spots.getFeatures()) == list(range(1, spots.featureCount() + 1))
    assert scene.extent().buffered(px).contains(spots.extent())
    assert spots.labelsEnabled()  # the shipped hot-spot style labels ranks
    # tile scores: one polygon per tile, hidden at first
    assert tiles.featureCount() > 10 and not group.findLayer(tiles.id()).isVisible()
    assert scene.extent().buffered(px).contains(tiles.extent())
    assert {layer.customProperty("rs_vlm/role") for layer in layers} == {"hotspots", "heatmap", "tiles"}
    # what the user reads
    assert any("'a river crossing fields': " in m and "hot spot" in m for m in iface.messages())
    assert panel.status.text().startswith("'a river crossing fields': ")
    assert "a river crossing fields" in panel._recent.stringList()


def test_worker_warnings_reach_the_qgis_log_panel(panel):
    from qgis.core import QgsApplication

    received: list[tuple[str, str]] = []

    def keep(message, tag, level):
        received.append((tag, message))

    QgsApplication.messageLog().messageReceived.connect(keep)
    try:
        scene = add_raster(NAIP, "naip")
        panel.layer_combo.setLayer(scene)
        panel.query.setText("a lake")
        outcome = run(panel, panel.run_localize())  # the SeLo grid's 768 px window is taller than NAIP
        assert outcome.ok, outcome.message
        wait_until(lambda: any("768" in m for _t, m in received), timeout=5)
    finally:
        QgsApplication.messageLog().messageReceived.disconnect(keep)
    warnings = [m for tag, m in received if tag == "rs-vlm" and "768" in m]
    assert warnings and "a lake" in warnings[0], received


def test_a_second_query_reuses_the_worker_and_its_loaded_model(panel, plugin):
    scene = add_raster(NAIP)
    panel.layer_combo.setLayer(scene)
    panel.query.setText("a lake")
    first = run(panel, panel.run_localize())
    assert first.ok, first.message
    pid = plugin.service.hello.pid
    panel.query.setText("farm buildings")
    second = run(panel, panel.run_localize())
    assert second.ok, second.message
    assert plugin.service.hello.pid == pid
    assert not [line for line in second.logs if line.startswith("loading model")]
    assert groups() == ["farm buildings", "a lake"]


def test_the_visible_extent_localizes_only_what_is_on_screen(panel, iface):
    scene = add_raster(LANDSAT, "landsat")
    canvas = iface.mapCanvas()
    canvas.setDestinationCrs(scene.crs())
    full = scene.extent()
    view = QgsRectangle(full.xMinimum() + full.width() * 0.25, full.yMinimum() + full.height() * 0.3,
                        full.xMinimum() + full.width() * 0.75, full.yMinimum() + full.height() * 0.8)
    canvas.resize(800, 600)
    canvas.setExtent(view)
    canvas.refresh()
    visible = canvas.extent()
    panel.layer_combo.setLayer(scene)
    panel.visible.setChecked(True)
    panel.query.setText("clouds")
    try:
        outcome = run(panel, panel.run_localize())
    finally:
        panel.whole.setChecked(True)
    assert outcome.ok, outcome.message
    heat = [n.layer() for n in top_group("clouds").findLayers() if n.layer().name() == "heat map"][0]
    assert heat.crs() == scene.crs()
    got = heat.extent()
    pixel = full.width() / scene.width()
    expected = visible.intersect(full)
    assert abs(got.xMinimum() - expected.xMinimum()) <= pixel
    assert abs(got.xMaximum() - expected.xMaximum()) <= pixel
    assert abs(got.yMinimum() - expected.yMinimum()) <= pixel
    assert abs(got.yMaximum() - expected.yMaximum()) <= pixel
    assert got.width() < full.width() * 0.9


def test_cancel_stops_the_running_job_and_the_worker_keeps_serving(panel, plugin, iface):
    scene = add_raster(NAIP)
    QgsSettings().setValue("rs_vlm/grid", "32@0.5")  # thousands of tiles: seconds of encoding
    try:
        panel.layer_combo.setLayer(scene)
        panel.query.setText("a road")
        task = panel.run_localize()
        assert wait_until(lambda: "encode tiles" in panel.status.text(), timeout=300), panel.status.text()
        assert panel.cancel_button.isEnabled()
        panel.cancel_button.click()
        outcome = run(panel, task)
    finally:
        QgsSettings().remove("rs_vlm/grid")
    assert outcome.status == "cancelled", outcome.message
    assert groups() == []
    assert panel.status.text() == "a road: cancelled."
    assert any("cancelled" in m for m in iface.messages())
    assert not panel.cancel_button.isEnabled()
    pid = plugin.service.hello.pid
    panel.query.setText("a road")
    again = run(panel, panel.run_localize())
    assert again.ok, again.message
    assert plugin.service.hello.pid == pid


def test_a_worker_error_becomes_a_message_bar_line(panel, iface, tmp_path):
    scene = add_raster(NAIP)
    QgsSettings().setValue("rs_vlm/clip/model", str(tmp_path / "missing.pt"))
    panel.layer_combo.setLayer(scene)
    panel.query.setText("a lake")
    outcome = run(panel, panel.run_localize())
    assert outcome.status == "error"
    assert "missing.pt" in outcome.message and "not found" in outcome.message
    critical = [item for item in iface.bar.items() if item.level() == 2]
    assert critical and "missing.pt" in critical[-1].text()
    assert panel.status.text() == "a lake: failed."
    assert groups() == []


def test_a_worker_that_dies_is_reported_and_replaced(panel, plugin, iface):
    scene = add_raster(NAIP)
    QgsSettings().setValue("rs_vlm/grid", "32@0.5")
    try:
        panel.layer_combo.setLayer(scene)
        panel.query.setText("a barn")
        task = panel.run_localize()
        assert wait_until(lambda: "encode tiles" in panel.status.text(), timeout=300), panel.status.text()
        pid = plugin.service.hello.pid
        os.kill(pid, signal.SIGKILL)
        outcome = run(panel, task)
    finally:
        QgsSettings().remove("rs_vlm/grid")
    assert outcome.status == "error"
    assert "was killed by SIGKILL during the job" in outcome.message
    assert any("SIGKILL" in m for m in iface.messages())
    # QGIS goes on, and the next run starts a fresh worker
    panel.query.setText("a barn")
    again = run(panel, panel.run_localize())
    assert again.ok, again.message
    assert plugin.service.hello.pid != pid


@pytest.mark.parametrize("python, expected", [
    ("", "no rs-vlm Python is configured"),
    ("/nonexistent/python3", "/nonexistent/python3: the configured rs-vlm Python does not exist"),
])
def test_no_or_a_missing_interpreter_is_reported_before_anything_starts(panel, iface, python, expected, monkeypatch):
    import rsvlm_qgis.settings

    scene = add_raster(NAIP)
    monkeypatch.setattr(rsvlm_qgis.settings, "detected_python", lambda: ("", "", ""))
    QgsSettings().setValue("rs_vlm/python", python)
    try:
        panel.layer_combo.setLayer(scene)
        panel.query.setText("a lake")
        assert panel.run_localize() is None
    finally:
        QgsSettings().remove("rs_vlm/python")
    assert any(expected in m for m in iface.messages()), iface.messages()
    assert panel.tasks == []


def test_a_web_layer_is_refused_with_advice(panel, iface):
    wms = QgsRasterLayer("crs=EPSG:3857&format=image/png&layers=a&styles=&url=http://127.0.0.1:9/wms", "basemap", "wms")
    QgsProject.instance().addMapLayer(wms, False)
    panel.layer_combo.setLayer(wms)
    panel.query.setText("a lake")
    if panel.layer_combo.currentLayer() is not wms:  # an invalid WMS may be filtered out of the combo
        from rsvlm_qgis import sources

        with pytest.raises(sources.SourceError, match="web map service"):
            sources.raster_path(wms)
        return
    assert panel.run_localize() is None
    assert any("web map service" in m and "Save As" in m for m in iface.messages())


def test_an_empty_query_asks_for_one(panel, iface):
    panel.layer_combo.setLayer(add_raster(NAIP))
    panel.query.setText("   ")
    assert panel.run_localize() is None
    assert any("type what to look for" in m for m in iface.messages())



def test_an_area_of_selected_polygons_in_another_crs_masks_the_heat_map(panel, iface):
    scene = add_raster(NAIP, "naip area")
    area = area_layer(scene)  # EPSG:4326 polygons; the scene is UTM
    panel.layer_combo.setLayer(scene)
    panel.whole.setChecked(True)
    panel.area_combo.setLayer(area)
    panel.area_selected.setChecked(True)
    panel.query.setText("a field")
    QgsSettings().setValue("rs_vlm/grid", "128")
    try:
        task = panel.run_localize()
        outcome = run(panel, task)
        assert outcome.ok, outcome.message
        aoi = task.spec["aoi"]
        written = QgsVectorLayer(aoi.replace(":area", "|layername=area"), "written", "ogr")
        assert written.crs().authid() == "EPSG:4326" and written.featureCount() == 1  # only the selected one
        heat = [n.layer() for n in top_group("a field").findLayers() if n.layer().name() == "heat map"][0]
        first, last, width = heat_map_valid_columns(heat.source())
        assert first == 0 and width / 3 - 3 <= last + 1 <= width / 3 + 3
        # no selection: one message, nothing started
        area.removeSelection()
        assert panel.run_localize() is None
        assert any("no features are selected" in m for m in iface.messages())
    finally:
        QgsSettings().remove("rs_vlm/grid")
        panel.area_combo.setLayer(None)
        panel.area_selected.setChecked(False)
        QgsProject.instance().removeMapLayer(area.id())
