"""Semantic-localization (SeLo) metrics Rsu, Ras, Rda and Rmi, number for number as published.

The definitions are those of the SemanticLocalizationMetrics project (Yuan et al., the AIR-SLT
benchmark), as vendored in the RS5M / GeoRSCLIP evaluation code (class ``SLM`` in
``inference/inference_tool.py``). This is our own implementation of them; every arithmetic step
that changes a number (truncations, filter sizes and borders, orderings) follows the reference, and
the places where the reference does something surprising are noted where they happen.

- Rsu (up, 0..1): probability mass inside the ground-truth polygons against the mass outside,
  scaled by (background area / polygon area).
- Ras (down, 0..1): how far the attention centres of the map lie from the polygons' centres.
- Rda (up, 0..1): whether the attention near each polygon gathers in one point.
- Rmi (up, 0..1): 0.4 Rsu + 0.35 (1 - Ras) + 0.25 Rda.

Reference quirk to know before comparing numbers: the reference never sees a float map. It writes
its probability map as an 8-bit JPEG and scores the decoded file (``cv2.imread(path,
IMREAD_GRAYSCALE) / 255.0``). Use :func:`probmap_from_gray` on such 8-bit data to get its numbers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np
from scipy import ndimage

METRIC_NAMES = ("Rsu", "Ras", "Rda", "Rmi")

RSU_BETA = 0.707
RSU_EPS = 1e-7
RAS_RADIUS_FACTOR = 1.5
RAS_BOX_PASSES = 5
RAS_BOX_SIZE = 50
RAS_PEAK_WINDOW = 1000
RAS_MIN_PROB = 0.5
RAS_SCALE_BETA = 3.0
RDA_ETA = 0.5
RMI_WEIGHTS = {"Rsu": 0.4, "Ras": 0.35, "Rda": 0.25}

_ROWS_PER_CHUNK = 1024  # bounds the float temporaries when converting huge maps to 8 bit
_INT32_LIMIT = 2**31


def probmap_from_gray(gray_uint8: np.ndarray) -> np.ndarray:
    """An 8-bit grayscale map as probabilities (value / 255.0, float64), as the reference reads it."""
    gray = np.asarray(gray_uint8)
    if gray.dtype != np.uint8:
        raise ValueError(f"probmap_from_gray needs 8-bit data (uint8), got {gray.dtype}")
    if gray.ndim != 2:
        raise ValueError(f"probmap_from_gray needs a 2-D grayscale array, got shape {gray.shape}")
    return gray / 255.0


def selo_metrics(probmap: np.ndarray, polygons: Sequence[Sequence[Sequence[float]]]) -> dict[str, float]:
    """Rsu, Ras, Rda and Rmi of one probability map against its ground-truth polygons.

    probmap: H x W array of probabilities in [0, 1] (computed in float64).
    polygons: the sample's polygons, each a list of at least 3 ``[x, y]`` = ``[column, row]`` pixel
    points, as ``points`` in AIR-SLT ``anno.json``. Points may lie outside the image.
    Raises ValueError for an input the metrics are not defined for (where the reference would
    return NaN or divide by zero: polygons covering no pixel, a polygon whose radius is 0).

    Reference behaviour kept on purpose: Rsu is 0 when the polygons cover the whole map (no
    background); a polygon with exactly one attention centre anywhere within its radius scores Rda 1;
    attention centres are searched on an 8-bit copy of the map (see :func:`probability_centres`).
    A 10k x 10k map takes about 5 s on an idle CPU core, half of it the 1000 x 1000 maximum filter.
    """
    prob = _checked_probmap(probmap)
    regions = _checked_polygons(polygons)
    mask = polygon_mask(prob.shape, regions)
    if not mask.any():
        raise ValueError(f"the polygons cover no pixel of the {prob.shape[1]} x {prob.shape[0]} map")
    circles = [region_centre_radius(region) for region in regions]
    for index, (_, _, radius) in enumerate(circles):
        if radius == 0:
            raise ValueError(f"polygon {index} is too small: its Ras/Rda radius (1.5 x the mean vertex "
                             "distance to its centre, truncated) is 0 px")
    centres = _probability_centres(prob)
    rsu = _rsu(prob, mask)
    ras = _ras(circles, centres)
    rda = _rda(circles, centres)
    rmi = RMI_WEIGHTS["Rsu"] * rsu + RMI_WEIGHTS["Ras"] * (1 - ras) + RMI_WEIGHTS["Rda"] * rda
    return {"Rsu": float(rsu), "Ras": float(ras), "Rda": float(rda), "Rmi": float(rmi)}


def mean_metrics(per_sample: Sequence[dict[str, float]]) -> dict[str, float]:
    """The per-metric mean over samples (the benchmark's reported numbers)."""
    if len(per_sample) == 0:
        raise ValueError("mean_metrics needs at least one sample")
    for index, sample in enumerate(per_sample):
        missing = [name for name in METRIC_NAMES if name not in sample]
        if missing:
            raise ValueError(f"sample {index} lacks the metric(s) {', '.join(missing)}")
    return {name: float(np.mean([sample[name] for sample in per_sample])) for name in METRIC_NAMES}


def polygon_mask(shape: tuple[int, int], polygons: Sequence[np.ndarray]) -> np.ndarray:
    """The ground-truth mask (uint8, 1 inside): cv2.fillPoly of the points truncated to int32.

    As the reference: coordinates are truncated towards zero, not rounded; the pixels of the outlines
    count as inside; all polygons are filled in one fillPoly call, which fills by the even-odd rule:
    where two polygons overlap, the overlap's interior is left out, and a self-intersecting outline
    (AIR-SLT has some) loses the parts it crosses an even number of times.
    """
    mask = np.zeros(shape, dtype=np.uint8)
    cv2.fillPoly(mask, [np.asarray(region, dtype=np.float64).astype(np.int32) for region in polygons], 1)
    return mask


def region_centre_radius(polygon: Sequence[Sequence[float]]) -> tuple[int, int, int]:
    """A polygon's centre and search radius for Ras and Rda: ``(x, y, r)`` in whole pixels.

    As the reference: the centre is the vertex mean truncated to int (not the centroid of the area,
    so repeated or unevenly spaced vertices pull it), and r is 1.5 x the mean distance of the
    vertices to that truncated centre, truncated to int.
    """
    points = np.asarray(polygon, dtype=np.float64)
    centre_x = int(_sum_in_order(points[:, 0]) / len(points))
    centre_y = int(_sum_in_order(points[:, 1]) / len(points))
    centre = np.array([centre_x, centre_y])
    distances = [np.linalg.norm(point - centre) for point in points]
    radius = int(np.mean(distances) * RAS_RADIUS_FACTOR)
    return centre_x, centre_y, radius


def probability_centres(prob: np.ndarray) -> list[tuple[int, int]]:
    """The map's attention centres ``(x, y)``, most probable first, as the reference finds them.

    Steps (all as the reference): 8-bit map ``uint8(prob * 255)`` by truncation (exact for a map
    read as g / 255; a float map loses its fractions here, not by rounding); five passes of a
    50 x 50 mean filter on the 8-bit map (OpenCV boxFilter, 8-bit result, reflect-101 border; the
    even kernel moves every feature by +0.5 px per pass, +2.5 px in all); keep the pixels that equal
    the maximum of the 1000 x 1000 window around them and are not 0; each 8-connected group of such
    pixels gives one centre, its pixel-coordinate mean truncated to int. Centres are ordered by the
    original probability at the centre, descending (ties in raster order of the group's first
    pixel), and those with a probability below 0.5 are dropped. A flat map therefore yields one
    centre in its middle, and the centre of a ring-shaped group can lie outside the group.
    """
    return _probability_centres(_checked_probmap(prob))


def _probability_centres(prob: np.ndarray) -> list[tuple[int, int]]:
    smooth = _to_gray_truncated(prob)
    for _ in range(RAS_BOX_PASSES):
        smooth = cv2.boxFilter(smooth, -1, (RAS_BOX_SIZE, RAS_BOX_SIZE))
    # The reference uses scipy's default "reflect" border. Mirrored pixels always lie inside the
    # window already, so this is the plain maximum over the window clipped to the image.
    window_max = ndimage.maximum_filter(smooth, size=RAS_PEAK_WINDOW)
    peaks = (smooth == window_max) & (smooth > 0)
    del window_max
    centres = _group_centres(peaks)
    centres.sort(key=lambda c: prob[c[1], c[0]], reverse=True)  # stable, as list.sort in the reference
    return [c for c in centres if prob[c[1], c[0]] >= RAS_MIN_PROB]


def _group_centres(peaks: np.ndarray) -> list[tuple[int, int]]:
    """``(x, y)`` of each 8-connected group of True pixels: coordinate mean truncated to int.

    Groups come in raster order of their first pixel (scipy's label numbering, the same as
    skimage's measure.label used by the reference).
    """
    labels, count = ndimage.label(peaks, structure=np.ones((3, 3), dtype=bool))
    if count == 0:
        return []
    flat_index = np.flatnonzero(labels)
    group = labels.ravel()[flat_index]
    rows, cols = np.divmod(flat_index, labels.shape[1])
    sizes = np.bincount(group, minlength=count + 1)[1:]
    # Sums of whole pixel coordinates are exact in float64, so sum / size rounds exactly as the
    # reference's coordinate mean does.
    mean_rows = np.bincount(group, weights=rows, minlength=count + 1)[1:] / sizes
    mean_cols = np.bincount(group, weights=cols, minlength=count + 1)[1:] / sizes
    return [(int(x), int(y)) for x, y in zip(mean_cols, mean_rows, strict=True)]


def _rsu(prob: np.ndarray, mask: np.ndarray) -> float:
    inside = mask.astype(bool)
    mass_in = float(np.sum(prob, where=inside))
    # The reference takes sum(all) - sum(inside); summing the outside directly is the same number
    # up to rounding, and exactly 0 when nothing lies outside.
    mass_out = float(np.sum(prob, where=~inside))
    area_in = int(np.count_nonzero(inside))
    area_out = inside.size - area_in
    ratio = mass_in / (mass_out + RSU_EPS) * (area_out / area_in)
    # Reference quirk: polygons covering the whole image give area_out = 0 and Rsu = 0.
    return 1.0 - math.exp(-RSU_BETA * ratio)


def _ras(circles: list[tuple[int, int, int]], centres: list[tuple[int, int]]) -> float:
    relative_offsets = []
    for x, y, radius in circles:
        near = _distances_within(x, y, radius, centres)
        # Reference: the mean distance of ALL centres within the radius, or the radius when none.
        offset = np.mean(near) if near else radius
        relative_offsets.append(offset / radius)
    granular = np.mean(relative_offsets)
    return float((np.exp(RAS_SCALE_BETA * granular) - 1) / (np.exp(RAS_SCALE_BETA) - 1))


def _rda(circles: list[tuple[int, int, int]], centres: list[tuple[int, int]]) -> float:
    scores = []
    for x, y, radius in circles:
        near = [c for c in centres if _distance(x, y, c) <= radius]
        if len(near) <= 1:
            # Reference quirk: one centre anywhere within the radius scores 1, however far off.
            scores.append(float(len(near)))
            continue
        points = np.asarray(near)
        mean_point = np.average(points, axis=0)
        spread = np.mean([np.linalg.norm(mean_point - point) for point in points]) / radius
        scores.append(0.5 * (1 - spread) + np.exp(-RDA_ETA * (len(near) + 2)))
    return float(np.mean(scores))


def _distances_within(x: int, y: int, radius: int, centres: list[tuple[int, int]]) -> list[float]:
    distances = [_distance(x, y, c) for c in centres]
    return [d for d in distances if d <= radius]


def _distance(x: int, y: int, centre: tuple[int, int]) -> float:
    # Whole-pixel differences: dx^2 + dy^2 is exact, so this equals the reference's linalg.norm.
    return math.sqrt((x - centre[0]) ** 2 + (y - centre[1]) ** 2)


def _sum_in_order(values: np.ndarray) -> float:
    """Left-to-right float sum (the reference's functools.reduce), not numpy's pairwise sum."""
    total = 0.0
    for value in values:
        total += float(value)
    return total


def _to_gray_truncated(prob: np.ndarray) -> np.ndarray:
    """``uint8(prob * 255.0)`` with truncation, in row chunks to bound the float temporaries."""
    gray = np.empty(prob.shape, dtype=np.uint8)
    for start in range(0, prob.shape[0], _ROWS_PER_CHUNK):
        stop = start + _ROWS_PER_CHUNK
        gray[start:stop] = prob[start:stop] * 255.0
    return gray


def _checked_probmap(probmap: np.ndarray) -> np.ndarray:
    prob = np.asarray(probmap)
    if prob.ndim != 2:
        raise ValueError(f"the probability map must be a 2-D (H x W) array, got shape {prob.shape}")
    if prob.size == 0:
        raise ValueError(f"the probability map is empty (shape {prob.shape})")
    if not (np.issubdtype(prob.dtype, np.floating) or np.issubdtype(prob.dtype, np.integer)
            or prob.dtype == np.bool_):
        raise ValueError(f"the probability map must hold numbers, got dtype {prob.dtype}")
    prob = prob.astype(np.float64, copy=False)
    low, high = float(prob.min()), float(prob.max())
    if not (low >= 0.0 and high <= 1.0):  # also false for NaN
        raise ValueError(f"probabilities must lie in [0, 1], got values from {low} to {high}"
                         " (an 8-bit map needs probmap_from_gray)")
    return prob


def _checked_polygons(polygons: Sequence[Sequence[Sequence[float]]]) -> list[np.ndarray]:
    if isinstance(polygons, np.ndarray) and polygons.dtype != object:
        polygons = list(polygons)
    if len(polygons) == 0:
        raise ValueError("the sample has no ground-truth polygon")
    regions = []
    for index, polygon in enumerate(polygons):
        try:
            points = np.asarray(polygon, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"polygon {index} is not a list of [x, y] points: {exc}") from None
        if points.ndim != 2 or points.shape[1] != 2:
            raise ValueError(f"polygon {index} must be a list of [x, y] points, got shape {points.shape}")
        if len(points) < 3:
            raise ValueError(f"polygon {index} has {len(points)} point(s); a polygon needs at least 3")
        if not np.isfinite(points).all() or np.abs(points).max() >= _INT32_LIMIT:
            raise ValueError(f"polygon {index} has a non-finite or out-of-range coordinate")
        regions.append(points)
    return regions
