"""The block reader: every valid window once, the same pixels as a direct read, each row read once
per scale, resume, skipped tiles, errors and early exit, bounded memory on a 40k x 40k raster."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import cv2
import numpy as np
import pytest

from rs_vlm_app.errors import UserError
from rs_vlm_app.geo.blocks import BlockReader
from rs_vlm_app.geo.grid import SELO_GRID, GridSpec, build_windows
from rs_vlm_app.geo.raster import open_raster
from tests.conftest import REPO
from tests.geo.rasters import NAIP, naip_with_hole

SIDE = 64


def to_model(tile: np.ndarray) -> np.ndarray:
    return cv2.resize(tile, (SIDE, SIDE), interpolation=cv2.INTER_AREA)


def collect(reader: BlockReader) -> tuple[list, dict]:
    batches = list(reader)
    tiles = {}
    for batch in batches:
        assert batch.tiles.dtype == np.uint8 and batch.tiles.shape[1:] == (SIDE, SIDE, 3)
        for index, tile in zip(batch.indexes.tolist(), batch.tiles, strict=True):
            assert index not in tiles
            tiles[index] = tile
    return batches, tiles


class CountingSource:
    """A RasterSource whose read_rgb calls are recorded."""

    def __init__(self, source):
        self._source, self.reads = source, []

    def read_rgb(self, row0, row1, col0, col1, out_shape=None):
        self.reads.append((row0, row1, col0, col1))
        return self._source.read_rgb(row0, row1, col0, col1, out_shape)

    def __getattr__(self, name):
        return getattr(self._source, name)


def test_every_window_once_with_the_pixels_of_a_direct_read():
    grid = GridSpec("regular", (128, 200, 333), 0.25)
    with open_raster(NAIP) as src:
        windows = build_windows(grid, src.height, src.width)
        counting = CountingSource(src)
        reader = BlockReader(counting, windows, batch_size=7, tile_transform=to_model, chunk_rows=96)
        batches, tiles = collect(reader)
        assert sorted(tiles) == list(range(len(windows)))
        for index in range(0, len(windows), 5):
            row0, row1, col0, col1, _ = windows[index]
            direct, _ = src.read_rgb(row0, row1, col0, col1)
            np.testing.assert_array_equal(tiles[index], to_model(direct))
    # deterministic sorted order, batches of 7 (the last smaller)
    order = np.concatenate([b.indexes for b in batches])
    np.testing.assert_array_equal(order, reader.order)
    assert [len(b.indexes) for b in batches[:-1]] == [7] * (len(batches) - 1)
    assert batches[-1].next_start == len(windows)
    # each pixel read once per scale: full-width reads, rows 0..height exactly once for each scale
    assert all(c0 == 0 and c1 == 934 for _r0, _r1, c0, c1 in counting.reads)
    rows_read = sum(r1 - r0 for r0, r1, _c0, _c1 in counting.reads)
    assert rows_read == 723 * 3
    assert all((r1 - r0) >= 96 or r1 == 723 for r0, r1, _c0, _c1 in counting.reads)


def test_rows_order_reads_every_pixel_once_in_all_and_yields_the_same_tiles():
    with open_raster(NAIP) as src:
        windows = build_windows(SELO_GRID, src.height, src.width)
        _batches, by_scale = collect(BlockReader(src, windows, batch_size=8, tile_transform=to_model,
                                                 chunk_rows=128))
        counting = CountingSource(src)
        reader = BlockReader(counting, windows, batch_size=8, tile_transform=to_model, chunk_rows=128,
                             order="rows")
        batches, by_rows = collect(reader)
    assert sorted(by_rows) == sorted(by_scale) == list(range(len(windows)))
    for index, tile in by_rows.items():
        np.testing.assert_array_equal(tile, by_scale[index])
    keys = [(windows[i, 0], windows[i, 4], windows[i, 2]) for i in np.concatenate([b.indexes for b in batches])]
    assert keys == sorted(keys)
    assert sum(r1 - r0 for r0, r1, _c0, _c1 in counting.reads) == 723


def test_selo_grid_batches_match_direct_reads_across_chunk_boundaries():
    with open_raster(NAIP) as src:
        windows = build_windows(SELO_GRID, src.height, src.width)
        _batches, tiles = collect(BlockReader(src, windows, batch_size=16, tile_transform=to_model,
                                              chunk_rows=100))
        assert len(tiles) == len(windows)
        for index, (row0, row1, col0, col1, _s) in enumerate(windows.tolist()):
            direct, _ = src.read_rgb(row0, row1, col0, col1)
            np.testing.assert_array_equal(tiles[index], to_model(direct))


def test_start_skips_the_first_windows_and_next_start_resumes():
    with open_raster(NAIP) as src:
        windows = build_windows(GridSpec("regular", (100,)), src.height, src.width)
        full = np.concatenate([b.indexes for b in BlockReader(src, windows, batch_size=9,
                                                                 tile_transform=to_model)])
        later = BlockReader(src, windows, batch_size=9, tile_transform=to_model, start=20)
        assert len(later) == len(windows) - 20
        np.testing.assert_array_equal(np.concatenate([b.indexes for b in later]), full[20:])
        # stop after two batches, resume from the last batch's next_start: nothing lost or repeated
        seen = []
        for i, batch in enumerate(BlockReader(src, windows, batch_size=9, tile_transform=to_model)):
            seen.extend(batch.indexes.tolist())
            resume = batch.next_start
            if i == 1:
                break
        rest = BlockReader(src, windows, batch_size=9, tile_transform=to_model, start=resume)
        seen.extend(np.concatenate([b.indexes for b in rest]).tolist())
    assert seen == full.tolist()


class RecordingReporter:
    def __init__(self):
        self.lines = []

    def progress(self, stage, done, total=None):
        pass

    def log(self, message, level="info"):
        self.lines.append(message)

    def cancel_requested(self):
        return False


def test_windows_mostly_nodata_are_skipped_and_listed(tmp_path):
    path = naip_with_hole(tmp_path / "hole.tif", rows=slice(0, 300), cols=slice(0, 400))
    with open_raster(path) as src:
        windows = build_windows(GridSpec("regular", (128,), 0.5), src.height, src.width)
        expected_fraction = []
        for row0, row1, col0, col1, _ in windows.tolist():
            _rgb, valid = src.read_rgb(row0, row1, col0, col1)
            expected_fraction.append(valid.mean())
        expected_fraction = np.array(expected_fraction)
        reporter = RecordingReporter()
        reader = BlockReader(src, windows, batch_size=8, tile_transform=to_model, min_valid=0.5,
                             reporter=reporter)
        batches, tiles = collect(reader)
    kept = np.flatnonzero(expected_fraction >= 0.5)
    assert sorted(tiles) == kept.tolist()
    np.testing.assert_array_equal(np.sort(reader.skipped), np.flatnonzero(expected_fraction < 0.5))
    assert len(reader.skipped) > 10
    assert reporter.lines == [f"{len(reader.skipped)} tiles skipped: less than 50% valid pixels (nodata)"]
    per_batch = np.concatenate([b.skipped for b in batches])
    assert set(per_batch.tolist()) <= set(reader.skipped.tolist())
    fractions = {i: f for b in batches for i, f in zip(b.indexes.tolist(), b.valid_fraction.tolist(), strict=True)}
    for index in kept[:20]:
        assert fractions[index] == pytest.approx(expected_fraction[index])
    # partly masked tiles come with zeros where the data is missing
    partial = [i for i in kept if expected_fraction[i] < 1]
    assert partial and all((tiles[i] == 0).all(axis=-1).any() for i in partial)


def test_parallel_transform_gives_the_same_batches():
    with open_raster(NAIP) as src:
        windows = build_windows(SELO_GRID, src.height, src.width)
        one = list(BlockReader(src, windows, batch_size=10, tile_transform=to_model))
        four = list(BlockReader(src, windows, batch_size=10, tile_transform=to_model, workers=4))
    assert len(one) == len(four)
    for a, b in zip(one, four, strict=True):
        np.testing.assert_array_equal(a.indexes, b.indexes)
        np.testing.assert_array_equal(a.tiles, b.tiles)


def test_tiles_given_to_the_transform_are_read_only_and_batches_own_their_pixels():
    kept = []

    def identity(tile):
        assert not tile.flags.writeable
        kept.append(tile)
        return tile  # the reader must copy it before reusing its buffer

    with open_raster(NAIP) as src:
        windows = build_windows(GridSpec("regular", (200,)), src.height, src.width)
        batches = list(BlockReader(src, windows, batch_size=4, tile_transform=identity, chunk_rows=64))
        for batch in batches:
            for index, tile in zip(batch.indexes.tolist(), batch.tiles, strict=True):
                row0, row1, col0, col1, _ = windows[index]
                np.testing.assert_array_equal(tile, src.read_rgb(row0, row1, col0, col1)[0])


def test_errors_on_the_thread_reach_the_consumer():
    def broken(tile):
        raise RuntimeError("model input failed")

    with open_raster(NAIP) as src:
        windows = build_windows(SELO_GRID, src.height, src.width)
        with pytest.raises(RuntimeError, match="model input failed"):
            list(BlockReader(src, windows, batch_size=4, tile_transform=broken))


def test_truncated_file_is_a_user_error_in_the_consumer(tmp_path):
    path = tmp_path / "cut.tif"
    path.write_bytes(NAIP.read_bytes()[: NAIP.stat().st_size // 2])
    with open_raster(path) as src:
        windows = build_windows(SELO_GRID, src.height, src.width)
        with pytest.raises(UserError, match="cannot read rows .* truncated or corrupt"):
            list(BlockReader(src, windows, batch_size=4, tile_transform=to_model))


def reader_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "rsvlm-block-reader"]


def test_breaking_out_early_stops_the_thread():
    with open_raster(NAIP) as src:
        windows = build_windows(SELO_GRID, src.height, src.width)
        reader = BlockReader(src, windows, batch_size=2, tile_transform=to_model, prefetch=1)
        iterator = iter(reader)
        next(iterator)
        assert reader_threads()
        iterator.close()
        assert not reader_threads()
        for _batch in reader:
            break
        deadline = time.monotonic() + 5
        while reader_threads() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not reader_threads()


MEMORY_SCRIPT = r"""
import json, resource, sys, numpy as np, rasterio
from affine import Affine
from rs_vlm_app.geo.raster import open_raster
from rs_vlm_app.geo.grid import GridSpec, build_windows
from rs_vlm_app.geo.blocks import BlockReader

