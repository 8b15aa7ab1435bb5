"""Tile grids: the published SeLo grid window for window, regular grids covering the raster."""

from __future__ import annotations

import csv
import logging

import numpy as np
import pytest
import rasterio

from rs_vlm_app.errors import UserError
from rs_vlm_app.geo.grid import SELO_GRID, GridSpec, build_windows
from tests.conftest import SELO

PARITY = SELO / "parity"


def reference_windows(sample: str) -> list[tuple[int, int, int, int]]:
    with open(PARITY / "reference_tiles.csv", newline="") as handle:
        return [(int(r["row0"]), int(r["row1"]), int(r["col0"]), int(r["col1"]))
                for r in csv.DictReader(handle) if r["sample"] == sample]


@pytest.mark.parametrize("sample", ["0", "1"])
def test_selo_grid_is_the_reference_grid(sample):
    with rasterio.open(PARITY / "visible_scene.tif") as scene:
        height, width = scene.height, scene.width
    assert (height, width) == (1446, 1868)
    reference = reference_windows(sample)
    assert len(reference) == len(set(reference)) == 121
    windows = build_windows(SELO_GRID, height, width)
    ours = [tuple(w) for w in windows[:, :4].tolist()]
    assert len(ours) == len(set(ours))  # every window once
    assert set(ours) == set(reference)
    assert (windows[:, 1] - windows[:, 0] == windows[:, 4]).all()
    assert (windows[:, 3] - windows[:, 2] == windows[:, 4]).all()
    assert sorted(set(windows[:, 4].tolist())) == [256, 512, 768]


def test_selo_grid_is_sorted_by_scale_row_col_and_pushes_back_to_the_border():
    windows = build_windows(SELO_GRID, 1000, 1300)
    keys = [(w[4], w[0], w[2]) for w in windows.tolist()]
    assert keys == sorted(keys)
    assert windows.dtype == np.int64 and windows.shape[1] == 5
    assert windows[:, 1].max() == 1000 and windows[:, 3].max() == 1300
    # 768 at 1000 rows: the grid at 0 (0; 768 -> pushed back to 232) and the grid at 384 (pushed back to 232)
    rows_768 = sorted(set(windows[windows[:, 4] == 768, 0].tolist()))
    assert rows_768 == [0, 232]


def test_selo_odd_window_shift_follows_the_reference():
    spec = GridSpec("selo", (255,))
    windows = build_windows(spec, 2000, 2000)
    # the reference shifts by step - int(0.5 * step) = 128 for 255
    assert 128 in set(windows[:, 0].tolist()) and 127 not in set(windows[:, 0].tolist())


@pytest.mark.parametrize("text", ["256", "200,300@0.25", "64@0.9"])
def test_regular_grid_covers_every_pixel_with_the_stride(text):
    spec = GridSpec.parse(text)
    height, width = 723, 934
    windows = build_windows(spec, height, width)
    for size in spec.sizes:
        mine = windows[windows[:, 4] == size]
        covered = np.zeros((height, width), dtype=int)
        for row0, row1, col0, col1, _ in mine.tolist():
            covered[row0:row1, col0:col1] += 1
        assert covered.min() >= 1
        stride = round(size * (1 - spec.overlap))
        rows = sorted(set(mine[:, 0].tolist()))
        assert rows[: -1] == list(range(0, rows[-2] + 1, stride))
        assert rows[-1] == height - size
        assert (mine[:, 1] <= height).all() and (mine[:, 3] <= width).all()
    assert len({tuple(w) for w in windows.tolist()}) == len(windows)


def test_scales_larger_than_the_raster_are_skipped_with_a_warning(caplog):
    caplog.set_level(logging.WARNING)
    windows = build_windows(SELO_GRID, 600, 2000)
    assert set(windows[:, 4].tolist()) == {256, 512}
    assert len(caplog.records) == 1 and "768" in caplog.records[0].getMessage()


def test_no_scale_fits_is_a_user_error():
    with pytest.raises(UserError) as exc:
        build_windows(SELO_GRID, 200, 300)
    assert str(exc.value) == (
        "the raster is 200 x 300 pixels, smaller than the smallest window 256; choose a smaller grid"
    )
    with pytest.raises(UserError) as exc:
        build_windows(GridSpec.parse("512"), 200, 300, path="small.png")
    assert str(exc.value).startswith("small.png: the raster is 200 x 300 pixels, smaller than the smallest window 512")


def test_parse_and_key():
    assert GridSpec.parse("selo") is SELO_GRID
    assert GridSpec.parse(" SeLo ") == SELO_GRID
    assert GridSpec.parse("256") == GridSpec("regular", (256,))
    assert GridSpec.parse("256,512@0.25") == GridSpec("regular", (256, 512), 0.25)
    assert GridSpec.parse("selo:128,256") == GridSpec("selo", (128, 256))
    for spec in (SELO_GRID, GridSpec("regular", (256, 512), 0.25), GridSpec("regular", (224,))):
        assert GridSpec.parse(spec.key()) == spec
    assert SELO_GRID.key() == "selo:256,512,768"
    assert GridSpec("regular", (256, 512), 0.25).key() == "regular:256,512@0.25"


@pytest.mark.parametrize("text", ["", "abc", "256@1", "256@-0.1", "0", "256,256", "256,x", "selo@0.5"])
def test_bad_grid_text_is_one_line_user_error(text):
    with pytest.raises(UserError) as exc:
        GridSpec.parse(text)
    message = str(exc.value)
    assert "\n" not in message and message.startswith(f"bad grid {text!r}")
