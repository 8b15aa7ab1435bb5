"""Hot spots: the connected regions of a heat map above a threshold, as georeferenced polygons."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely
from affine import Affine
from rasterio.crs import CRS
from rasterio.features import shapes
from scipy import ndimage

EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


@dataclass
class HotSpot:
    polygon: shapely.Polygon
    score: float        # peak of the normalised heat map inside the region (0..1)
    mean_score: float   # mean of the normalised heat map inside the region
    peak_x: float       # map coordinates of the peak pixel's centre
    peak_y: float
    area: float         # square metres when georeferenced, square pixels otherwise


def find_hotspots(heat: np.ndarray, transform: Affine, crs: CRS | None, *, threshold: float,
                  min_pixels: int = 1) -> list[HotSpot]:
    """Regions where ``heat`` (NaN = nodata) is >= threshold, strongest first.

    transform maps heat-map pixels to the scene's CRS (to scene pixel coordinates when the scene is
    not georeferenced). Regions smaller than ``min_pixels`` heat-map pixels are dropped as specks.
    """
    above = np.nan_to_num(heat, nan=-1.0) >= threshold
    labels, n = ndimage.label(above, structure=EIGHT_CONNECTED)
    if n == 0:
        return []
    index = np.arange(1, n + 1)
    sizes = ndimage.sum_labels(above, labels, index)
    means = ndimage.mean(heat, labels, index)
    boxes = ndimage.find_objects(labels)
    polygons: dict[int, list] = {}
    for geom, value in shapes(labels.astype(np.int32), mask=above, connectivity=8, transform=transform):
        polygons.setdefault(int(value), []).append(shapely.geometry.shape(geom))
    spots = []
    for i, label in enumerate(index):
        if sizes[i] < min_pixels:
            continue
        polygon = shapely.union_all(polygons[int(label)])
        peak, row, col = _peak(heat, labels, int(label), boxes[i])
        px, py = transform @ (col + 0.5, row + 0.5)
        spots.append(HotSpot(polygon, peak, float(means[i]), px, py, polygon_area(polygon, crs)))
    spots.sort(key=lambda s: s.score, reverse=True)
    return spots


def _peak(heat: np.ndarray, labels: np.ndarray, label: int, box: tuple[slice, slice]) -> tuple[float, int, int]:
    """The highest value of region ``label`` and its pixel (row, col), searched in its bounding box only."""
    inside = np.where(labels[box] == label, heat[box], -np.inf)
    r, c = np.unravel_index(int(np.argmax(inside)), inside.shape)
    return float(inside[r, c]), box[0].start + int(r), box[1].start + int(c)


def polygon_area(polygon: shapely.Geometry, crs: CRS | None) -> float:
    """Area in square metres (geodesic for geographic CRSs), or in square pixels without a CRS."""
    if crs is None:
        return float(polygon.area)
    if crs.is_geographic:
        from pyproj import CRS as ProjCRS
        from pyproj import Geod

        geod = ProjCRS.from_wkt(crs.to_wkt()).get_geod() or Geod(ellps="WGS84")
        return float(abs(geod.geometry_area_perimeter(polygon)[0]))
    _, metres_per_unit = crs.linear_units_factor
    return float(polygon.area * metres_per_unit**2)
