"""Semantic localization end to end: outputs on the scene, the embedding cache, nodata, and bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
import torch

from rs_vlm_app.cli import main
from rs_vlm_app.models.encoder import ClipEncoder
from rs_vlm_app.models.factory import load_model
from rs_vlm_app.models.spec import ModelSpec
from rs_vlm_app.tasks.embedding_cache import EmbeddingCache
from rs_vlm_app.tasks.localize import HEATMAP_NODATA, LocalizeOptions, localize
from tests import tinymodels
from tests.conftest import REPO
from tests.geo.rasters import NAIP, naip, naip_with_hole, write
from tests.vectors import read_layer


@pytest.fixture(scope="module")
def encoder(tiny_clip):
    loaded = load_model(ModelSpec(model_config=tiny_clip["config"], checkpoint=tiny_clip["checkpoint"]),
                        device="cpu")
    return ClipEncoder(loaded, device="cpu", batch_size=32)


def error_line(stderr: str) -> str:
    """The one error line of a failed command (warnings and progress lines may precede it)."""
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("rsvlm: error:")]
    assert len(errors) == 1, stderr
    return errors[0]


def model_args(tiny_clip) -> list[str]:
    return ["--model-config", str(tiny_clip["config"]), "--checkpoint", str(tiny_clip["checkpoint"]), "--device", "cpu"]


def test_outputs_lie_exactly_on_the_scene(encoder, tmp_path):
    out = tmp_path / "out"
    result = localize(NAIP, ["a lake", "Trees along a road!"], out, encoder, cache=EmbeddingCache(tmp_path / "c"))
    assert [q.heatmap.name for q in result.queries] == ["a_lake_heatmap.tif", "trees_along_a_road_heatmap.tif"]
    with rasterio.open(NAIP) as scene, rasterio.open(result.queries[0].heatmap) as heat:
        assert heat.crs == scene.crs
        assert heat.bounds == pytest.approx(tuple(scene.bounds), abs=1e-6)
        # default resolution: smallest SeLo window (256) / 32 = 8 source pixels per heat-map pixel
        assert heat.res == pytest.approx((scene.res[0] * scene.width / heat.width, scene.res[1] * scene.height
                                          / heat.height))
        assert heat.width == pytest.approx(scene.width / 8, abs=1)
        assert heat.dtypes[0] == "float32" and heat.nodata == HEATMAP_NODATA
        assert heat.descriptions[0] == "a lake" and heat.tags()["query"] == "a lake"
        values = heat.read(1, masked=True)
        assert values.min() == pytest.approx(0.0) and values.max() == pytest.approx(1.0)
    assert result.queries[0].heatmap.with_suffix(".qml").is_file()
    layers = [name for name, _ in pyogrio.list_layers(result.queries[0].vectors)]
    assert sorted(layers) == ["hotspots", "tiles"]
    meta, polygons, tiles = read_layer(result.queries[0].vectors, "tiles")
    with rasterio.open(NAIP) as scene:
        assert rasterio.crs.CRS.from_user_input(meta["crs"]) == scene.crs
        assert shapely.total_bounds(polygons) == pytest.approx(tuple(scene.bounds), abs=1e-6)
        scene_box = shapely.box(*scene.bounds)
    assert len(polygons) == result.encoding.tiles_encoded
    assert set(tiles["scale"]) == {256, 512}  # 768 does not fit a 934 x 723 scene
    _, spot_shapes, spots = read_layer(result.queries[0].vectors, "hotspots")
    assert len(spot_shapes) == result.queries[0].hotspots >= 1
    assert list(spots["rank"]) == list(range(1, len(spot_shapes) + 1))
    assert (spots["area_unit"] == "m2").all() and (spots["area"] > 0).all()
    assert all(scene_box.buffer(1e-6).contains(s) for s in spot_shapes)
    manifest = json.loads((out / "localize.json").read_text())
    assert [q["query"] for q in manifest["queries"]] == ["a lake", "Trees along a road!"]


def test_the_best_tile_is_where_the_heat_map_is_hottest(encoder, tmp_path):
    result = localize(NAIP, ["a field"], tmp_path / "o", encoder, LocalizeOptions(heatmap_pixel=1.0),
                      cache=EmbeddingCache(tmp_path / "c"))
    _, _, tiles = read_layer(result.queries[0].vectors, "tiles")
    best = int(np.argmax(tiles["score"]))
    assert tiles["score"][best] == pytest.approx(result.queries[0].best_cosine, abs=1e-6)
    with rasterio.open(result.queries[0].heatmap) as heat:
        values = heat.read(1)
    inside = values[tiles["row0"][best]:tiles["row1"][best], tiles["col0"][best]:tiles["col1"][best]]
    assert inside.mean() > np.ma.masked_equal(values, HEATMAP_NODATA).mean()


def test_a_second_query_reuses_the_tile_embeddings(encoder, tmp_path):
    cache = EmbeddingCache(tmp_path / "cache")
    first = localize(NAIP, ["a lake"], tmp_path / "a", encoder, cache=cache)
    second = localize(NAIP, ["a road", "a lake"], tmp_path / "b", encoder, cache=cache)
    assert not first.encoding.cache_hit and first.encoding.tiles_encoded > 0
    assert second.encoding.cache_hit
    with rasterio.open(first.queries[0].heatmap) as a, rasterio.open(second.queries[1].heatmap) as b:
        np.testing.assert_allclose(a.read(), b.read(), atol=1e-4)
    other_precision = ClipEncoder(encoder.loaded, device="cpu", precision="bf16")
    third = localize(NAIP, ["a lake"], tmp_path / "c", other_precision, cache=cache)
    assert not third.encoding.cache_hit


def test_a_cached_query_never_loads_the_image_tower(encoder, tiny_clip, tmp_path):
    """Every tile embedding cached: a freshly loaded model answers with its text tower only (the image
    tower's weights are never assigned) and writes what a whole model writes."""
    cache = EmbeddingCache(tmp_path / "cache")
    whole = localize(NAIP, ["a road"], tmp_path / "a", encoder, cache=cache)
    loaded = load_model(ModelSpec(model_config=tiny_clip["config"], checkpoint=tiny_clip["checkpoint"]), device="cpu")
    text_only = localize(NAIP, ["a road"], tmp_path / "b", ClipEncoder(loaded, device="cpu", batch_size=32),
                         cache=cache)
    assert text_only.encoding.cache_hit and not loaded.visual_loaded
    with rasterio.open(whole.queries[0].heatmap) as a, rasterio.open(text_only.queries[0].heatmap) as b:
        np.testing.assert_array_equal(a.read(), b.read())
        assert a.tags() == b.tags()
    for layer in ("hotspots", "tiles"):
        _, shapes_a, fields_a = read_layer(whole.queries[0].vectors, layer)
        _, shapes_b, fields_b = read_layer(text_only.queries[0].vectors, layer)
        assert len(shapes_a) > 0 and shapely.equals_exact(shapes_a, shapes_b, 0).all()
        np.testing.assert_equal(fields_a, fields_b)


@pytest.mark.slow
def test_a_cached_cli_query_imports_only_what_it_needs(tiny_clip, tmp_path):
    """The second `rsvlm localize` on a scene imports none of transformers, timm, huggingface_hub,
    torch._dynamo and scipy.ndimage (each costs a noticeable share of the command's start-up)."""
    watched = ("transformers", "timm", "huggingface_hub", "torch._dynamo", "scipy.ndimage")
    argv = ["localize", str(NAIP), "QUERY", "-o", str(tmp_path / "o"), *model_args(tiny_clip), "--json"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    report = ("import atexit, runpy, sys; "
              f"atexit.register(lambda: print('IMPORTED', [m for m in {watched!r} if m in sys.modules], "
              "file=sys.stderr)); sys.argv = ['rsvlm', *sys.argv[1:]]; "
              "runpy.run_module('rs_vlm_app', run_name='__main__')")
    for query in ("a lake", "a road"):
        done = subprocess.run([sys.executable, "-c", report, *[query if a == "QUERY" else a for a in argv]],
                              capture_output=True, text=True, env=env, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["summary"]["encoding"]["cache_hit"]
    assert [line for line in done.stderr.splitlines() if line.startswith("IMPORTED")] == ["IMPORTED []"]


def test_nodata_pixels_are_nodata_in_every_output(encoder, tmp_path):
    scene = naip_with_hole(tmp_path / "hole.tif", rows=slice(0, 400), cols=slice(0, 500))
    result = localize(scene, ["a lake"], tmp_path / "o", encoder, LocalizeOptions(heatmap_pixel=1.0),
                      cache=EmbeddingCache(tmp_path / "c"))
    with rasterio.open(result.queries[0].heatmap) as heat:
        values = heat.read(1)
    assert (values[:400, :500] == HEATMAP_NODATA).all()
    assert (values[450:, 550:] != HEATMAP_NODATA).all()
    _, _, tiles = read_layer(result.queries[0].vectors, "tiles")
    fully_inside_hole = (tiles["row1"] <= 400) & (tiles["col1"] <= 500)
    assert len(tiles["row0"]) > 0 and not fully_inside_hole.any()


def test_cli_localize_prints_one_line_per_query(tiny_clip, tmp_path, capsys):
    code = main(["localize", str(NAIP), "a lake", "a road", "-o", str(tmp_path / "o"), *model_args(tiny_clip)])
    assert code == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 2 and printed[0].startswith("'a lake': ") and "a_lake_heatmap.tif" in printed[0]


def _truncated_tiff(tmp_path):
    whole = write(tmp_path / "whole.tif", naip()[:3])
    data = whole.read_bytes()
    path = tmp_path / "truncated.tif"
    path.write_bytes(data[: len(data) // 3])
    return path


def _tiny_raster(tmp_path):
    return write(tmp_path / "small.tif", np.zeros((3, 100, 120), np.uint8) + 90)


def _all_nodata(tmp_path):
    return write(tmp_path / "empty.tif", np.zeros((3, 600, 600), np.uint8), nodata=0)


def _not_a_raster(tmp_path):
    path = tmp_path / "notes.tif"
    path.write_text("these are my field notes, not an image\n")
    return path


@pytest.mark.parametrize(("make_scene", "fragment"), [
    (_not_a_raster, "not a raster"),
    (_truncated_tiff, "truncated.tif"),
    (_tiny_raster, "smaller than"),
    (_all_nodata, "nodata"),
    (lambda tmp_path: tmp_path / "missing.tif", "missing.tif"),
])
def test_bad_scenes_get_one_line(tiny_clip, tmp_path, capsys, make_scene, fragment):
    scene = make_scene(tmp_path)
    code = main(["localize", str(scene), "a lake", "-o", str(tmp_path / "out"), *model_args(tiny_clip)])
    err = error_line(capsys.readouterr().err)
    assert code == 2, err
    assert scene.name in err and fragment.lower() in err.lower()


def test_empty_query_is_refused(tiny_clip, tmp_path, capsys):
    code = main(["localize", str(NAIP), "a lake", "  ", "-o", str(tmp_path / "out"), *model_args(tiny_clip)])
    err = error_line(capsys.readouterr().err)
    assert code == 2 and "query 2 is empty" in err


def test_unwritable_output_folder(tiny_clip, tmp_path, capsys):
    blocker = tmp_path / "results.txt"  # a file where the output folder's parent should be
    blocker.write_text("not a folder")
    code = main(["localize", str(NAIP), "a lake", "-o", str(blocker / "out"), *model_args(tiny_clip)])
    err = error_line(capsys.readouterr().err)
    assert code == 2 and "cannot write to the output folder" in err and "results.txt" in err


def test_checkpoint_of_another_architecture(tiny_clip, tmp_path, capsys):
    config = tinymodels.tiny_config("clip")
    config["embed_dim"] = config["embed_dim"] * 2
    other = tinymodels.write_config(tmp_path, "rsvlm-test-wider-clip", config)
    code = main(["localize", str(NAIP), "a lake", "-o", str(tmp_path / "out"), "--model-config", str(other),
                 "--checkpoint", str(tiny_clip["checkpoint"]), "--device", "cpu"])
    err = error_line(capsys.readouterr().err)
    assert code != 0 and "tiny_clip.pt" in err


def test_corrupt_checkpoint(tiny_clip, tmp_path, capsys):
    corrupt = tmp_path / "weights.pt"
    corrupt.write_bytes(tiny_clip["checkpoint"].read_bytes()[:5000])
    code = main(["localize", str(NAIP), "a lake", "-o", str(tmp_path / "out"), "--model-config",
                 str(tiny_clip["config"]), "--checkpoint", str(corrupt), "--device", "cpu"])
    err = error_line(capsys.readouterr().err)
    assert code != 0 and "weights.pt" in err


def test_torch_is_not_asked_to_unpickle_code(tiny_clip, tmp_path, capsys):
    """A checkpoint holding a pickled object (not just tensors) is refused, not executed."""
    evil = tmp_path / "evil.pt"
    torch.save({"state_dict": torch.nn.Linear(2, 2)}, evil)
    code = main(["localize", str(NAIP), "a lake", "-o", str(tmp_path / "out"), "--model-config",
                 str(tiny_clip["config"]), "--checkpoint", str(evil), "--device", "cpu"])
    err = error_line(capsys.readouterr().err)
    assert code != 0 and "evil.pt" in err and "weights_only loading refuses" in err
