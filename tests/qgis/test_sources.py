"""Which layers the worker can read, and windows of a layer (the visible map extent) as VRTs."""

from __future__ import annotations

import shutil

import pytest
from qgis.core import QgsRasterLayer, QgsRectangle, QgsVectorLayer

from tests.qgis.conftest import LANDSAT, NAIP


@pytest.fixture
def sources(installed_plugin):
    import rsvlm_qgis.sources

    return rsvlm_qgis.sources


def test_a_file_backed_raster_gives_its_path(sources):
    layer = QgsRasterLayer(str(NAIP), "naip", "gdal")
    assert sources.raster_path(layer) == str(NAIP)


@pytest.mark.parametrize("make, expected", [
    (lambda: QgsRasterLayer("contextualWMSLegend=0&crs=EPSG:3857&format=image/png&layers=a&styles=&"
                            "url=http://127.0.0.1:9/wms", "web map", "wms"),
     "layer 'web map' comes from a web map service (WMS/WMTS/XYZ), not from a file"),
    (lambda: QgsVectorLayer("Polygon?crs=EPSG:4326", "scratch", "memory"),
     "layer 'scratch' is not a raster layer"),
    (lambda: None, "choose a raster layer first"),
])
def test_layers_the_worker_cannot_read_are_refused_with_a_reason(sources, make, expected):
    layer = make()
    with pytest.raises(sources.SourceError) as info:
        sources.raster_path(layer)
    assert expected in str(info.value)
    if "comes from" in expected:
        assert "Save As" in str(info.value)


def test_a_raster_whose_file_vanished_is_refused(sources, tmp_path):
    copy = tmp_path / "gone.tif"
    shutil.copyfile(NAIP, copy)
    layer = QgsRasterLayer(str(copy), "gone", "gdal")
    assert layer.isValid()
    copy.unlink()
    with pytest.raises(sources.SourceError, match="does not exist"):
        sources.raster_path(layer)


@pytest.mark.parametrize("scene", [NAIP, LANDSAT])
def test_window_vrt_covers_the_extent_with_the_same_pixels(sources, tmp_path, scene):
    layer = QgsRasterLayer(str(scene), "scene", "gdal")
    full = layer.extent()
    px = full.width() / layer.width()
    # a window a little inside the scene, not on pixel edges
    extent = QgsRectangle(full.xMinimum() + 100.3 * px, full.yMinimum() + 50.6 * px,
                          full.xMinimum() + 400.2 * px, full.yMinimum() + 300.1 * px)
    vrt = sources.write_window_vrt(layer, extent, tmp_path / "view.vrt")
    window = QgsRasterLayer(str(vrt), "window", "gdal")
    assert window.isValid()
    assert window.crs() == layer.crs()
    assert window.bandCount() == layer.bandCount()
    got = window.extent()
    assert got.xMinimum() == pytest.approx(full.xMinimum() + 100 * px)
    assert got.xMaximum() == pytest.approx(full.xMinimum() + 401 * px)
    assert got.contains(extent)
    assert window.width() == 301
    # the same ground point reads the same values in both
    point = extent.center()
    for band in range(1, layer.bandCount() + 1):
        a, ok_a = layer.dataProvider().sample(point, band)
        b, ok_b = window.dataProvider().sample(point, band)
        assert ok_a and ok_b and a == b
    del window


def test_a_window_outside_the_layer_is_refused(sources, tmp_path):
    layer = QgsRasterLayer(str(NAIP), "naip", "gdal")
    full = layer.extent()
    away = QgsRectangle(full.xMaximum() + 10, full.yMaximum() + 10, full.xMaximum() + 500, full.yMaximum() + 500)
    with pytest.raises(sources.SourceError, match="not in the visible map extent"):
        sources.write_window_vrt(layer, away, tmp_path / "v.vrt")
    assert not (tmp_path / "v.vrt").exists()
