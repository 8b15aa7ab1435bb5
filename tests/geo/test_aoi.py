"""Areas of interest: reading any OGR polygon layer in any CRS, which tiles they keep, masks, bad input."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine

from rs_vlm_app.errors import UserError
from rs_vlm_app.geo.aoi import read_aoi, split_spec
from rs_vlm_app.geo.grid import GridSpec, build_windows
from tests.geo.rasters import NAIP


def naip_frame():
    with rasterio.open(NAIP) as src:
        return src.crs, src.transform, src.height, src.width


def pixel_box_in(crs_out: str, rows: tuple[float, float], cols: tuple[float, float]) -> gpd.GeoDataFrame:
    """A box of NAIP pixel rows/cols as a one-polygon GeoDataFrame reprojected to ``crs_out``."""
    crs, transform, _, _ = naip_frame()
    (x0, y0), (x1, y1) = transform @ (cols[0], rows[0]), transform @ (cols[1], rows[1])
    frame = gpd.GeoDataFrame({"name": ["area"]}, geometry=[shapely.box(x0, y1, x1, y0)], crs=crs.to_wkt())
    return frame.to_crs(crs_out)


def test_polygons_in_another_crs_keep_only_the_tiles_they_overlap(tmp_path):
    path = tmp_path / "aoi.gpkg"
    pixel_box_in("EPSG:4326", rows=(100, 200), cols=(100, 300)).to_file(path, layer="zone")
    aoi = read_aoi(f"{path}:zone")
    assert aoi.crs.to_epsg() == 4326 and aoi.features == 1 and aoi.source == f"{path}:zone"
    crs, transform, height, width = naip_frame()
    windows = build_windows(GridSpec("regular", (256,)), height, width)
    keep = aoi.window_mask(windows, transform, crs)
    assert len(windows) == 12
    # rows 100..200 lie in the first row of windows; columns 100..300 in the first two columns
    assert [tuple(w[:4]) for w in windows[keep]] == [(0, 256, 0, 256), (0, 256, 256, 512)]
    mask = aoi.raster_mask((height, width), transform, crs)
    assert mask[150, 200] and not mask[50, 200] and not mask[150, 320] and not mask[400, 600]
    assert abs(int(mask.sum()) - 100 * 200) < 0.02 * 100 * 200  # reprojected edges stay on the box


def test_several_polygons_are_unioned_and_the_only_polygon_layer_is_chosen(tmp_path):
    path = tmp_path / "two.gpkg"
    crs, transform, _, _ = naip_frame()
    a, b = (shapely.box(*(transform @ (c, r)), *(transform @ (c + 10, r - 10))) for c, r in ((0, 10), (100, 10)))
    gpd.GeoDataFrame(geometry=[a, b], crs=crs.to_wkt()).to_file(path, layer="areas")
    gpd.GeoDataFrame(geometry=[shapely.Point(0, 0)], crs=crs.to_wkt()).to_file(path, layer="points")
    aoi = read_aoi(path)
    assert aoi.features == 2 and aoi.geometry.geom_type == "MultiPolygon"
    assert aoi.geometry.area == pytest.approx(a.area + b.area)


def test_geojson_shapefile_and_geoparquet_read_too(tmp_path):
    frame = pixel_box_in("EPSG:3857", rows=(0, 50), cols=(0, 50))
    for name in ("a.geojson", "a.shp"):
        frame.to_file(tmp_path / name)
        assert read_aoi(tmp_path / name).crs.to_epsg() == 3857
    frame.to_parquet(tmp_path / "a.parquet")
    assert read_aoi(tmp_path / "a.parquet").geometry.equals(read_aoi(tmp_path / "a.shp").geometry)


def test_spec_splitting_keeps_existing_paths_whole(tmp_path):
    odd = tmp_path / "a:b.gpkg"
    odd.write_bytes(b"")
    assert split_spec(str(odd)) == (odd, None)
    assert split_spec(f"{tmp_path}/x.gpkg:layer one") == (tmp_path / "x.gpkg", "layer one")
    assert split_spec("C:aoi.gpkg") == (split_spec("C:aoi.gpkg")[0], None)


@pytest.mark.parametrize("case, message", [
    ("missing", "file not found"),
    ("layer", "has no layer 'nope'; its layers: zone"),
    ("empty", "has no features"),
    ("points", "holds no polygons (Point)"),
    ("invalid", "polygon 1 is invalid (Self-intersection"),
    ("text", "not a vector file OGR can read"),
])
def test_bad_areas_are_one_line_naming_the_file(tmp_path, case, message):
    path = tmp_path / "aoi.gpkg"
    spec = str(path)
    if case == "layer":
        pixel_box_in("EPSG:4326", (0, 10), (0, 10)).to_file(path, layer="zone")
        spec = f"{path}:nope"
    elif case == "empty":
        gpd.GeoDataFrame({"name": []}, geometry=[], crs="EPSG:4326").to_file(path, layer="zone")
    elif case == "points":
        gpd.GeoDataFrame(geometry=[shapely.Point(1, 2)], crs="EPSG:4326").to_file(path)
    elif case == "invalid":
        bowtie = shapely.Polygon([(0, 0), (1, 1), (1, 0), (0, 1)])
        gpd.GeoDataFrame(geometry=[bowtie], crs="EPSG:4326").to_file(path)
    elif case == "text":
        path = tmp_path / "aoi.txt"
        path.write_text("not a vector")
        spec = str(path)
    with pytest.raises(UserError) as info:
        read_aoi(spec)
    text = str(info.value)
    assert message in text and "\n" not in text and str(path) in text


def test_an_area_away_from_the_scene_is_refused(tmp_path):
    path = tmp_path / "far.gpkg"
    gpd.GeoDataFrame(geometry=[shapely.box(10, 10, 11, 11)], crs="EPSG:4326").to_file(path)
    aoi = read_aoi(path)
    crs, transform, height, width = naip_frame()
    windows = build_windows(GridSpec("regular", (256,)), height, width)
    assert not aoi.window_mask(windows, transform, crs).any()
    with pytest.raises(UserError, match="does not intersect the scene"):
        aoi.select_windows(windows, transform, crs, scene=NAIP)
    with pytest.raises(UserError, match="does not intersect the scene"):
        aoi.check_scene((0, 0, 1, 1), crs, scene=NAIP)


def test_an_area_without_crs_on_a_georeferenced_scene_is_refused(tmp_path):
    path = tmp_path / "nocrs.gpkg"
    with pytest.warns(UserWarning, match="'crs' was not provided"):
        gpd.GeoDataFrame(geometry=[shapely.box(0, 0, 5, 5)]).to_file(path)
    aoi = read_aoi(path)
    assert aoi.crs is None
    with pytest.raises(UserError, match="has no coordinate reference system"):
        aoi.in_crs("EPSG:26914")
    # on a raster without georeferencing the coordinates are that raster's frame
    assert aoi.window_mask(np.array([[0, 4, 0, 4, 4], [10, 14, 10, 14, 4]]), Affine.identity(), None).tolist() \
        == [True, False]