path, size = sys.argv[1], int(sys.argv[2])
profile = dict(driver="GTiff", width=size, height=size, count=3, dtype="uint8", tiled=True,
               blockxsize=512, blockysize=512, compress="deflate", crs="EPSG:32631",
               transform=Affine(0.5, 0, 400000, 0, -0.5, 5000000), SPARSE_OK=True, BIGTIFF="YES")
pattern = (np.indices((512, 512)).sum(axis=0) % 251).astype(np.uint8)
with rasterio.open(path, "w", **profile) as dst:  # only a diagonal of blocks is written; the rest is sparse
    for k in range(0, size // 512):
        dst.write(np.stack([pattern] * 3), window=((k * 512, k * 512 + 512), (k * 512, k * 512 + 512)))
src = open_raster(path)
windows = build_windows(GridSpec("regular", (768,)), src.height, src.width)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
tiles = 0
checksum = 0
for batch in BlockReader(src, windows, batch_size=64, min_valid=0.0,
                         tile_transform=lambda t: np.ascontiguousarray(t[::4, ::4])):
    tiles += len(batch.indexes)
    checksum += int(batch.tiles.sum(dtype=np.int64))
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"tiles": tiles, "windows": len(windows), "growth_mib": (after - before) / 1024,
                  "checksum": checksum}))
