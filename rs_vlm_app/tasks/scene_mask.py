"""A scene's validity mask on a heat-map grid, served block by block and kept beside the embeddings.

A heat map of a 100k x 100k scene at full resolution has 10^10 pixels: its mask cannot be one array
in memory. The mask is read from the raster once, block by block (decimated reads, nearest pixel
centre, as a whole-raster decimated read would sample it), into ``mask_<H>x<W>.npy`` in the scene's
embedding folder; later queries read blocks of that file. Each block is read through a short-lived
memory map, so no more than one block is ever resident.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import numpy as np

from rs_vlm_app.atomic import atomic_path
from rs_vlm_app.geo.raster import RasterSource
from rs_vlm_app.tasks.heatmap import HEATMAP_BLOCK, Block, heatmap_blocks

#: Masks up to this many pixels are also kept whole in memory (cheap, and the common case).
IN_MEMORY_PIXELS = 16 << 20


class SceneMask:
    """Validity (True = valid) of ``source`` on a ``shape`` grid over its bounds, per block.

    ``aoi`` (rs_vlm_app.geo.aoi.Aoi) with ``transform`` (the grid's) also masks out pixels whose
    centre is outside the area of interest.
    """

    def __init__(self, source: RasterSource, folder: Path | None, shape: tuple[int, int], *,
                 aoi: Any = None, transform: Any = None):
        self.source, self.shape = source, shape
        self.aoi, self.transform = aoi, transform
        self.path = folder / f"mask_{shape[0]}x{shape[1]}.npy" if folder is not None else None
        self._whole: np.ndarray | None = None
        if shape[0] * shape[1] <= IN_MEMORY_PIXELS:
            self._whole = self._load_whole()
        elif self.path is None or not self._file_ok():
            self._build_file()

    def __call__(self, box: Block) -> np.ndarray:
        r0, r1, c0, c1 = box
        if self._whole is not None:
            mask = self._whole[r0:r1, c0:c1]
        elif self.path is not None and self._file_ok():
            mapped = np.load(self.path, mmap_mode="r")
            mask = np.array(mapped[r0:r1, c0:c1])
            del mapped
        else:  # the cache folder cannot be written: read the raster each time
            mask = self._read(box)
        if self.aoi is not None:
            from affine import Affine

            mask = mask & self.aoi.raster_mask((r1 - r0, c1 - c0), self.transform @ Affine.translation(c0, r0),
                                               self.source.crs)
        return mask

    def whole(self) -> np.ndarray:
        """The whole mask in memory (small grids only)."""
        out = np.empty(self.shape, dtype=bool)
        for box in heatmap_blocks(self.shape):
            r0, r1, c0, c1 = box
            out[r0:r1, c0:c1] = self(box)
        return out

    def _read(self, box: Block) -> np.ndarray:
        return self.source.read_mask(out_shape=self.shape, box=box).astype(bool)

    def _load_whole(self) -> np.ndarray:
        if self.path is not None:
            with contextlib.suppress(OSError, ValueError):
                mask = np.load(self.path)
                if mask.shape == self.shape and mask.dtype == bool:
                    return mask
        mask = self.source.read_mask(out_shape=self.shape).astype(bool)
        if self.path is not None:
            with contextlib.suppress(OSError), atomic_path(self.path) as tmp:
                np.save(tmp, mask)  # keeps the .npy suffix: no second suffix is added
        return mask

    def _file_ok(self) -> bool:
        assert self.path is not None
        try:
            mapped = np.load(self.path, mmap_mode="r")
        except (OSError, ValueError):
            return False
        ok = mapped.shape == self.shape and mapped.dtype == bool
        del mapped
        return ok

    def _build_file(self) -> None:
        if self.path is None:
            return

        def write(tmp: Path) -> None:
            np.lib.format.open_memmap(tmp, "w+", np.bool_, self.shape).flush()
            for box in heatmap_blocks(self.shape, HEATMAP_BLOCK):
                r0, r1, c0, c1 = box
                mapped = np.load(tmp, mmap_mode="r+")
                mapped[r0:r1, c0:c1] = self._read(box)
                mapped.flush()
                del mapped

        try:
            with atomic_path(self.path) as tmp:
                write(tmp)
        except OSError:
            self.path = None  # read-only cache: blocks are read from the raster each time

