"""Per-tile scores -> per-pixel heat maps, without ever holding a full-resolution array.

Every tile window's edges lie on a small lattice of row and column boundaries (multiples of half a
window, plus the borders). The mean of the tiles covering a pixel is constant inside each lattice
cell, so the accumulator sums and counts on cells (a few hundred per side even for a 40k x 40k
scene) and paints cells onto whatever output grid is asked for: full resolution for the published
protocol, a coarser grid over the same bounds for the fast default. :class:`BlockedHeatmap` paints,
smooths and normalises the map block by block (the filters' halo included), so a 100k x 100k scene
at full resolution costs one block of memory, not the scene.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
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
                out_shape: tuple[int, int], rows: tuple[int, int] | None = None,
                cols: tuple[int, int] | None = None) -> np.ndarray:
    """Sample cell values at the centres of an ``out_shape`` grid laid over the raster's bounds.

    cell_values: (R, C) or (R, C, K). Returns (H', W') or (H', W', K) float32. With out_shape equal
    to (height, width) every pixel gets the value of the cell that contains it. ``rows`` / ``cols``
    (start, stop) on the output grid paint only that block of it.
    """
    out_h, out_w = out_shape
    r0, r1 = rows or (0, out_h)
    c0, c1 = cols or (0, out_w)
    centre_rows = (np.arange(r0, r1) + 0.5) * (height / out_h)
    centre_cols = (np.arange(c0, c1) + 0.5) * (width / out_w)
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
    return cv2.medianBlur(selo_gray(mean_map, lo, hi), SELO_MEDIAN_KERNEL)


def selo_gray(mean_map: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """The reference's 8-bit quantisation: ``uint8(255 * (mean - lo) / (hi - lo))``, NaN -> 0."""
    p = (mean_map - lo) / (hi - lo) if hi > lo else np.zeros_like(mean_map)
    return np.uint8(255 * np.nan_to_num(p, nan=0.0))


# -- block by block --------------------------------------------------------------------------------

#: Heat maps are computed (and written) in square blocks of this many heat-map pixels plus a halo.
HEATMAP_BLOCK = 2048
#: Hot spots are traced on a grid of at most this many pixels on its long side (heat maps beyond it
#: are averaged down by a whole factor first).
HOTSPOT_MAX_SIDE = 4096

Block = tuple[int, int, int, int]  # row0, row1, col0, col1 on the heat-map grid


def heatmap_blocks(shape: tuple[int, int], block: int = HEATMAP_BLOCK) -> list[Block]:
    """Square blocks covering an (H, W) grid, row by row."""
    height, width = shape
    return [(r, min(height, r + block), c, min(width, c + block))
            for r in range(0, height, block) for c in range(0, width, block)]