"""


@pytest.mark.slow
def test_memory_stays_bounded_on_a_40000_pixel_square_raster(tmp_path):
    """A 40000 x 40000 x 3 raster is 4.5 GiB of pixels; the reader must hold far less."""
    size = 40000
    env = dict(os.environ, PYTHONPATH=str(REPO))
    result = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, str(tmp_path / "big.tif"), str(size)],
                            capture_output=True, text=True, env=env, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["tiles"] == report["windows"] == 53 * 53
    assert report["checksum"] > 0  # the written blocks came through
    assert report["growth_mib"] < 1024, report


def test_a_wide_raster_is_read_in_vertical_strips_with_the_same_tiles(monkeypatch):
    """Past the buffer budget the reader cuts the raster into strips: every read is narrower than the
    raster, yet every window comes out exactly as a direct read."""
    import rs_vlm_app.geo.blocks as blocks

    grid = GridSpec("regular", (128, 200), 0.25)
    with open_raster(NAIP) as src:
        windows = build_windows(grid, src.height, src.width)
        monkeypatch.setattr(blocks, "BUFFER_BYTES", 4 * (200 + 2 * blocks.MIN_CHUNK_ROWS) * 500)
        counting = CountingSource(src)
        reader = BlockReader(counting, windows, batch_size=16, tile_transform=to_model, order="rows", workers=2)
        assert reader.band_cols < src.width
        _batches, tiles = collect(reader)
        assert sorted(tiles) == list(range(len(windows)))
        for index in range(0, len(windows), 3):
            row0, row1, col0, col1, _ = windows[index]
            direct, _ = src.read_rgb(row0, row1, col0, col1)
            np.testing.assert_array_equal(tiles[index], to_model(direct))
    assert max(c1 - c0 for _r0, _r1, c0, c1 in counting.reads) <= reader.band_cols + 200
    assert min(c0 for _r0, _r1, c0, _c1 in counting.reads) == 0
    assert max(c1 for _r0, _r1, _c0, c1 in counting.reads) == 934
