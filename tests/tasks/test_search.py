"""Tile search across scenes: ranking, reprojection to one CRS, the contact sheet, the cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from affine import Affine
from PIL import Image
from pyproj import Transformer

from rs_vlm_app.errors import UserError
from rs_vlm_app.tasks.embedding_cache import SceneEmbeddings
from rs_vlm_app.tasks.search import Hit, SearchOptions, rank_tiles, search_scenes
from tests.colour_encoder import ColourEncoder
from tests.geo.rasters import write
from tests.vectors import read_layer

UTM = Affine(1.0, 0.0, 500000.0, 0.0, -1.0, 4500000.0)
LONLAT = Affine(1e-5, 0.0, 15.0, 0.0, -1e-5, 45.0)


def scene(path: Path, blue: tuple[slice, slice], crs: str, transform: Affine, grey: int = 90) -> Path:
    """A grey 256 x 256 scene with a blue patch."""
    data = np.full((3, 256, 256), grey, dtype=np.uint8)
    data[:, blue[0], blue[1]] = 0
    data[2, blue[0], blue[1]] = 220
    return write(path, data, crs=crs, transform=transform)


@pytest.fixture
def scenes(tmp_path):
    a = scene(tmp_path / "a.tif", (slice(0, 64), slice(0, 64)), "EPSG:32633", UTM)
    b = scene(tmp_path / "b.tif", (slice(192, 256), slice(128, 256)), "EPSG:32633", UTM @ Affine.translation(300, 0))
    c = scene(tmp_path / "c.tif", (slice(64, 128), slice(64, 128)), "EPSG:4326", LONLAT)
    return [a, b, c]


def test_best_tiles_across_scenes_in_the_first_scenes_crs(tmp_path, scenes):
    encoder = ColourEncoder()
    out = tmp_path / "blue.gpkg"
    result = search_scenes(scenes, "blue water", out, encoder, SearchOptions(top_k=4, grid="64", columns=2))
    meta, polygons, fields = read_layer(out)
    assert meta["crs"] == "EPSG:32633" and "first scene" in result.crs_note
    assert fields["rank"].tolist() == [1, 2, 3, 4] and (np.diff(fields["score"]) <= 0).all()
    # the four all-blue tiles: a (0,0), b (192,128) and (192,192), c (64,64); all score ~1
    found = set(zip(fields["scene_name"], fields["row0"].tolist(), fields["col0"].tolist(), strict=True))
    assert found == {("a.tif", 0, 0), ("b.tif", 192, 128), ("b.tif", 192, 192), ("c.tif", 64, 64)}
    assert (fields["score"] > 0.99).all() and set(fields["query"]) == {"blue water"}
    # footprints: a and b in their own CRS, c reprojected from EPSG:4326 to UTM 33N
    for polygon, name, r0, c0 in zip(polygons, fields["scene_name"], fields["row0"], fields["col0"], strict=True):
        if name == "c.tif":
            to_utm = Transformer.from_crs("EPSG:4326", "EPSG:32633", always_xy=True)
            corners = [LONLAT @ (c0 + dc, r0 + dr) for dc, dr in ((0, 0), (64, 0), (64, 64), (0, 64))]
            xs, ys = to_utm.transform(*zip(*corners, strict=True))
            assert polygon.bounds == pytest.approx((min(xs), min(ys), max(xs), max(ys)), abs=0.5)
        else:
            transform = UTM if name == "a.tif" else UTM @ Affine.translation(300, 0)
            x0, y0 = transform @ (c0, r0)
            assert polygon.bounds == pytest.approx((x0, y0 - 64, x0 + 64, y0))
    # the contact sheet: 4 tiles in 2 columns
    sheet = Image.open(result.sheet)
    assert result.sheet == tmp_path / "blue.png" and sheet.size == (2 * (192 + 6) + 6, 28 + 2 * (192 + 20 + 16 + 6) + 6)


def test_scenes_are_encoded_once(tmp_path, scenes):
    encoder = ColourEncoder()
    first = search_scenes(scenes, "blue", tmp_path / "1.gpkg", encoder, SearchOptions(top_k=3, grid="64"))
    encoded = encoder.images_encoded
    second = search_scenes(scenes, "green", tmp_path / "2.gpkg", encoder, SearchOptions(top_k=3, grid="64",
                                                                                       contact_sheet=False))
    assert first.encoded_now == 3 and second.encoded_now == 0 and encoder.images_encoded == encoded == 48
    assert second.sheet is None and not (tmp_path / "2.png").exists()


def test_footprints_in_a_chosen_crs(tmp_path, scenes):
    result = search_scenes(scenes, "blue", tmp_path / "ll.gpkg", ColourEncoder(),
                           SearchOptions(top_k=2, grid="64", crs="EPSG:4326", contact_sheet=False))
    meta, polygons, _ = read_layer(tmp_path / "ll.gpkg")
    assert meta["crs"] == "EPSG:4326" and result.crs == "EPSG:4326"
    assert all(14 < p.bounds[0] < 16 and 40 < p.bounds[1] < 46 for p in polygons)


def test_scene_without_georeferencing_cannot_join_georeferenced_ones(tmp_path, scenes):
    plain = write(tmp_path / "plain.tif", np.full((3, 128, 128), 50, np.uint8), crs=None, transform=None)
    with pytest.raises(UserError, match="plain.tif: has no georeferencing"):
        search_scenes([scenes[0], plain], "blue", tmp_path / "x.gpkg", ColourEncoder(),
                      SearchOptions(grid="64"))
    assert not (tmp_path / "x.gpkg").exists()


def test_pixel_frame_when_no_scene_is_georeferenced(tmp_path):
    plain = write(tmp_path / "plain.tif", np.full((3, 128, 128), 50, np.uint8), crs=None, transform=None)
    result = search_scenes([plain], "blue", tmp_path / "p.gpkg", ColourEncoder(), SearchOptions(top_k=1, grid="64"))
    meta, polygons, _ = read_layer(tmp_path / "p.gpkg")
    assert meta["crs"] is None and result.crs is None and polygons[0].bounds[3] <= 0


def _scene(scores: list[float], encoded: list[bool]) -> SceneEmbeddings:
    n = len(scores)
    emb = np.zeros((n, 2), dtype=np.float32)
    emb[:, 0] = scores
    windows = np.array([[i, i + 1, 0, 1, 1] for i in range(n)], dtype=np.int64)
    return SceneEmbeddings("k", Path("."), windows, np.array(encoded), emb, {})


def test_rank_tiles_merges_scenes_and_breaks_ties_by_order():
    a = _scene([0.1, 0.9, 0.5, 0.95], [True, True, True, False])  # the 0.95 tile was not encoded
    b = _scene([0.9, 0.2, 0.7], [True, True, True])
    hits = rank_tiles([a, b], np.array([1.0, 0.0]), k=4)
    assert [(h.scene, h.window[0], round(h.score, 3)) for h in hits] == [(0, 1, 0.9), (1, 0, 0.9), (1, 2, 0.7),
                                                                         (0, 2, 0.5)]
    assert [h.rank for h in hits] == [1, 2, 3, 4] and isinstance(hits[0], Hit)
    assert len(rank_tiles([a, b], np.array([1.0, 0.0]), k=100)) == 6


@pytest.mark.parametrize(("inputs", "message"), [
    (["only-a-query"], "give one or more scenes and then the query"),
    (["missing.tif", "a lake"], "missing.tif: file not found \\(the query goes last\\)"),
])
def test_command_line_inputs(inputs, message):
    from rs_vlm_app.commands.search import split_inputs

    with pytest.raises(UserError, match=message):
        split_inputs(inputs)


def test_query_must_come_last(scenes):
    from rs_vlm_app.commands.search import split_inputs

    with pytest.raises(UserError, match="is a file; put the text query last"):
        split_inputs(["a lake", str(scenes[0])])
    assert split_inputs([str(scenes[0]), "a lake"]) == ([scenes[0]], "a lake")


def test_options_validation():
    assert SearchOptions.from_dict(SearchOptions(top_k=5, crs="EPSG:4326").to_dict()).crs == "EPSG:4326"
    for bad, message in [({"crs": "EPSG:999999"}, "unknown CRS"), ({"top_k": 0}, "top_k"),
                         ({"cell": 4}, "cell must be a whole number between 16 and 2048")]:
        with pytest.raises(UserError, match=message):
            SearchOptions(**bad)
