"""Writers: GeoTIFF / COG / GeoPackage read back with rasterio and pyogrio, atomic on failure."""

from __future__ import annotations

import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
from affine import Affine
from rasterio.windows import Window
from rasterio.windows import bounds as window_bounds

from rs_vlm_app.geo.raster import PIXEL_TRANSFORM, open_raster
from rs_vlm_app.geo.writers import (
    VectorLayer,
    overview_factors,
    scaled_transform,
    window_polygon,
    window_polygons,
    write_geotiff,
    write_geotiff_blocks,
    write_gpkg,
)
from tests.geo.rasters import NAIP


@pytest.fixture(scope="module")
def naip():
    with open_raster(NAIP) as src:
        yield {"crs": src.crs, "transform": src.transform, "height": src.height, "width": src.width,
               "bounds": src.bounds}


def heat(height: int, width: int) -> np.ndarray:
    rows, cols = np.mgrid[0:height, 0:width]
    return (np.sin(rows / 40.0) * np.cos(cols / 55.0)).astype(np.float32)


def test_float_heat_map_lies_exactly_on_the_scene(tmp_path, naip):
    array = heat(naip["height"], naip["width"])
    array[:10, :10] = -1
    out = write_geotiff(tmp_path / "heat.tif", array, crs=naip["crs"], transform=naip["transform"], nodata=-1,
                        band_descriptions=["similarity"], tags={"query": "a lake", "model": "tiny"})
    assert out == tmp_path / "heat.tif"
    with rasterio.open(out) as ds:
        assert ds.crs == naip["crs"] and ds.transform == naip["transform"]
        assert tuple(ds.bounds) == pytest.approx(naip["bounds"])
        assert (ds.height, ds.width, ds.count, ds.dtypes[0]) == (723, 934, 1, "float32")
        assert ds.nodata == -1
        assert ds.block_shapes[0] == (256, 256) and ds.profile["tiled"]
        assert ds.compression.name == "deflate"
        assert ds.tags(ns="IMAGE_STRUCTURE")["PREDICTOR"] == "3"
        assert ds.overviews(1) == [2, 4]
        assert ds.descriptions == ("similarity",)
        assert ds.tags()["query"] == "a lake" and ds.tags()["model"] == "tiny"
        np.testing.assert_array_equal(ds.read(1), array)
        overview = ds.read(1, out_shape=(181, 234))  # the x4 overview: averaged, not picked
        assert overview.shape == (181, 234)
        assert len(np.unique(overview)) > 1000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["heat.tif"]


def test_class_raster_with_colormap_uses_nearest_overviews(tmp_path, naip):
    classes = np.where(heat(naip["height"], naip["width"]) > 0, 10, 0).astype(np.uint8)
    colormap = {0: (0, 0, 0, 255), 10: (255, 0, 0, 255)}
    out = write_geotiff(tmp_path / "classes.tif", classes, crs=naip["crs"], transform=naip["transform"],
                        colormap=colormap)
    with rasterio.open(out) as ds:
        assert ds.colormap(1)[10] == (255, 0, 0, 255) and ds.colormap(1)[0] == (0, 0, 0, 255)
        assert ds.tags(ns="IMAGE_STRUCTURE")["PREDICTOR"] == "2"
        overview = ds.read(1, out_shape=(181, 234))
    assert set(np.unique(overview).tolist()) == {0, 10}  # nearest: no invented classes


def test_cog(tmp_path, naip):
    bands = np.stack([heat(naip["height"], naip["width"]), -heat(naip["height"], naip["width"])])
    out = write_geotiff(tmp_path / "heat_cog.tif", bands, crs=naip["crs"], transform=naip["transform"],
                        cog=True, nodata=-9, band_descriptions=["a", "b"], tags={"query": "q"})
    with rasterio.open(out) as ds:
        assert ds.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert ds.crs == naip["crs"] and ds.transform == naip["transform"] and ds.nodata == -9
        assert ds.overviews(1) and ds.compression.name == "deflate"
        assert ds.descriptions == ("a", "b") and ds.tags()["query"] == "q"
        np.testing.assert_array_equal(ds.read(), bands)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["heat_cog.tif"]


