"""Hot spots: the connected regions of a heat map above a threshold, as georeferenced polygons."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import shapely
from affine import Affine
from rasterio.crs import CRS
from rasterio.features import shapes


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
    labels, boxes = label_regions(above)
    n = len(boxes)
    if n == 0:
        return []
    index = np.arange(1, n + 1)
    flat = labels.ravel()
    counts = np.bincount(flat, minlength=n + 1)
    sizes = counts[index]
    # the mean as scipy.ndimage.mean computes it: float64 bincount sums over the counts
    means = (np.bincount(flat, weights=np.asarray(heat).ravel(), minlength=n + 1)
             / counts.astype(np.float64))[index]
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


def label_regions(mask: np.ndarray) -> tuple[np.ndarray, list[tuple[slice, slice]]]:
    """8-connected regions of a boolean (H, W) mask: int32 labels (0 = outside, 1..n numbered in raster
    order of each region's first pixel, as scipy.ndimage.label numbers them) and each region's
    bounding box (row and column slices, as scipy.ndimage.find_objects gives them).

    OpenCV labels the regions (its numbering follows its own scan order, which may differ), then they
    are renumbered; OpenCV instead of scipy.ndimage because importing the latter costs a second."""
    mask = np.ascontiguousarray(mask, dtype=bool)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.view(np.uint8), connectivity=8,
                                                                ltype=cv2.CV_32S)
    if count <= 1:
        return np.zeros(mask.shape, np.int32), []
    top, left = stats[1:, cv2.CC_STAT_TOP], stats[1:, cv2.CC_STAT_LEFT]
    width, height = stats[1:, cv2.CC_STAT_WIDTH], stats[1:, cv2.CC_STAT_HEIGHT]
    # a region's first pixel in raster order: its leftmost pixel in its top row
    first = np.array([left[k] + int(np.argmax(labels[top[k], left[k]:left[k] + width[k]] == k + 1))
                      for k in range(count - 1)])
    order = np.lexsort((first, top))  # OpenCV's label - 1, in scipy's order
    renumber = np.zeros(count, np.int32)
    renumber[order + 1] = np.arange(1, count, dtype=np.int32)
    boxes = [(slice(int(top[k]), int(top[k] + height[k])), slice(int(left[k]), int(left[k] + width[k])))
             for k in order]
    return renumber[labels], boxes


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
