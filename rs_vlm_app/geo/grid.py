"""Tile grids as data: which pixel windows of a raster are encoded, at which scales.

A grid is a :class:`GridSpec` (plain data, with a stable text form for cache keys and the CLI);
:func:`build_windows` turns it into an ``(N, 5)`` int64 array of ``row0, row1, col0, col1, scale``
windows for one raster size. ``scale`` is the window side in pixels.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from rs_vlm_app.errors import UserError

log = logging.getLogger(__name__)

GridKind = Literal["selo", "regular"]
_KINDS = ("selo", "regular")

#: Columns of a windows array.
ROW0, ROW1, COL0, COL1, SCALE = range(5)


@dataclass(frozen=True)
class GridSpec:
    """A family of square windows.

    ``selo``: the published SeLo grid. For each side ``s``, two grids with stride ``s``, one starting
    at 0 and one shifted by ``s // 2``; a window reaching the border (end >= size) is pushed back to
    end exactly on it. ``regular``: side ``s``, stride ``round(s * (1 - overlap))``, the last window
    pushed back so the whole raster is covered.
    """

    kind: GridKind
    sizes: tuple[int, ...]
    overlap: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"grid kind must be one of {_KINDS}, got {self.kind!r}")
        sizes = tuple(int(s) for s in self.sizes)
        if not sizes or any(s < 1 for s in sizes):
            raise ValueError(f"grid sizes must be positive integers, got {self.sizes!r}")
        if len(set(sizes)) != len(sizes):
            raise ValueError(f"grid sizes must be distinct, got {self.sizes!r}")
        if not 0.0 <= float(self.overlap) < 1.0:
            raise ValueError(f"grid overlap must be in [0, 1), got {self.overlap!r}")
        if self.kind == "selo" and self.overlap != 0.0:
            raise ValueError("the SeLo grid has a fixed layout; overlap applies to regular grids only")
        object.__setattr__(self, "sizes", sizes)
        object.__setattr__(self, "overlap", float(self.overlap))

    def key(self) -> str:
        """Stable text naming this grid, for cache keys: ``selo:256,512,768`` or ``regular:256@0.25``."""
        sizes = ",".join(str(s) for s in self.sizes)
        if self.kind == "selo":
            return f"selo:{sizes}"
        return f"regular:{sizes}@{self.overlap:g}"

    def __str__(self) -> str:
        return self.key()

    @classmethod
    def parse(cls, text: str) -> GridSpec:
        """Read the CLI form: ``selo`` | ``selo:256,512`` | ``256`` | ``256,512`` | ``256,512@0.25``.

        ``regular:...`` (the :meth:`key` form) is accepted too. Raises UserError on bad text.
        """
        raw = text
        text = text.strip().lower()
        kind: GridKind = "regular"
        if text == "selo":
            return SELO_GRID
        if text.startswith("selo:"):
            kind, text = "selo", text[len("selo:"):]
        elif text.startswith("regular:"):
            text = text[len("regular:"):]
        sizes_text, _, overlap_text = text.partition("@")
        try:
            sizes = tuple(int(part) for part in sizes_text.split(","))
            overlap = float(overlap_text) if overlap_text else 0.0
            return cls(kind, sizes, overlap)
        except ValueError as exc:
            reason = str(exc) if "grid" in str(exc) else "not a number"
            raise UserError(
                f"bad grid {raw!r} ({reason}); use 'selo', a window size like '256', "
                "several like '256,512', or an overlap like '256,512@0.25'"
            ) from None


#: The grid of the published SeLo evaluation: windows of 256, 512 and 768 pixels.
SELO_GRID = GridSpec("selo", (256, 512, 768))


def build_windows(spec: GridSpec, height: int, width: int, *, path: str | Path | None = None) -> np.ndarray:
    """All windows of ``spec`` over a ``height`` x ``width`` raster (``path``: named in messages).

    Returns an ``(N, 5)`` int64 array (row0, row1, col0, col1, scale), each window once, sorted by
    (scale, row0, col0). Sizes larger than the raster are skipped with a warning; if none fits,
    UserError.
    """
    fitting = [s for s in spec.sizes if s <= height and s <= width]
    for s in spec.sizes:
        if s not in fitting:
            log.warning("%swindow size %d skipped: the raster is only %d x %d pixels",
                        f"{path}: " if path is not None else "", s, height, width)
    if not fitting:
        raise UserError(
            f"the raster is {height} x {width} pixels, smaller than the smallest window {min(spec.sizes)}; "
            "choose a smaller grid",
            path=path,
        )
    parts = []
    for s in sorted(fitting):
        if spec.kind == "selo":
            # two grids, each crossing its own rows with its own columns
            for shift in (0, s - s // 2):  # the reference's ``step - int(0.5 * step)``
                parts.append(_cross(_selo_starts(height, s, shift), _selo_starts(width, s, shift), s))
        else:
            stride = max(1, round(s * (1.0 - spec.overlap)))
            parts.append(_cross(_regular_starts(height, s, stride), _regular_starts(width, s, stride), s))
    windows = np.unique(np.concatenate(parts), axis=0)  # unique rows, also sorted lexicographically
    order = np.lexsort((windows[:, COL0], windows[:, ROW0], windows[:, SCALE]))
    return windows[order]


def _selo_starts(size: int, s: int, shift: int) -> np.ndarray:
    """Starts of one SeLo grid along one axis, pushed back where the end reaches the border."""
    starts = np.arange(shift, size, s)
    return np.unique(np.where(starts + s >= size, size - s, starts))


def _regular_starts(size: int, s: int, stride: int) -> np.ndarray:
    starts = np.arange(0, size - s + 1, stride)
    if starts[-1] != size - s:
        starts = np.append(starts, size - s)
    return starts


def _cross(rows: np.ndarray, cols: np.ndarray, s: int) -> np.ndarray:
    r, c = np.meshgrid(rows, cols, indexing="ij")
    r, c = r.ravel(), c.ravel()
    return np.stack([r, r + s, c, c + s, np.full_like(r, s)], axis=1).astype(np.int64)