def test_pixel_coordinates_without_crs(tmp_path):
    array = np.arange(300 * 200, dtype=np.uint16).reshape(300, 200)
    out = write_geotiff(tmp_path / "pixels.tif", array, crs=None, transform=PIXEL_TRANSFORM)
    with rasterio.open(out) as ds:
        assert ds.crs is None and ds.transform == PIXEL_TRANSFORM
        assert tuple(ds.bounds) == (0.0, -300.0, 200.0, 0.0)
        np.testing.assert_array_equal(ds.read(1), array)


def test_block_writers_build_the_same_raster_as_the_array(tmp_path, naip):
    array = heat(naip["height"], naip["width"])
    expected = write_geotiff(tmp_path / "whole.tif", array, crs=naip["crs"], transform=naip["transform"])

    def pieces():
        for row in range(0, 723, 100):
            for col in range(0, 934, 300):
                window = Window(col, row, min(300, 934 - col), min(100, 723 - row))
                yield window, array[row:row + int(window.height), col:col + int(window.width)]

    calls = []

    def compute(window: Window) -> np.ndarray:
        calls.append(window)
        return array[window.row_off:window.row_off + window.height, window.col_off:window.col_off + window.width]

    common = {"height": 723, "width": 934, "count": 1, "dtype": "float32", "crs": naip["crs"],
              "transform": naip["transform"]}
    from_iterator = write_geotiff_blocks(tmp_path / "pieces.tif", pieces(), **common)
    from_callable = write_geotiff_blocks(tmp_path / "computed.tif", compute, cog=True, **common)
    assert len(calls) == 3 * 4  # once per internal 256 x 256 block
    with rasterio.open(expected) as a, rasterio.open(from_iterator) as b, rasterio.open(from_callable) as c:
        np.testing.assert_array_equal(a.read(), b.read())
        np.testing.assert_array_equal(a.read(), c.read())
        assert b.overviews(1) == a.overviews(1) == [2, 4]


def test_failed_write_leaves_nothing_behind(tmp_path, naip):
    target = tmp_path / "out" / "heat.tif"
    target.parent.mkdir()

    def broken():
        yield Window(0, 0, 934, 100), np.zeros((100, 934), np.float32)
        raise RuntimeError("the model crashed")

    common = {"height": 723, "width": 934, "count": 1, "dtype": "float32", "crs": naip["crs"],
              "transform": naip["transform"]}
    for cog in (False, True):
        with pytest.raises(RuntimeError, match="the model crashed"):
            write_geotiff_blocks(target, broken(), cog=cog, **common)
        assert list(target.parent.iterdir()) == []
    # an existing output survives a failed rewrite untouched
    write_geotiff(target, np.ones((723, 934), np.float32), crs=naip["crs"], transform=naip["transform"])
    with pytest.raises(RuntimeError):
        write_geotiff_blocks(target, broken(), **common)
    with rasterio.open(target) as ds:
        assert ds.read(1).min() == 1
    assert [p.name for p in target.parent.iterdir()] == ["heat.tif"]


def test_overview_factors():
    assert overview_factors(723, 934) == [2, 4]
    assert overview_factors(40000, 40000) == [2, 4, 8, 16, 32, 64, 128, 256]
    assert overview_factors(200, 250) == []


def test_scaled_transform_keeps_the_footprint(naip):
    small = scaled_transform(naip["transform"], 934, 723, 117, 91)
    assert small @ (0, 0) == naip["transform"] @ (0, 0)
    assert small @ (117, 91) == pytest.approx(naip["transform"] @ (934, 723))


