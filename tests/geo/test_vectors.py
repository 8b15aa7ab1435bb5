"""Vector outputs through geopandas: the extension chooses GeoPackage, GeoParquet or GeoJSON, and each
reads back with the same geometries, typed fields and CRS."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
from pyproj import CRS

from rs_vlm_app.errors import UserError
from rs_vlm_app.geo.vectors import read_vector, vector_format
from rs_vlm_app.geo.writers import VectorLayer, write_gpkg


def tiles() -> VectorLayer:
    return VectorLayer(
        name="tiles",
        geometries=[shapely.box(500000, 5199000, 500100, 5199100), shapely.box(500100, 5199000, 500200, 5199100)],
        fields={"rank": np.array([1, 2]), "score": np.array([0.9, 0.25]), "caption": ["a lake", "a road"],
                "complete": np.array([True, False])},
        geometry_type="Polygon",
    )


@pytest.mark.parametrize("name", ["out.gpkg", "out.parquet", "out.geojson"])
def test_each_format_reads_back_the_same_layer(tmp_path, name):
    path = write_gpkg(tmp_path / name, [tiles()], crs="EPSG:26914")
    frame = read_vector(path, "tiles" if name.endswith(".gpkg") else None)
    assert CRS.from_user_input(frame.crs) == CRS.from_epsg(26914)
    assert list(frame["rank"]) == [1, 2] and frame["rank"].dtype.kind == "i"
    assert list(frame["score"]) == [0.9, 0.25] and list(frame["caption"]) == ["a lake", "a road"]
    assert list(frame["complete"]) == [True, False]
    assert frame.geometry[1].equals(shapely.box(500100, 5199000, 500200, 5199100))
    assert not list(tmp_path.glob(".*tmp*"))


def test_one_layer_formats_refuse_two_layers_and_unknown_extensions(tmp_path):
    other = VectorLayer("hotspots", [], {"rank": np.array([], dtype=np.int64)}, "MultiPolygon")
    with pytest.raises(UserError, match="GeoParquet holds one layer, this output has 2; use .gpkg"):
        write_gpkg(tmp_path / "x.parquet", [tiles(), other], crs="EPSG:26914")
    with pytest.raises(UserError, match=r"unknown vector format '\.shpx'"):
        vector_format(tmp_path / "x.shpx")
    assert not list(tmp_path.iterdir())


def test_reading_names_the_missing_file_or_layer(tmp_path):
    with pytest.raises(UserError, match="file not found"):
        read_vector(tmp_path / "none.gpkg")
    path = write_gpkg(tmp_path / "a.gpkg", [tiles()], crs=None)
    with pytest.raises(UserError, match="has no layer 'hotspots'; its layers: tiles"):
        read_vector(path, "hotspots")
    assert read_vector(path).crs is None
