"""Heat-map accumulation on the cell lattice against a brute-force per-pixel mean."""

import cv2
import numpy as np
import pytest

from rs_vlm_app.tasks.heatmap import (
    CellLattice,
    cell_means,
    heatmap_shape,
    minmax,
    paint_cells,
    selo_probmap,
    smooth_gaussian,
)


def random_windows(rng, height, width, n):
    out = []
    for _ in range(n):
        s = int(rng.integers(5, min(height, width)))
        r0 = int(rng.integers(0, height - s + 1))
        c0 = int(rng.integers(0, width - s + 1))
        out.append((r0, r0 + s, c0, c0 + s, s))
    return np.array(out, dtype=np.int64)


def brute_force_mean(windows, scores, height, width):
    total = np.zeros((height, width))
    count = np.zeros((height, width))
    for (r0, r1, c0, c1, _), s in zip(windows, scores, strict=True):
        total[r0:r1, c0:c1] += s
        count[r0:r1, c0:c1] += 1
    with np.errstate(invalid="ignore"):
        return total / count


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_full_resolution_equals_per_pixel_mean(seed):
    rng = np.random.default_rng(seed)
    height, width = 47, 61
    windows = random_windows(rng, height, width, 30)
    scores = rng.normal(size=len(windows))
    lattice = CellLattice.from_windows(windows, height, width)
    means, counts = cell_means(windows, scores, lattice)
    painted = paint_cells(means[..., 0], lattice, height, width, (height, width))
    expected = brute_force_mean(windows, scores, height, width)
    np.testing.assert_array_equal(np.isnan(painted), np.isnan(expected))
    np.testing.assert_allclose(painted[~np.isnan(expected)], expected[~np.isnan(expected)], rtol=1e-5, atol=1e-6)


def test_several_queries_at_once_match_one_by_one():
    rng = np.random.default_rng(5)
    windows = random_windows(rng, 40, 40, 20)
    scores = rng.normal(size=(len(windows), 3))
    lattice = CellLattice.from_windows(windows, 40, 40)
    together, _ = cell_means(windows, scores, lattice)
    for k in range(3):
        alone, _ = cell_means(windows, scores[:, k], lattice)
        np.testing.assert_allclose(together[..., k], alone[..., 0], equal_nan=True)


def test_coarse_grid_samples_pixel_centres():
    windows = np.array([[0, 10, 0, 10, 10], [0, 10, 10, 20, 10]])
    lattice = CellLattice.from_windows(windows, 10, 20)
    means, _ = cell_means(windows, np.array([1.0, 3.0]), lattice)
    painted = paint_cells(means[..., 0], lattice, 10, 20, (2, 4))
    np.testing.assert_array_equal(painted, [[1, 1, 3, 3], [1, 1, 3, 3]])


def test_heatmap_shape_never_finer_than_the_source():
    assert heatmap_shape(723, 934, 8) == (91, 117)
    assert heatmap_shape(723, 934, 0.5) == (723, 934)


def test_minmax_ignores_invalid_pixels():
    values = np.array([[5.0, 1.0], [3.0, 100.0]])
    valid = np.array([[True, True], [True, False]])
    out = minmax(values, valid)
    np.testing.assert_allclose(out[valid], [1.0, 0.0, 0.5])
    assert np.isnan(out[1, 1])


def test_smoothing_does_not_bleed_nodata():
    values = np.full((40, 40), 0.25, dtype=np.float32)
    valid = np.ones((40, 40), dtype=bool)
    valid[:, :10] = False
    values[:, :10] = 1000.0  # garbage under the mask must not leak into valid pixels
    out = smooth_gaussian(values, valid, sigma=3)
    np.testing.assert_allclose(out[valid], 0.25, atol=1e-6)
    assert np.isnan(out[~valid]).all()


def test_selo_probmap_is_truncation_then_median_251():
    rng = np.random.default_rng(0)
    mean_map = rng.normal(size=(300, 320))
    p = (mean_map - mean_map.min()) / (mean_map.max() - mean_map.min())
    expected = cv2.medianBlur(np.uint8(255 * p), 251)
    np.testing.assert_array_equal(selo_probmap(mean_map), expected)


# -- block by block ---------------------------------------------------------------------------------

def whole_reference(windows, scores, lattice, height, width, shape, valid, mode, sigma):
    """The whole-map computation the blocked one must reproduce number for number."""
    means, _ = cell_means(windows, scores, lattice)
    mean_map = paint_cells(means[..., 0], lattice, height, width, shape)
    ok = valid & np.isfinite(mean_map)
    if mode == "selo":
        gray = selo_probmap(np.where(np.isfinite(mean_map), mean_map, np.nanmin(mean_map)))
        return np.where(ok, gray.astype(np.float32) / 255.0, np.nan).astype(np.float32)
    return minmax(smooth_gaussian(mean_map, ok, sigma), ok)


@pytest.mark.parametrize(("mode", "sigma", "shape", "block"), [
    ("fast", 2.5, (90, 130), 23), ("fast", 0.0, (45, 61), 16), ("selo", 0.0, (300, 280), 128),
    ("fast", 1.5, (90, 130), 4096),
])
def test_blocked_heatmap_equals_the_whole_map_computation(mode, sigma, shape, block):
    from rs_vlm_app.tasks.heatmap import BlockedHeatmap

    rng = np.random.default_rng(7)
    height, width = 300, 280
    windows = random_windows(rng, height, width, 25)
    windows[:, 0:2] = np.clip(windows[:, 0:2], 0, height)
    scores = rng.normal(size=len(windows))
    lattice = CellLattice.from_windows(windows, height, width)
    valid = rng.random(shape) > 0.1
    valid[:10, :] = False  # a nodata stripe
    expected = whole_reference(windows, scores, lattice, height, width, shape, valid, mode, sigma)
    means, _ = cell_means(windows, scores, lattice)

    asked = []

    def mask(box):
        asked.append(box)
        r0, r1, c0, c1 = box
        return valid[r0:r1, c0:c1]

    heat = BlockedHeatmap(lattice, height, width, shape, cell_values=means[..., 0], mode=mode, sigma=sigma,
                          mask=mask, block=block)
    got = heat.whole()
    np.testing.assert_allclose(got, expected, atol=1e-6)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    # no mask request ever covers more than one block and its halo
    side = block + 2 * heat.halo
    assert all((r1 - r0) <= side and (c1 - c0) <= side for r0, r1, c0, c1 in asked)
    if mode == "fast":  # (the median blur of the published protocol may lower the maximum)
        assert np.nanmin(got) == pytest.approx(0.0) and np.nanmax(got) == pytest.approx(1.0)


def test_pool_mean_ignores_nan_and_keeps_partial_cells():
    from rs_vlm_app.tasks.heatmap import hotspot_factor, pool_mean

    values = np.array([[1, 3, 5], [np.nan, 2, np.nan], [4, 4, 4]], dtype=np.float32)
    np.testing.assert_allclose(pool_mean(values, 2), [[2.0, 5.0], [4.0, 4.0]])
    assert np.isnan(pool_mean(np.full((2, 2), np.nan, np.float32), 2)).all()
    assert hotspot_factor((4096, 100)) == 1 and hotspot_factor((4097, 10)) == 2
    assert hotspot_factor((100_000, 100_000)) == 25
