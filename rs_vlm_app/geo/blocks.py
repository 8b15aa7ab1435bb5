"""The block reader: read a raster in big row chunks of bounded width, cut tiles in memory, prefetch.

Windows are processed in a fixed sorted order: by default (scale, band, row0, col0), as the SeLo
pipeline numbers them, which reads the raster about once per scale; ``order="rows"`` sorts by
(band, row0, scale, col0) and reads every pixel about once in all. A *band* is a vertical strip of
the raster: a raster narrower than a band's budget is one band (then the order is exactly the SeLo
numbering); a wider one is cut into strips of ``band_cols`` columns, each window belongs to the strip
holding its first column, and a strip reads its columns plus the widest window's overlap. A sliding
buffer of row chunks of one strip holds the rows the current windows need: rows not yet buffered are
read in chunks of a few hundred rows or more (aligned to the file's block height), rows no later
window needs are dropped, and tiles are cut from the buffer and transformed at once (at most a few
raw tiles are alive at any time). Memory stays bounded by about ``(tallest window + 2 chunks) x strip
width x 4 bytes`` (BUFFER_BYTES) plus GDAL's block cache (capped to about one chunk while reading) and
the prefetched batches, whatever the raster's width and height. Cutting and ``tile_transform`` run on
a background thread so the consumer (the model) rarely waits on the disk.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal

import numpy as np
import rasterio

from rs_vlm_app.geo.grid import COL0, COL1, ROW0, ROW1, SCALE
from rs_vlm_app.geo.raster import RasterSource
from rs_vlm_app.reporting import Reporter

log = logging.getLogger(__name__)

#: A chunk holds about this many bytes of RGB + mask (its row count is at least MIN_CHUNK_ROWS).
CHUNK_BYTES = 32 << 20
MIN_CHUNK_ROWS = 256
#: Lower bound of GDAL's block cache while the reader reads a chunk.
MIN_GDAL_CACHE = 64 << 20
#: Budget of the row buffer (RGB + mask of the rows the current windows need): decides the strip width.
BUFFER_BYTES = 160 << 20


@dataclass
class TileBatch:
    """Tiles of consecutive windows (in the reader's sorted order) that had enough valid pixels."""

    indexes: np.ndarray         # int64 (B,): rows of the windows array
    tiles: np.ndarray           # uint8 (B, S, S, 3): tile_transform of each cut tile
    valid_fraction: np.ndarray  # float32 (B,): share of valid pixels in each window
    skipped: np.ndarray         # int64: windows skipped (too few valid pixels) since the previous batch
    next_start: int             # pass as ``start`` to resume right after this batch


class BlockReader:
    """Iterate over :class:`TileBatch` es of the windows of one raster.

    ``windows``: (N, 5) int64 as from :func:`rs_vlm_app.geo.grid.build_windows` (any order; they
    are processed sorted by scale, row0, col0). ``tile_transform`` maps a cut (h, w, 3) uint8 tile
    (a read-only view: copy it to keep it) to the model input (S, S, 3) uint8; it runs on the
    prefetch thread (``workers`` > 1: on that many threads). Windows with a valid fraction below
    ``min_valid`` are not transformed nor yielded; they are listed in :attr:`skipped`. ``start``
    skips the first ``start`` windows of the sorted order (resume; see :attr:`TileBatch.next_start`).
    ``order``: "scale" sorts by (scale, row0, col0) and reads the raster once per scale; "rows" sorts
    by (row0, scale, col0) and reads it once. Breaking out of the loop or closing the iterator stops
    the background thread.
    """

    def __init__(
        self, source: RasterSource, windows: np.ndarray, *, batch_size: int,
        tile_transform: Callable[[np.ndarray], np.ndarray], min_valid: float = 0.5, start: int = 0,
        prefetch: int = 2, reporter: Reporter | None = None, workers: int = 1,
        chunk_rows: int | None = None, order: Literal["scale", "rows"] = "scale",
    ):
        windows = np.asarray(windows, dtype=np.int64)
        if windows.ndim != 2 or windows.shape[1] != 5:
            raise ValueError(f"windows must be an (N, 5) array, got shape {windows.shape}")
        if len(windows) and not (
            (windows[:, ROW0] >= 0).all() and (windows[:, ROW1] <= source.height).all()
            and (windows[:, COL0] >= 0).all() and (windows[:, COL1] <= source.width).all()
            and (windows[:, ROW1] > windows[:, ROW0]).all() and (windows[:, COL1] > windows[:, COL0]).all()
        ):
            raise ValueError(f"windows reach outside the {source.height} x {source.width} raster")
        if batch_size < 1 or prefetch < 1 or workers < 1:
            raise ValueError("batch_size, prefetch and workers must be at least 1")
        if not 0 <= start <= len(windows):
            raise ValueError(f"start must be within 0..{len(windows)}, got {start}")
        self.source = source
        self.windows = windows
        self.batch_size = batch_size
        self.tile_transform = tile_transform
        self.min_valid = float(min_valid)
        self.start = start
        self.prefetch = prefetch
        self.reporter = reporter
        self.workers = workers
        tallest = int((windows[:, ROW1] - windows[:, ROW0]).max()) if len(windows) else 1
        widest = int((windows[:, COL1] - windows[:, COL0]).max()) if len(windows) else 1
        self._widest = widest
        #: Columns per vertical strip (the raster's width when it fits the buffer budget whole).
        self.band_cols = band_columns(source.width, tallest, widest, source.block_width)
        if chunk_rows is None and self.band_cols < source.width:  # strips: the budget assumed minimum chunks
            chunk_rows = -(-MIN_CHUNK_ROWS // max(1, source.block_height)) * max(1, source.block_height)
        self.chunk_rows = chunk_rows or default_chunk_rows(source.width, source.block_height)
        band = windows[:, COL0] // self.band_cols
        if order == "scale":
            keys = (windows[:, COL0], windows[:, ROW0], band, windows[:, SCALE])
        elif order == "rows":
            keys = (windows[:, COL0], windows[:, SCALE], windows[:, ROW0], band)
        else:
            raise ValueError(f"order must be 'scale' or 'rows', got {order!r}")
        #: order[k] is the row of ``windows`` processed k-th.
        self.order = np.lexsort(keys).astype(np.int64)
        self._skipped: list[np.ndarray] = []

    def __len__(self) -> int:
        """Windows this reader will look at (yielded or skipped)."""
        return len(self.order) - self.start

    @property
    def skipped(self) -> np.ndarray:
        """Indexes of windows skipped for too few valid pixels, as far as iteration has gone."""
        return np.concatenate(self._skipped) if self._skipped else np.empty(0, dtype=np.int64)

    def __iter__(self) -> Iterator[TileBatch]:
        self._skipped = []
        results: queue.Queue = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()
        thread = threading.Thread(target=self._produce, args=(results, stop), daemon=True,
                                  name="rsvlm-block-reader")
        thread.start()
        try:
            while True:
                item = results.get()
                if isinstance(item, _Failure):
                    raise item.error
                self._skipped.append(item.skipped)
                if isinstance(item, _End):
                    break
                yield item
        finally:
            stop.set()
            while thread.is_alive():
                _drain(results)
                thread.join(timeout=0.05)
        skipped = sum(len(s) for s in self._skipped)
        if skipped and self.reporter is not None:
            self.reporter.log(
                f"{skipped} tiles skipped: less than {self.min_valid:.0%} valid pixels (nodata)"
            )

    # -- the background thread -------------------------------------------------------------------

    def _produce(self, results: queue.Queue, stop: threading.Event) -> None:
        def put(item: object) -> bool:
            while not stop.is_set():
                try:
                    results.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        pool = ThreadPoolExecutor(self.workers, "rsvlm-tile") if self.workers > 1 else None
        try:
            for item in self._batches(stop, pool):
                if not put(item):
                    return
        except BaseException as error:  # re-raised in the consumer
            put(_Failure(error))
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)

    def _batches(self, stop: threading.Event, pool: ThreadPoolExecutor | None) -> Iterator[object]:
        buffer = _RowBuffer(self.source, self.chunk_rows)
        pending: list[_Cut] = []
        skipped: list[tuple[int, int]] = []  # (position in the sorted order, window index)
        in_flight: deque[_Cut] = deque()  # cuts whose transform runs on the pool
        for position in range(self.start, len(self.order)):
            if stop.is_set():
                return
            index = int(self.order[position])
            row0, row1, col0, col1, _scale = (int(v) for v in self.windows[index])
            band = col0 // self.band_cols
            buffer.select_columns(band * self.band_cols,
                                  min(self.source.width, (band + 1) * self.band_cols + self._widest))
            tile, valid = buffer.cut(row0, row1, col0, col1)
            fraction = float(np.count_nonzero(valid)) / valid.size
            if fraction < self.min_valid:
                skipped.append((position, index))
                continue
            # Transform now (a raw tile of a big window is tens of MiB; a batch of them is not kept).
            cut = _Cut(position, index, None, fraction)
            if pool is None:
                cut.output = self.tile_transform(tile)
            else:
                cut.future = pool.submit(self.tile_transform, tile)
                in_flight.append(cut)
                while len(in_flight) > 2 * self.workers:
                    in_flight.popleft().resolve()
            del tile, valid
            pending.append(cut)
            if len(pending) == self.batch_size:
                for waiting in pending:
                    waiting.resolve()
                in_flight.clear()
                yield from self._transform(pending, skipped, position + 1)
                pending, skipped = [], []
        if pending:
            for waiting in pending:
                waiting.resolve()
            yield from self._transform(pending, skipped, len(self.order))
            skipped = []
        yield _End(np.array([index for _position, index in skipped], dtype=np.int64))

    def _transform(
        self, pending: list[_Cut], skipped: list[tuple[int, int]], next_start: int,
    ) -> Iterator[TileBatch]:
        """Stack the transformed tiles: one batch, split where the transformed tile shape changes."""
        outputs = [cut.output for cut in pending]
        begin, lower = 0, -1
        for end in range(1, len(outputs) + 1):
            if end < len(outputs) and outputs[end].shape == outputs[begin].shape:
                continue
            part = pending[begin:end]
            until = next_start if end == len(outputs) else part[-1].position + 1
            yield TileBatch(
                indexes=np.array([cut.index for cut in part], dtype=np.int64),
                tiles=_stack(outputs[begin:end]),
                valid_fraction=np.array([cut.fraction for cut in part], dtype=np.float32),
                skipped=np.array([i for p, i in skipped if lower <= p < until], dtype=np.int64),
                next_start=until,
            )
            begin, lower = end, until


@dataclass
class _Cut:
    position: int                  # in the sorted order
    index: int                     # row of the windows array
    output: np.ndarray | None      # the transformed tile
    fraction: float                # valid share
    future: Future | None = None   # the transform, while it runs on the pool

    def resolve(self) -> None:
        if self.future is not None:
            self.output, self.future = self.future.result(), None


def band_columns(width: int, tallest: int, widest: int, block_width: int = 1) -> int:
    """Columns per vertical strip so that a strip's row buffer (tallest window + 2 minimum chunks,
    strip + widest window columns, 4 bytes a pixel) stays within BUFFER_BYTES; ``width`` when the
    whole raster fits. Whole file blocks, and never fewer than one block or the widest window."""
    rows = tallest + 2 * MIN_CHUNK_ROWS
    span = BUFFER_BYTES // (4 * rows)
    if span >= width:
        return max(1, width)
    block = max(1, block_width)
    cols = max(widest, span - widest) // block * block
    return max(cols, block, 1)


def feed_workers(device: str) -> int:
    """Threads that cut and resize tiles for a model on ``device``: one on the CPU (the model needs
    the cores), on an accelerator enough to keep it fed (all usable CPUs but one, at most 8)."""
    if device.split(":", 1)[0] == "cpu":
        return 1
    from rs_vlm_app.runtime import usable_cpus

    return max(1, min(8, usable_cpus() - 1))


def feed_prefetch(device: str) -> int:
    """Batches prepared ahead: two on the CPU, four for an accelerator (it drains them faster)."""
    return 2 if device.split(":", 1)[0] == "cpu" else 4


def default_chunk_rows(width: int, block_height: int) -> int:
    """Rows per read: about CHUNK_BYTES of RGB + mask, at least MIN_CHUNK_ROWS, a whole number of
    the file's blocks."""
    rows = max(MIN_CHUNK_ROWS, CHUNK_BYTES // max(1, width * 4))
    block = max(1, block_height)
    return -(-rows // block) * block


class _RowBuffer:
    """Full-width row chunks of one raster; serves tiles, drops rows above the current window."""

    def __init__(self, source: RasterSource, chunk_rows: int):
        self.source = source
        self.chunk_rows = chunk_rows
        self.block = max(1, source.block_height)
        self.col0, self.col1 = 0, source.width
        self.chunks: list[tuple[int, np.ndarray, np.ndarray]] = []  # (first row, rgb, valid)

    def select_columns(self, col0: int, col1: int) -> None:
        """Buffer columns ``col0:col1`` from now on (drops the buffer when they change)."""
        if (col0, col1) != (self.col0, self.col1):
            self.col0, self.col1, self.chunks = col0, col1, []

    @property
    def cache_bytes(self) -> int:
        width = self.col1 - self.col0
        itemsize = np.dtype(self.source.dtype).itemsize
        return max(MIN_GDAL_CACHE, (self.chunk_rows + self.block) * width * self.source.count * itemsize)

    @property
    def stop(self) -> int:
        if not self.chunks:
            return -1
        first, rgb, _valid = self.chunks[-1]
        return first + len(rgb)

    def cut(self, row0: int, row1: int, col0: int, col1: int) -> tuple[np.ndarray, np.ndarray]:
        """Pixels and validity of a window, reading rows as needed (rows before ``row0`` are dropped,
        so windows must come in non-decreasing ``row0`` to read each row once)."""
        if not self.chunks or row0 < self.chunks[0][0] or row0 >= self.stop:
            self.chunks = []
        else:
            while self.chunks and self.chunks[0][0] + len(self.chunks[0][1]) <= row0:
                self.chunks.pop(0)
        while self.stop < row1:
            self._read_more(row0)
        parts = [(first, rgb, valid) for first, rgb, valid in self.chunks
                 if first < row1 and first + len(rgb) > row0]
        col0, col1 = col0 - self.col0, col1 - self.col0
        if len(parts) == 1:
            first, rgb, valid = parts[0]
            tile, mask = rgb[row0 - first:row1 - first, col0:col1], valid[row0 - first:row1 - first, col0:col1]
        else:
            tile = np.concatenate([rgb[max(0, row0 - f):row1 - f, col0:col1] for f, rgb, _v in parts])
            mask = np.concatenate([v[max(0, row0 - f):row1 - f, col0:col1] for f, _r, v in parts])
        tile.flags.writeable = False
        return tile, mask

    def _read_more(self, row0: int) -> None:
        first = row0 if not self.chunks else self.stop
        end = min(self.source.height, -(-(first + self.chunk_rows) // self.block) * self.block)
        # Each block is decoded once, so GDAL's block cache (by default 5% of RAM, several GiB on a
        # big machine) only piles up stale blocks: cap it to about one chunk of the file's blocks.
        with rasterio.Env(GDAL_CACHEMAX=self.cache_bytes):
            rgb, valid = self.source.read_rgb(first, end, self.col0, self.col1)
        self.chunks.append((first, rgb, valid))


def _stack(tiles: list[np.ndarray]) -> np.ndarray:
    out = np.empty((len(tiles), *tiles[0].shape), dtype=tiles[0].dtype)
    for i, tile in enumerate(tiles):
        out[i] = tile
    return out


def _drain(results: queue.Queue) -> None:
    try:
        while True:
            results.get_nowait()
    except queue.Empty:
        pass


@dataclass
class _End:
    skipped: np.ndarray


@dataclass
class _Failure:
    error: BaseException