class BlockedHeatmap:
    """One query's normalised heat map (float32, 0..1, NaN = nodata), computed block by block.

    The same values as painting the whole map, then ``smooth_gaussian`` + ``minmax`` (fast) or
    ``selo_probmap`` (``mode="selo"``), but memory is bounded by one block and its halo (the filter's
    radius), whatever the scene's size: pass one finds the global minimum and maximum, pass two
    normalises. ``mask(block)`` returns the validity (bool) of a block of the heat-map grid.
    """

    def __init__(self, lattice: CellLattice, height: int, width: int, shape: tuple[int, int], *,
                 cell_values: np.ndarray, mode: str, sigma: float,
                 mask: Callable[[Block], np.ndarray], block: int = HEATMAP_BLOCK):
        self.lattice, self.height, self.width, self.shape = lattice, height, width, shape
        self.cells = cell_values
        self.mode, self.sigma, self.mask = mode, sigma, mask
        if mode == "selo":
            self.halo = SELO_MEDIAN_KERNEL // 2
        else:
            self.halo = int(np.ceil(3 * sigma)) if sigma > 0 else 0
        self.blocks = heatmap_blocks(shape, block)
        self._single: tuple[np.ndarray, np.ndarray] | None = None
        self.lo, self.hi = self._range()

    def _range(self) -> tuple[float, float]:
        lo, hi = np.inf, -np.inf
        for box in self.blocks:
            if self.mode == "selo":  # the reference's min/max: of the painted means, before the blur
                values = self._paint(box)
                finite = values[np.isfinite(values)]
            else:
                values, valid = self._smoothed(box)
                finite = values[valid]
                if len(self.blocks) == 1:
                    self._single = values, valid
            if finite.size:
                lo, hi = min(lo, float(finite.min())), max(hi, float(finite.max()))
        return lo, hi

    def _paint(self, box: Block) -> np.ndarray:
        r0, r1, c0, c1 = box
        return paint_cells(self.cells, self.lattice, self.height, self.width, self.shape, (r0, r1), (c0, c1))

    def _grown(self, box: Block) -> tuple[Block, tuple[slice, slice]]:
        """``box`` grown by the halo (clipped to the grid), and the slices of ``box`` inside it."""
        r0, r1, c0, c1 = box
        g = (max(0, r0 - self.halo), min(self.shape[0], r1 + self.halo),
             max(0, c0 - self.halo), min(self.shape[1], c1 + self.halo))
        return g, (slice(r0 - g[0], r1 - g[0]), slice(c0 - g[2], c1 - g[2]))

    def _smoothed(self, box: Block) -> tuple[np.ndarray, np.ndarray]:
        grown, inner = self._grown(box)
        mean_map = self._paint(grown)
        valid = self.mask(grown) & np.isfinite(mean_map)
        return smooth_gaussian(mean_map, valid, self.sigma)[inner], valid[inner]

    def block(self, box: Block) -> np.ndarray:
        """The normalised heat map on ``box`` (one of :attr:`blocks`, or any block of the grid)."""
        if self.mode == "selo":
            grown, inner = self._grown(box)
            mean_map = self._paint(grown)
            valid = (self.mask(grown) & np.isfinite(mean_map))[inner]
            if not np.isfinite(self.lo):
                return np.full(valid.shape, np.nan, dtype=np.float32)
            gray = selo_gray(np.where(np.isfinite(mean_map), mean_map, self.lo), self.lo, self.hi)
            gray = cv2.medianBlur(gray, SELO_MEDIAN_KERNEL)[inner]
            return np.where(valid, gray.astype(np.float32) / 255.0, np.nan).astype(np.float32)
        if self._single is not None and box == self.blocks[0]:
            values, valid = self._single
        else:
            values, valid = self._smoothed(box)
        out = np.full(values.shape, np.nan, dtype=np.float32)
        if np.isfinite(self.lo):
            out[valid] = (values[valid] - self.lo) / (self.hi - self.lo) if self.hi > self.lo else 0.0
        return out

    def iter_blocks(self) -> Iterator[tuple[Block, np.ndarray]]:
        for box in self.blocks:
            yield box, self.block(box)

    def whole(self) -> np.ndarray:
        """The whole map in memory (for small maps: evaluation, tests)."""
        out = np.empty(self.shape, dtype=np.float32)
        for (r0, r1, c0, c1), values in self.iter_blocks():
            out[r0:r1, c0:c1] = values
        return out


def hotspot_factor(shape: tuple[int, int], max_side: int = HOTSPOT_MAX_SIDE) -> int:
    """Whole factor by which a heat map is averaged down before tracing hot spots (1 = not at all)."""
    return max(1, -(-max(shape) // max_side))


def pool_mean(values: np.ndarray, factor: int) -> np.ndarray:
    """Mean of each ``factor`` x ``factor`` cell of a block, ignoring NaN (all NaN -> NaN); a
    partial last row or column of cells averages what it has."""
    if factor == 1:
        return values
    h, w = values.shape
    ph, pw = -(-h // factor) * factor, -(-w // factor) * factor
    padded = np.full((ph, pw), np.nan, dtype=np.float32)
    padded[:h, :w] = values
    cells = padded.reshape(ph // factor, factor, pw // factor, factor)
    finite = np.isfinite(cells)
    counts = finite.sum(axis=(1, 3))
    sums = np.where(finite, cells, 0.0).sum(axis=(1, 3), dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / counts, np.nan).astype(np.float32)
