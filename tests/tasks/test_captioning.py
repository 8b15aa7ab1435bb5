"""Per-tile captioning end to end: captions, georeferencing, CLIP scores, resume after cancel and kill."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pytest
import rasterio
import shapely

from rs_vlm_app.errors import Cancelled, UserError
from rs_vlm_app.geo.grid import GridSpec, build_windows
from rs_vlm_app.tasks.captioning import CaptionOptions, caption_scene
from tests.conftest import REPO
from tests.geo.rasters import NAIP, naip, write
from tests.vectors import read_layer

pytest.importorskip("open_clip")


def load(fixture: dict, family: str):
    from rs_vlm_app.models.factory import load_model
    from rs_vlm_app.models.spec import ModelSpec

    return load_model(ModelSpec(checkpoint=fixture["checkpoint"], model_config=fixture["config"]),
                      device="cpu", expect_family=family)


@pytest.fixture(scope="module")
def captioner(taught_coca):
    from rs_vlm_app.models.captioner import CocaCaptioner

    return CocaCaptioner(load(taught_coca, "coca"), batch_size=4)


@pytest.fixture(scope="module")
def clip(tiny_clip):
    from rs_vlm_app.models.encoder import ClipEncoder

    return ClipEncoder(load(tiny_clip, "clip"), batch_size=8)


def window_set(fields) -> set[tuple[int, int, int, int]]:
    return set(zip(*(fields[k].tolist() for k in ("row0", "row1", "col0", "col1")), strict=True))


class CancelAfter:
    """A reporter that asks to stop once ``n`` batches of captions are done."""

    def __init__(self, n: int):
        self.n, self.seen = n, 0

    def progress(self, stage, done, total=None):
        if stage == "caption tiles" and done:
            self.seen += 1

    def log(self, message, level="info"):
        pass

    def cancel_requested(self):
        return self.seen >= self.n


def test_captions_every_tile_on_the_scene(tmp_path, captioner, taught_coca):
    out = tmp_path / "captions.gpkg"
    result = caption_scene(NAIP, out, captioner, CaptionOptions(grid="256", decoding="greedy"))
    meta, polygons, fields = read_layer(out)
    windows = build_windows(GridSpec.parse("256"), 723, 934)
    assert result.tiles == len(windows) == 12 and result.decoded_now == 12 and result.skipped == 0
    assert set(fields["caption"]) == {taught_coca["sentence"]}
    assert (fields["complete"] == 1).all() and (fields["mean_logprob"] < 0).all()
    assert window_set(fields) == {tuple(w[:4]) for w in windows.tolist()}
    assert (fields["scale"] == 256).all()
    # georeferencing: the scene's CRS, tiles exactly on their pixel windows, together covering the scene
    assert meta["crs"] == "EPSG:26914"
    with rasterio.open(NAIP) as src:
        transform, bounds = src.transform, src.bounds
    for polygon, r0, c0 in zip(polygons, fields["row0"], fields["col0"], strict=True):
        x0, y0 = transform @ (c0, r0)
        minx, _miny, _maxx, maxy = polygon.bounds
        assert (minx, maxy) == pytest.approx((x0, y0))
    assert shapely.union_all(polygons).bounds == pytest.approx(tuple(bounds))


def test_beam_captions_and_a_second_run_from_the_checkpoint(tmp_path, captioner, taught_coca):
    options = CaptionOptions(grid="256,512", decoding="beam", beams=2)
    first = caption_scene(NAIP, tmp_path / "a.gpkg", captioner, options)
    again = caption_scene(NAIP, tmp_path / "b.gpkg", captioner, options)
    assert first.decoded_now == first.tiles > 12 and again.decoded_now == 0
    _, _, a = read_layer(tmp_path / "a.gpkg")
    _, _, b = read_layer(tmp_path / "b.gpkg")
    assert set(a["caption"]) == {taught_coca["sentence"]} and list(a["caption"]) == list(b["caption"])
    assert sorted(set(a["scale"].tolist())) == [256, 512]


def test_clip_scores_are_tile_caption_cosines(tmp_path, captioner, clip):
    from rs_vlm_app.geo.raster import open_raster
    from rs_vlm_app.tasks.scene_encoding import encode_scene, fast_preprocessing

    out = tmp_path / "scored.gpkg"
    result = caption_scene(NAIP, out, captioner, CaptionOptions(grid="256", decoding="greedy"), clip=clip)
    _, _, fields = read_layer(out)
    assert result.clip_scored
    with open_raster(NAIP) as source:
        embeddings, stats = encode_scene(source, GridSpec.parse("256"), clip, fast_preprocessing(clip))
    assert stats.cache_hit  # captioning filled the scene embedding cache; nothing is encoded twice
    text = clip.encode_texts([fields["caption"][0]])[0]
    windows = [tuple(w[:4]) for w in embeddings.windows.tolist()]
    for k in range(len(fields["caption"])):
        i = windows.index((fields["row0"][k], fields["row1"][k], fields["col0"][k], fields["col1"][k]))
        assert fields["clip_score"][k] == pytest.approx(float(embeddings.embeddings[i] @ text), abs=1e-5)
    assert np.ptp(fields["clip_score"]) > 0


def test_raster_without_georeferencing_uses_pixel_coordinates(tmp_path, captioner):
    scene = write(tmp_path / "plain.tif", naip()[:3, :300, :400], crs=None, transform=None)
    out = tmp_path / "plain.gpkg"
    caption_scene(scene, out, captioner, CaptionOptions(grid="200", decoding="greedy"))
    meta, polygons, fields = read_layer(out)
    assert meta["crs"] is None
    assert shapely.union_all(polygons).bounds == pytest.approx((0, -300, 400, 0))


def test_nodata_tiles_are_skipped(tmp_path, captioner):
    data = naip()
    data[:, :, :512] = 0
    with rasterio.open(NAIP) as src:
        scene = write(tmp_path / "holes.tif", data, crs=src.crs, transform=src.transform, nodata=0)
    result = caption_scene(scene, tmp_path / "holes.gpkg", captioner, CaptionOptions(grid="256", decoding="greedy"))
    _, _, fields = read_layer(tmp_path / "holes.gpkg")
    assert result.skipped == 6 and result.tiles == 6 and set(fields["col0"].tolist()) == {512, 678}


def test_cancelled_run_resumes_and_writes_each_tile_once(tmp_path, captioner):
    options = CaptionOptions(grid="128", decoding="greedy")
    out = tmp_path / "resumed.gpkg"
    with pytest.raises(Cancelled):
        caption_scene(NAIP, out, captioner, options, reporter=CancelAfter(2))
    assert not out.exists()
    result = caption_scene(NAIP, out, captioner, options)
    windows = build_windows(GridSpec.parse("128"), 723, 934)
    assert 0 < result.decoded_now < result.tiles == len(windows)
    _, _, fields = read_layer(out)
    assert len(fields["row0"]) == len(window_set(fields)) == len(windows)


@pytest.mark.slow
def test_killed_process_resumes_and_writes_each_tile_once(tmp_path, taught_coca, _isolated_cache):
    """SIGKILL the CLI mid-run; the same command again captions only the rest, each tile once."""
    scene = write(tmp_path / "crop.tif", naip()[:3, :384, :384], nodata=None)
    out = tmp_path / "killed.gpkg"
    command = [sys.executable, "-m", "rs_vlm_app", "caption", str(scene), "-o", str(out),
               "--checkpoint", str(taught_coca["checkpoint"]), "--model-config", str(taught_coca["config"]),
               "--grid", "48", "--batch-size", "1", "--decoding", "greedy", "--device", "cpu"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    total = len(build_windows(GridSpec.parse("48"), 384, 384))
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    stored = 0
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        stores = list((_isolated_cache / "captions").glob("*.sqlite"))
        if stores:
            try:
                with sqlite3.connect(f"file:{stores[0]}?mode=ro", uri=True, timeout=1) as db:
                    stored = db.execute("SELECT COUNT(*) FROM captions").fetchone()[0]
            except sqlite3.Error:
                stored = 0
            if stored >= 3:
                process.send_signal(signal.SIGKILL)
                break
        time.sleep(0.02)
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL, process.stderr.read().decode()[-2000:]
    assert not out.exists() and 3 <= stored < total
    second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-2000:]
    assert "resuming captioning at tile" in second.stderr
    assert f"{total} tiles captioned" in second.stdout
    _, _, fields = read_layer(out)
    assert len(fields["row0"]) == len(window_set(fields)) == total
    assert set(fields["caption"]) == {taught_coca["sentence"]}


def test_options_round_trip_and_validation():
    options = CaptionOptions(grid="256,512@0.5", decoding="greedy", bands=(4, 3, 2), min_valid=0.25)
    assert CaptionOptions.from_dict(options.to_dict()) == options
    assert options.to_dict()["grid"] == "regular:256,512@0.5"
    for bad, message in [({"grid": "abc"}, "bad grid"), ({"decoding": "sample"}, "decoding must be one of"),
                         ({"beams": 0}, "beams"), ({"min_valid": 2}, "min_valid must be between 0 and 1"),
                         ({"bands": (0, 1, 2)}, "band numbers"), ({"color": 1}, "unknown caption option")]:
        with pytest.raises(UserError, match=message):
            CaptionOptions.from_dict({**CaptionOptions().to_dict(), **bad})


def test_output_must_be_a_vector_format(tmp_path, captioner):
    with pytest.raises(UserError, match=r"unknown vector format '\.shp'; use .geojson, .geoparquet, .gpkg"):
        caption_scene(NAIP, tmp_path / "out.shp", captioner)
    assert not list(tmp_path.iterdir())
