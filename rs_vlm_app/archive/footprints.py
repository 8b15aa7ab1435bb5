"""Tile footprints of a scene: in its own CRS and in EPSG:4326 (lon, lat), edges densified so a
straight edge in a projected CRS may curve in geographic coordinates."""

from __future__ import annotations

import numpy as np
import shapely
from affine import Affine

from rs_vlm_app.geo.writers import window_polygons

#: Each tile edge is cut into this many pieces before reprojection.
EDGE_PIECES = 4


def native_footprints(transform: Affine, windows: np.ndarray) -> np.ndarray:
    """Polygons of ``windows`` ((N, >=4) row0, row1, col0, col1) in the scene's CRS."""
    return window_polygons(transform, windows)


def to_lonlat(polygons: np.ndarray, crs_wkt: str) -> np.ndarray:
    """``polygons`` from the CRS ``crs_wkt`` to EPSG:4326 in (lon, lat) order."""
    from pyproj import CRS, Transformer

    source = CRS.from_wkt(crs_wkt)
    if len(polygons) == 0:
        return np.asarray(polygons, dtype=object)
    transformer = Transformer.from_crs(source, CRS.from_epsg(4326), always_xy=True)
    bounds = shapely.bounds(polygons)
    side = float(np.max(np.maximum(bounds[:, 2] - bounds[:, 0], bounds[:, 3] - bounds[:, 1])))
    dense = shapely.segmentize(polygons, side / EDGE_PIECES) if side > 0 else polygons

    def forward(xy: np.ndarray) -> np.ndarray:
        x, y = transformer.transform(xy[:, 0], xy[:, 1])
        return np.column_stack([x, y])

    return shapely.transform(dense, forward)


def lonlat_bounds(crs_wkt: str, transform: Affine, width: int, height: int) -> list[float]:
    """The scene's bounding box in EPSG:4326: [west, south, east, north]."""
    whole = to_lonlat(native_footprints(transform, np.array([[0, height, 0, width]])), crs_wkt)[0]
    return [float(v) for v in whole.bounds]
