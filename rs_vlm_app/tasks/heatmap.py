"""Per-tile scores -> per-pixel heat maps, without ever holding a full-resolution array.

Every tile window's edges lie on a small lattice of row and column boundaries (multiples of half a
window, plus the borders). The mean of the tiles covering a pixel is constant inside each lattice
cell, so the accumulator sums and counts on cells (a few hundred per side even for a 40k x 40k
scene) and paints cells onto whatever output grid is asked for: full resolution for the published
protocol, a coarser grid over the same bounds for the fast default.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

SELO_MEDIAN_KERNEL = 251


@dataclass(frozen=True)
class CellLattice:
    """Sorted row and column boundaries (including 0 and the raster size) of all tile windows."""

    row_edges: np.ndarray
    col_edges: np.ndarray

    @classmethod
    def from_windows(cls, windows: np.ndarray, height: int, width: int) -> CellLattice:
        rows = np.unique(np.concatenate([[0, height], windows[:, 0], windows[:, 1]]))
        cols = np.unique(np.concatenate([[0, width], windows[:, 2], windows[:, 3]]))
        return cls(rows.astype(np.int64), cols.astype(np.int64))

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.row_edges) - 1, len(self.col_edges) - 1


def cell_means(windows: np.ndarray, scores: np.ndarray, lattice: CellLattice) -> tuple[np.ndarray, np.ndarray]:
    """Mean score of the windows covering each lattice cell.

    windows: (N, >=4) int (row0, row1, col0, col1, ...); scores: (N,) or (N, K) for K queries.
    Returns (means (R, C, K) float64 with NaN where no window covers the cell, counts (R, C) int).
    Uses a 2-D difference array, so the cost is O(N + cells) whatever the window sizes.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim == 1:
        scores = scores[:, None]
    n_rows, n_cols = lattice.shape
    r0 = np.searchsorted(lattice.row_edges, windows[:, 0])
    r1 = np.searchsorted(lattice.row_edges, windows[:, 1])
    c0 = np.searchsorted(lattice.col_edges, windows[:, 2])
    c1 = np.searchsorted(lattice.col_edges, windows[:, 3])
    sums = np.zeros((n_rows + 1, n_cols + 1, scores.shape[1]))
    counts = np.zeros((n_rows + 1, n_cols + 1), dtype=np.int64)
    for rr, cc, sign in ((r0, c0, 1), (r0, c1, -1), (r1, c0, -1), (r1, c1, 1)):
        np.add.at(sums, (rr, cc), sign * scores)
        np.add.at(counts, (rr, cc), sign)
    sums = sums.cumsum(0).cumsum(1)[:n_rows, :n_cols]
    counts = counts.cumsum(0).cumsum(1)[:n_rows, :n_cols]
    with np.errstate(invalid="ignore", divide="ignore"):
        means = sums / counts[..., None]
    means[counts == 0] = np.nan
    return means, counts


def paint_cells(cell_values: np.ndarray, lattice: CellLattice, height: int, width: int,
                out_shape: tuple[int, int]) -> np.ndarray:
    """Sample cell values at the centres of an ``out_shape`` grid laid over the raster's bounds.

    cell_values: (R, C) or (R, C, K). Returns (H', W') or (H', W', K) float32. With out_shape equal
    to (height, width) every pixel gets the value of the cell that contains it.
    """
    out_h, out_w = out_shape
    centre_rows = (np.arange(out_h) + 0.5) * (height / out_h)
    centre_cols = (np.arange(out_w) + 0.5) * (width / out_w)
    row_idx = np.searchsorted(lattice.row_edges, centre_rows, side="right") - 1
    col_idx = np.searchsorted(lattice.col_edges, centre_cols, side="right") - 1
    row_idx = np.clip(row_idx, 0, lattice.shape[0] - 1)
    col_idx = np.clip(col_idx, 0, lattice.shape[1] - 1)
    return cell_values[row_idx][:, col_idx].astype(np.float32)


def heatmap_shape(height: int, width: int, pixel_size: float) -> tuple[int, int]:
    """Output grid for a heat map whose pixels span ``pixel_size`` source pixels (>= 1)."""
    pixel_size = max(1.0, float(pixel_size))
    return max(1, int(np.ceil(height / pixel_size))), max(1, int(np.ceil(width / pixel_size)))


def minmax(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Scale valid values to [0, 1] (all equal -> 0); invalid pixels become NaN."""
    out = np.full(values.shape, np.nan, dtype=np.float32)
    if not valid.any():
        return out
    v = values[valid]
    lo, hi = float(v.min()), float(v.max())
    out[valid] = (v - lo) / (hi - lo) if hi > lo else 0.0
    return out


def smooth_gaussian(values: np.ndarray, valid: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing that ignores invalid pixels (normalised convolution); NaN stays NaN."""
    if sigma <= 0:
        return np.where(valid, values, np.nan).astype(np.float32)
    weights = valid.astype(np.float32)
    filled = np.where(valid, values, 0.0).astype(np.float32)
    ksize = int(2 * np.ceil(3 * sigma) + 1)
    blur_values = cv2.GaussianBlur(filled, (ksize, ksize), sigma, borderType=cv2.BORDER_REFLECT)
    blur_weights = cv2.GaussianBlur(weights, (ksize, ksize), sigma, borderType=cv2.BORDER_REFLECT)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = blur_values / blur_weights
    out[~valid] = np.nan
    return out.astype(np.float32)


def selo_probmap(mean_map: np.ndarray) -> np.ndarray:
    """The published post-processing, step for step, on a full-resolution per-pixel mean map.

    min-max normalise, ``uint8(255 * p)`` (truncation), median blur of 251 px. Returns the uint8 map
    the reference stores (as JPEG) and evaluates.
    """
    lo, hi = float(np.nanmin(mean_map)), float(np.nanmax(mean_map))
    p = (mean_map - lo) / (hi - lo) if hi > lo else np.zeros_like(mean_map)
    gray = np.uint8(255 * np.nan_to_num(p, nan=0.0))
    return cv2.medianBlur(gray, SELO_MEDIAN_KERNEL)
