"""Tile pyramid arithmetic: the map reads screen-resolution windows, never the whole raster."""

from __future__ import annotations

import numpy as np
import pytest

from rs_vlm_app.gui.tiles import (
    TILE,
    TileKey,
    level_for_scale,
    overview_level,
    rgba_image,
    tile_window,
    tiles_in,
)


def test_overview_level_fits_the_scene_in_about_a_screen():
    assert overview_level(934, 723) == 0
    assert overview_level(100_000, 60_000) == 7  # 100000 / 2**7 = 781 px
    assert 100_000 / 2 ** overview_level(100_000, 60_000) <= 1024


@pytest.mark.parametrize("scale, level", [(4.0, 0), (1.0, 0), (0.6, 0), (0.5, 1), (0.2, 2), (0.01, 6), (1e-9, 7)])
def test_level_follows_the_zoom(scale, level):
    assert level_for_scale(scale, 100_000, 60_000) == level


def test_tile_windows_cover_the_raster_once_per_level():
    w, h = 1000, 700
    for level in range(3):
        covered = np.zeros((h, w), dtype=int)
        for key in tiles_in(0, 0, w, h, level, w, h):
            win = tile_window(key, w, h)
            covered[win.row0:win.row1, win.col0:win.col1] += 1
            assert win.out_w <= TILE and win.out_h <= TILE
            assert win.out_w == -(-(win.col1 - win.col0) // 2 ** level)
        assert (covered == 1).all()


def test_visible_tiles_are_only_those_in_view_nearest_first():
    keys = tiles_in(600, 600, 900, 800, 0, 100_000, 60_000)
    assert {k.tx for k in keys} == {2, 3} and {k.ty for k in keys} == {2, 3}
    assert keys[0] == TileKey(0, 2, 2) or keys[0] == TileKey(0, 3, 2)
    assert tiles_in(-500, -500, -10, -10, 0, 1000, 1000) == []


def test_rgba_image_makes_nodata_transparent(qapp):
    rgb = np.full((2, 3, 3), 200, dtype=np.uint8)
    valid = np.array([[True, False, True], [True, True, True]])
    image = rgba_image(rgb, valid)
    assert (image.width(), image.height()) == (3, 2)
    assert image.pixelColor(1, 0).alpha() == 0 and image.pixelColor(0, 0).alpha() == 255
    assert image.pixelColor(0, 0).red() == 200