@pytest.mark.filterwarnings("ignore:Use `@` matmul:PendingDeprecationWarning")  # inside rasterio.windows
def test_window_polygons_match_rasterio_window_bounds(naip):
    transform = naip["transform"]
    windows = np.array([[0, 256, 0, 256, 256], [467, 723, 678, 934, 256], [100, 868, 50, 818, 768]])
    polygons = window_polygons(transform, windows)
    for polygon, (row0, row1, col0, col1, _s) in zip(polygons, windows.tolist(), strict=True):
        expected = window_bounds(Window(col0, row0, col1 - col0, row1 - row0), transform)
        assert polygon.bounds == pytest.approx(expected)
        assert polygon.equals(window_polygon(transform, row0, row1, col0, col1))
        assert polygon.area == pytest.approx(((row1 - row0) * 5.0) * ((col1 - col0) * 5.0))
    rotated = Affine(2.0, 1.0, 10.0, 0.5, -2.0, 20.0)
    polygon = window_polygon(rotated, 0, 10, 0, 10)
    assert polygon.exterior.coords[2] == pytest.approx(rotated @ (10, 10))


def test_gpkg_layers_fields_and_crs(tmp_path, naip):
    windows = np.array([[0, 256, 0, 256, 256], [256, 512, 0, 256, 256], [0, 512, 0, 512, 512]])
    tiles = VectorLayer(
        name="tile_scores",
        geometries=window_polygons(naip["transform"], windows),
        fields={"score": np.array([0.25, 0.5, 0.75], np.float32), "scale": windows[:, 4],
                "caption": ["a lake", "fields", "a lake near fields"], "hot": np.array([True, False, True])},
        geometry_type="Polygon",
    )
    hot_spots = VectorLayer(
        name="hot_spots",
        geometries=[shapely.box(485899, 5205631, 486899, 5206631)],
        fields={"rank": [1], "peak": [0.9]}, geometry_type="MultiPolygon",
    )
    empty = VectorLayer(name="no_hits", geometries=[],
                        fields={"rank": np.array([], np.int64), "label": np.array([], str)},
                        geometry_type="MultiPolygon")
    out = write_gpkg(tmp_path / "result.gpkg", [tiles, hot_spots, empty], crs=naip["crs"])
    layers = {name: kind for name, kind in pyogrio.list_layers(out)}
    assert layers == {"tile_scores": "Polygon", "hot_spots": "MultiPolygon", "no_hits": "MultiPolygon"}
    info = pyogrio.read_info(out, layer="tile_scores")
    assert info["crs"] == "EPSG:26914" and info["features"] == 3
    assert dict(zip(info["fields"], info["dtypes"], strict=True)) == {
        "score": "float64", "scale": "int64", "caption": "object", "hot": "bool"}
    _meta, _fids, geometry, values = pyogrio.raw.read(out, layer="tile_scores")
    assert values[0].tolist() == [0.25, 0.5, 0.75] and values[1].tolist() == [256, 256, 512]
    assert values[2].tolist() == ["a lake", "fields", "a lake near fields"]
    got = shapely.from_wkb(geometry)
    assert all(g.equals(e) for g, e in zip(got, tiles.geometries, strict=True))
    _meta, _fids, geometry, _values = pyogrio.raw.read(out, layer="hot_spots")
    assert shapely.from_wkb(geometry)[0].geom_type == "MultiPolygon"
    info = pyogrio.read_info(out, layer="no_hits")
    assert info["features"] == 0 and list(info["fields"]) == ["rank", "label"]
    assert list(info["dtypes"]) == ["int64", "object"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.gpkg"]


def test_gpkg_without_crs_and_failure_leaves_nothing(tmp_path):
    points = VectorLayer("peaks", [shapely.Point(10, -20)], {"value": [3]}, "Point")
    out = write_gpkg(tmp_path / "pixels.gpkg", [points], crs=None)
    assert pyogrio.read_info(out, layer="peaks")["crs"] is None
    bad = VectorLayer("bad", [shapely.Point(0, 0), shapely.Point(1, 1)], {"value": [1]}, "Point")
    with pytest.raises(ValueError, match="field 'value' has 1 values for 2 geometries"):
        write_gpkg(tmp_path / "bad.gpkg", [points, bad], crs=None)
    # failure while writing the second layer: no half-written file
    unwritable = VectorLayer("worse", [shapely.Point(0, 0)], {"value": [1]}, "NotAGeometryType")
    with pytest.raises(Exception):  # noqa: B017 - pyogrio's own error type
        write_gpkg(tmp_path / "worse.gpkg", [points, unwritable], crs=None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pixels.gpkg"]
