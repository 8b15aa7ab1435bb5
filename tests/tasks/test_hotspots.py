"""Hot spots: labelled with OpenCV (no scipy.ndimage import), the same regions, numbers and values as
scipy.ndimage gives."""

from __future__ import annotations

import numpy as np
import pytest
from affine import Affine
from rasterio.crs import CRS
from scipy import ndimage

from rs_vlm_app.tasks.hotspots import find_hotspots, label_regions

EIGHT = np.ones((3, 3), dtype=bool)


def masks(seed: int, count: int):
    rng = np.random.default_rng(seed)
    for k in range(count):
        h, w = (int(v) for v in rng.integers(1, 48, size=2))
        mask = rng.random((h, w)) < rng.uniform(0.1, 0.7)
        if k % 3 == 0 and min(h, w) > 2:  # fewer, larger regions with holes and arms
            mask = ndimage.binary_dilation(mask) & ~ndimage.binary_erosion(mask)
        yield mask


def test_labels_and_boxes_are_scipys():
    for mask in masks(seed=0, count=300):
        labels, boxes = label_regions(mask)
        expected, n = ndimage.label(mask, structure=EIGHT)
        assert labels.dtype == np.int32
        np.testing.assert_array_equal(labels, expected)
        assert boxes == ndimage.find_objects(expected) and len(boxes) == n


def test_empty_and_full_masks():
    labels, boxes = label_regions(np.zeros((5, 7), bool))
    assert boxes == [] and not labels.any()
    labels, boxes = label_regions(np.ones((5, 7), bool))
    assert boxes == [(slice(0, 5), slice(0, 7))] and (labels == 1).all()


def reference_hotspots(heat, threshold, min_pixels):
    """The statistics scipy.ndimage gave the hot spots: (peak, mean, row, col) per kept region, in label order."""
    above = np.nan_to_num(heat, nan=-1.0) >= threshold
    labels, n = ndimage.label(above, structure=EIGHT)
    index = np.arange(1, n + 1)
    sizes = ndimage.sum_labels(above, labels, index)
    means = ndimage.mean(heat, labels, index)
    out = []
    for i, label in enumerate(index):
        if sizes[i] >= min_pixels:
            inside = np.where(labels == label, heat, -np.inf)
            r, c = np.unravel_index(int(np.argmax(inside)), inside.shape)
            out.append((float(inside[r, c]), float(means[i]), int(r), int(c)))
    return out


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_hotspots_keep_scipys_values_and_order(seed):
    rng = np.random.default_rng(seed)
    heat = (rng.random((40, 50)) * 0.85).astype(np.float32)
    heat[rng.random(heat.shape) < 0.05] = np.nan
    heat[5:9, 5:9] = 0.9  # two plateaus: equal peaks in two regions, which keep their label order
    heat[20:24, 30:34] = 0.9
    transform = Affine(2.0, 0, 1000.0, 0, -2.0, 5000.0)
    spots = find_hotspots(heat, transform, CRS.from_epsg(32633), threshold=0.8, min_pixels=2)
    expected = sorted(reference_hotspots(heat, 0.8, 2), key=lambda s: s[0], reverse=True)  # stable, as before
    assert [(s.score, s.mean_score) for s in spots] == [(e[0], e[1]) for e in expected]
    assert [(s.peak_x, s.peak_y) for s in spots] == [transform @ (e[3] + 0.5, e[2] + 0.5) for e in expected]
    assert all(s.area == s.polygon.area for s in spots)  # metres: 1 m per CRS unit
