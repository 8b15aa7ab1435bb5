"""The Python API (rs_vlm_app.api, ``import rs_vlm``): the CLI's numbers as GeoDataFrames in the
scene's CRS, the CLI's validation as exceptions, progress to a callback."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from pyproj import CRS

import rs_vlm
from rs_vlm_app import api
from rs_vlm_app.cli import main
from rs_vlm_app.errors import UserError
from tests.geo.rasters import NAIP
from tests.vectors import read_layer

HOTSPOT_COLUMNS = ["rank", "query", "score", "mean_score", "area", "area_unit", "peak_x", "peak_y", "geometry"]
TILE_COLUMNS = ["row0", "row1", "col0", "col1", "scale", "score", "query", "geometry"]


@pytest.fixture(scope="module")
def scene_crs():
    with rasterio.open(NAIP) as src:
        return CRS.from_wkt(src.crs.to_wkt())


def clip_options(tiny_clip) -> dict:
    return {"model_config": tiny_clip["config"], "checkpoint": tiny_clip["checkpoint"], "device": "cpu"}


def clip_args(tiny_clip) -> list[str]:
    return ["--model-config", str(tiny_clip["config"]), "--checkpoint", str(tiny_clip["checkpoint"]), "--device", "cpu"]


def test_import_rs_vlm_is_the_api():
    assert rs_vlm.localize is api.localize and rs_vlm.UserError is UserError
    assert set(api.__all__) <= set(dir(rs_vlm))


@pytest.mark.slow
def test_localize_returns_the_clis_numbers_as_geodataframes(tmp_path, tiny_clip, scene_crs):
    stages = []
    result = rs_vlm.localize(NAIP, "a lake", out=tmp_path / "api", grid="256,512",
                             progress=lambda stage, done, total: stages.append((stage, done, total)),
                             **clip_options(tiny_clip))
    assert main(["localize", str(NAIP), "a lake", "-o", str(tmp_path / "cli"), "--grid", "256,512",
                 *clip_args(tiny_clip)]) == 0
    query = result.queries[0]
    assert query.query == "a lake" and query.heatmap.path == tmp_path / "api" / "a_lake_heatmap.tif"
    with rasterio.open(tmp_path / "cli" / "a_lake_heatmap.tif") as cli:
        np.testing.assert_array_equal(query.heatmap.read(1).filled(cli.nodata), cli.read(1))
        assert query.heatmap.crs == cli.crs and query.heatmap.transform == cli.transform
    for layer, columns in (("hotspots", HOTSPOT_COLUMNS), ("tiles", TILE_COLUMNS)):
        frame = getattr(query, layer)
        assert list(frame.columns) == columns and CRS.from_user_input(frame.crs) == scene_crs
        _, geometries, fields = read_layer(tmp_path / "cli" / "a_lake.gpkg", layer)
        assert len(frame) == len(geometries) > 0
        for name in columns[:-1]:
            assert list(frame[name]) == list(fields[name]), name
        assert all(a.equals_exact(b, 1e-9) for a, b in zip(frame.geometry, geometries, strict=True))
    assert result.hotspots.equals(query.hotspots)
    assert ("encode tiles", 0, 16) in stages and ("encode tiles", 16, 16) in stages and stages[-1][0] == "write results"


@pytest.mark.slow
def test_search_and_classify_frames(tmp_path, tiny_clip, scene_crs):
    found = rs_vlm.search([NAIP], "a road", out=tmp_path / "hits.parquet", top_k=3, grid="256",
                          contact_sheet=False, **clip_options(tiny_clip))
    assert found.out.suffix == ".parquet" and found.sheet is None
    assert list(found.results["rank"]) == [1, 2, 3] and CRS.from_user_input(found.results.crs) == scene_crs
    assert list(found.results.columns[:4]) == ["rank", "score", "scene", "scene_name"]
    assert found.results["score"].is_monotonic_decreasing
    classes = rs_vlm.classify(NAIP, ["forest", "river", "farmland"], out=tmp_path / "k", grid="256",
                              **clip_options(tiny_clip))
    assert classes.labels == ["forest", "river", "farmland"]
    index = classes.classes.read(1)
    assert index.shape == (23, 30) and set(np.unique(index.compressed())) <= {0, 1, 2}
    assert list(classes.tiles.columns[:5]) == ["row0", "row1", "col0", "col1", "scale"]
    assert sum(classes.area_share.values()) == pytest.approx(1.0)
    assert classes.probabilities.read().shape == (3, 23, 30)


def test_bad_input_raises_the_clis_one_line_error(tmp_path, tiny_clip):
    with pytest.raises(UserError, match="file not found"):
        rs_vlm.localize(tmp_path / "missing.tif", "a lake", out=tmp_path / "o", **clip_options(tiny_clip))
    with pytest.raises(UserError, match=r"min_valid must be between 0 and 1"):
        rs_vlm.localize(NAIP, "a lake", out=tmp_path / "o", min_valid=2.0, **clip_options(tiny_clip))
    with pytest.raises(UserError, match=r"queries\[0\] must be a string"):
        rs_vlm.localize(NAIP, [3], out=tmp_path / "o", **clip_options(tiny_clip))
    with pytest.raises(UserError, match=r"naip_2020_5m.tif: not a vector file OGR can read \(OGR does not "):
        rs_vlm.localize(NAIP, "a lake", out=tmp_path / "o", aoi=f"{NAIP}:x", **clip_options(tiny_clip))
    with pytest.raises(TypeError, match="unexpected keyword argument 'devices'"):
        rs_vlm.localize(NAIP, "a lake", devices="cpu")


@pytest.mark.slow
def test_index_and_search_archive(tmp_path, tiny_clip):
    indexed = rs_vlm.index(tmp_path / "archive", [NAIP], grid="256", **clip_options(tiny_clip))
    assert indexed.archive == tmp_path / "archive" and not indexed.summary["failures"]
    found = rs_vlm.search_archive(tmp_path / "archive", "a lake", top_k=4, contact_sheet=False,
                                  **clip_options(tiny_clip))
    assert list(found.results["rank"]) == [1, 2, 3, 4] and found.results.crs.to_epsg() == 4326
    assert found.results["score"].is_monotonic_decreasing


@pytest.mark.slow
def test_caption_frame_has_the_documented_columns(tmp_path, tiny_coca, scene_crs):
    result = rs_vlm.caption(NAIP, out=tmp_path / "caps.geojson", grid="512", decoding="greedy", max_len=5,
                            model_config=tiny_coca["config"], checkpoint=tiny_coca["checkpoint"], device="cpu")
    frame = result.captions
    assert list(frame.columns) == ["caption", "scale", "row0", "row1", "col0", "col1", "mean_logprob", "tokens",
                                   "complete", "geometry"]
    assert len(frame) == 4 and set(frame["scale"]) == {512} and CRS.from_user_input(frame.crs) == scene_crs
    assert result.summary["tiles"] == 4 and result.out == tmp_path / "caps.geojson"


def test_progress_true_draws_one_tqdm_bar_per_stage(capsys):
    reporter = api._Reporter(True)
    for done in range(0, 11, 5):
        reporter.progress("encode tiles", done, 10)
    reporter.progress("write results", 0, 1)
    reporter.close()
    err = capsys.readouterr().err
    assert "encode tiles: 100%" in err and "10/10" in err and "write results" in err
    assert reporter.bars["encode tiles"].n == 10
