"""Screen-resolution tiles of a scene, read in a background thread.

The map never reads a raster at full resolution as a whole: it asks for 256-pixel tiles of a
pyramid level chosen from the zoom (level L = every 2**L-th source pixel), and each tile is one
decimated window read (GDAL uses the file's overviews). Tiles are cached by the map view.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PyQt6.QtCore import QObject, pyqtSignal
from PyQt6.QtGui import QImage

TILE = 256
#: The overview level shows the whole scene in at most this many screen pixels per side.
OVERVIEW_PIXELS = 1024


@dataclass(frozen=True, order=True)
class TileKey:
    level: int
    tx: int
    ty: int


@dataclass(frozen=True)
class TileWindow:
    row0: int
    row1: int
    col0: int
    col1: int
    out_h: int
    out_w: int


def tile_window(key: TileKey, width: int, height: int) -> TileWindow:
    """Source window of a tile and the decimated shape it is read at."""
    f = 2 ** key.level
    span = TILE * f
    col0, row0 = key.tx * span, key.ty * span
    col1, row1 = min(width, col0 + span), min(height, row0 + span)
    return TileWindow(row0, row1, col0, col1, max(1, math.ceil((row1 - row0) / f)),
                      max(1, math.ceil((col1 - col0) / f)))


def overview_level(width: int, height: int) -> int:
    """The coarsest level used: the whole scene in <= OVERVIEW_PIXELS per side."""
    return max(0, math.ceil(math.log2(max(width, height) / OVERVIEW_PIXELS))) if max(width, height) > 0 else 0


def level_for_scale(scale: float, width: int, height: int) -> int:
    """Level whose pixels are about one screen pixel at ``scale`` (screen px per source px)."""
    top = overview_level(width, height)
    if scale <= 0:
        return top
    if scale >= 1:
        return 0
    return int(min(top, max(0, math.floor(math.log2(1.0 / scale)))))


def tiles_in(x0: float, y0: float, x1: float, y1: float, level: int, width: int, height: int) -> list[TileKey]:
    """Tiles of ``level`` that intersect the source-pixel rectangle, nearest to its centre first."""
    span = TILE * 2 ** level
    nx, ny = math.ceil(width / span), math.ceil(height / span)
    tx0, tx1 = max(0, int(x0 // span)), min(nx - 1, int(x1 // span))
    ty0, ty1 = max(0, int(y0 // span)), min(ny - 1, int(y1 // span))
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    keys = [TileKey(level, tx, ty) for ty in range(ty0, ty1 + 1) for tx in range(tx0, tx1 + 1)]
    keys.sort(key=lambda k: ((k.tx + 0.5) * span - cx) ** 2 + ((k.ty + 0.5) * span - cy) ** 2)
    return keys


def rgba_image(rgb: np.ndarray, valid: np.ndarray) -> QImage:
    """uint8 (h, w, 3) RGB and a validity mask as a QImage that owns its pixels (nodata transparent)."""
    h, w = valid.shape
    rgba = np.empty((h, w, 4), dtype=np.uint8)
    rgba[..., :3] = rgb
    rgba[..., 3] = np.where(valid, 255, 0)
    image = QImage(rgba.data, w, h, 4 * w, QImage.Format.Format_RGBA8888)
    return image.copy()


class TileReader(QObject):
    """Reads tiles of one raster in a background thread; the newest request wins.

    ``request(keys)`` replaces everything still pending (panning fast never builds a backlog).
    ``tile_ready(key, QImage)`` arrives in the GUI thread; ``failed(message)`` once per failure
    streak (e.g. the file was deleted or moved while the scene is open).
    """

    tile_ready = pyqtSignal(object, object)
    failed = pyqtSignal(str)

    def __init__(self, path: Path, bands: tuple[int, ...] | None = None, parent: QObject | None = None):
        super().__init__(parent)
        from rs_vlm_app.geo.raster import open_raster

        self.source = open_raster(path, bands=bands)
        self.width, self.height = self.source.width, self.source.height
        self._pending: deque[TileKey] = deque()
        self._wake = threading.Condition()
        self._stop = False
        self._failing = False
        self._thread = threading.Thread(target=self._loop, name="rsvlm-tiles", daemon=True)
        self._thread.start()

    def request(self, keys: list[TileKey]) -> None:
        with self._wake:
            self._pending = deque(keys)
            self._wake.notify()

    def pending(self) -> int:
        with self._wake:
            return len(self._pending)

    def close(self) -> None:
        with self._wake:
            self._stop = True
            self._pending.clear()
            self._wake.notify()
        self._thread.join(timeout=5)
        self.source.close()

    def _loop(self) -> None:
        while True:
            with self._wake:
                while not self._pending and not self._stop:
                    self._wake.wait()
                if self._stop:
                    return
                key = self._pending.popleft()
            try:
                image = self._read(key)
            except Exception as exc:  # a vanished or corrupt file: say so once, keep what is shown
                if not self._failing:
                    self._failing = True
                    self.failed.emit(" ".join(str(exc).split()))
                continue
            self._failing = False
            self.tile_ready.emit(key, image)

    def _read(self, key: TileKey) -> QImage:
        from rasterio.enums import Resampling

        w = tile_window(key, self.width, self.height)
        resampling = Resampling.nearest if key.level == 0 else Resampling.average
        rgb, valid = self.source.read_rgb(w.row0, w.row1, w.col0, w.col1, out_shape=(w.out_h, w.out_w),
                                          resampling=resampling)
        return rgba_image(rgb, valid)
