"""rsvlm index and search --archive with the local engine: contents, resume, filters, bad input, STAC."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import shapely

from rs_vlm_app.archive.store import Archive, read_tile_table
from tests.archive.conftest import GRID, SCENES, model_args, run_cli


def test_index_holds_every_tile_with_footprints(local_archive, scenes):
    archive = Archive(local_archive)
    found = archive.scenes()
    assert sorted(found) == sorted(SCENES)
    assert found["naip_20200831_a"].date == "2020-08-31" and found["naip_2020_c"].date is None
    # 256 x 256 scenes, 64 px tiles: 16 each; the nodata scene keeps its right half only (8 tiles)
    assert found["naip_20200831_a"].tiles == 16 and found["naip_20120731_b"].tiles == 16
    assert found["landsat_20200701_nodata"].tiles == 8 and found["landsat_20200701_nodata"].skipped == 8
    part = next(archive.parts(["naip_20200831_a"]))
    table = read_tile_table(part.table)
    geo = json.loads(table.schema.metadata[b"geo"])  # GeoParquet: lon/lat primary geometry, native CRS kept
    assert geo["primary_column"] == "geometry" and "crs" not in geo["columns"]["geometry"]
    assert geo["columns"]["footprint_native"]["crs"]["id"]["code"] == 26914
    assert table.num_rows == 16 == len(part.embeddings())
    assert set(table["scene"].to_pylist()) == {"naip_20200831_a"} and set(table["date"].to_pylist()) == {"2020-08-31"}
    row = table.slice(0, 1).to_pylist()[0]
    native = shapely.from_wkb(row["footprint_native"])
    x0, y0 = 485899.0 + 5 * row["col0"], 5209246.0 - 5 * row["row0"]
    assert native.bounds == pytest.approx((x0, y0 - 320, x0 + 320, y0))
    lon, lat = shapely.from_wkb(row["geometry"]).centroid.coords[0]
    assert -99.19 < lon < -99.12 and 47.0 < lat < 47.04
    assert np.allclose(np.linalg.norm(part.embeddings(), axis=1), 1.0, atol=1e-5)


def test_search_archive_writes_ranked_lonlat_hits(local_archive, tiny_clip, tmp_path, capfd):
    out = tmp_path / "hits.gpkg"
    code, summary, _ = run_cli(["search", "--archive", str(local_archive), "green fields", "-k", "12", "-o",
                                str(out), *model_args(tiny_clip)], capfd)
    assert code == 0 and summary["mode"] == "exact" and len(summary["hits"]) == 12
    frame = pyogrio.read_dataframe(out)
    assert frame.crs.to_epsg() == 4326 and frame["rank"].tolist() == list(range(1, 13))
    assert (np.diff(frame["score"]) <= 0).all()
    assert {"native_crs", "native_footprint", "row0", "col1", "scale", "date"} <= set(frame.columns)
    utm = frame[frame["scene"] == "naip_20120731_b"]
    left = Archive(local_archive).scenes()["naip_20120731_b"].transform[2]
    assert len(utm)
    for _, row in utm.iterrows():  # native footprint and window agree with the scene's own grid
        assert row["native_crs"] == "EPSG:26914"
        assert shapely.from_wkt(row["native_footprint"]).bounds[0] == pytest.approx(left + 5 * row["col0"])
    assert out.with_suffix(".png").is_file()


def test_where_and_aoi_against_hand_computed_tiles(local_archive, tiny_clip, tmp_path, capfd):
    archive = Archive(local_archive)
    code, summary, _ = run_cli(["search", "--archive", str(local_archive), "a road", "-k", "1000", "--where",
                                "date >= 2020-01-01", "-o", str(tmp_path / "w.gpkg"), *model_args(tiny_clip)], capfd)
    dated_2020 = [s for s in archive.scenes().values() if s.date and s.date >= "2020-01-01"]
    assert code == 0 and {h["scene"] for h in summary["hits"]} == {s.id for s in dated_2020}
    assert len(summary["hits"]) == sum(s.tiles for s in dated_2020)
    # an area in EPSG:4326 around pixels cols 70..130, rows 10..60 of naip_20200831_a (EPSG:26914, 5 m)
    from pyproj import Transformer

    to_ll = Transformer.from_crs("EPSG:26914", "EPSG:4326", always_xy=True)
    x = [485899.0 + 5 * c for c in (70, 130)]
    y = [5209246.0 - 5 * r for r in (10, 60)]
    ring = shapely.segmentize(shapely.box(x[0], y[1], x[1], y[0]), 10)
    area = shapely.transform(ring, lambda xy: np.column_stack(to_ll.transform(xy[:, 0], xy[:, 1])))
    aoi = tmp_path / "aoi.gpkg"
    pyogrio.write_dataframe(__import__("geopandas").GeoDataFrame({"n": [1]}, geometry=[area], crs=4326), aoi)
    code, summary, _ = run_cli(["search", "--archive", str(local_archive), "a road", "-k", "50", "--aoi", str(aoi),
                                "--where", "date >= 2020-01-01", "-o", str(tmp_path / "a.gpkg"),
                                *model_args(tiny_clip)], capfd)
    assert code == 0
    assert sorted((h["scene"], *h["window"][:4]) for h in summary["hits"]) == [
        ("naip_20200831_a", 0, 64, 64, 128), ("naip_20200831_a", 0, 64, 128, 192)]


def test_rerun_skips_finished_scenes_and_adds_new_ones(local_archive, scenes, tiny_clip, tmp_path, capfd):
    archive = tmp_path / "copy"
    shutil.copytree(local_archive, archive)
    (archive / ".lock").unlink(missing_ok=True)
    committed = {s.id: s.committed for s in Archive(archive).scenes().values()}
    extra = tmp_path / "more" / "naip_20120731_extra.tif"
    extra.parent.mkdir()
    shutil.copy(scenes["naip_20200831_a"], extra)  # same pixels, another name: already in the archive
    code, summary, _ = run_cli(["index", *map(str, scenes.values()), str(extra), "-o", str(archive), "--grid", GRID,
                                *model_args(tiny_clip)], capfd)
    assert code == 0 and summary["added"] == [] and sorted(summary["present"]) == sorted([*SCENES, "naip_20200831_a"])
    assert {s.id: s.committed for s in Archive(archive).scenes(refresh=True).values()} == committed


def test_bad_scene_is_reported_at_the_end_and_others_complete(scenes, tiny_clip, tmp_path, capfd):
    bad = tmp_path / "broken.tif"
    bad.write_text("not a raster")
    archive = tmp_path / "a"
    code, summary, _ = run_cli(["index", str(scenes["naip_20200831_a"]), str(bad), "-o", str(archive), "--grid",
                                GRID, *model_args(tiny_clip)], capfd)
    assert code == 1 and summary["added"] == ["naip_20200831_a"]
    assert [f["name"] for f in summary["failures"]] == ["broken"]
    assert "broken.tif: not a raster GDAL can read" in summary["failures"][0]["message"]
    assert json.loads((archive / "failures.json").read_text())[0]["name"] == "broken"


def test_one_line_errors(scenes, local_archive, tiny_clip, tmp_path, capfd):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for folder in ("a", "b"):
        shutil.copy(scenes["naip_2020_c"], tmp_path / folder / "same.tif")
    code, _, err = run_cli(["index", str(tmp_path / "a" / "same.tif"), str(tmp_path / "b" / "same.tif"), "-o",
                            str(tmp_path / "x"), *model_args(tiny_clip)], capfd)
    assert code == 2 and "two scenes are named 'same'" in err and len(err.strip().splitlines()) == 1
    # a query model other than the archive's
    from tests import tinymodels

    other = tinymodels.save_checkpoint(tinymodels.build_model(tiny_clip["config"], seed=1), tmp_path / "other.pt")
    code, _, err = run_cli(["search", "--archive", str(local_archive), "a lake", "-o", str(tmp_path / "h.gpkg"),
                            "--checkpoint", str(other), "--model-config", str(tiny_clip["config"])], capfd)
    assert code == 2 and "was made with the model" in err
    # indexing into it with another grid
    code, _, err = run_cli(["index", str(scenes["naip_2020_c"]), "-o", str(local_archive), "--grid", "128",
                            *model_args(tiny_clip)], capfd)
    assert code == 2 and "grid regular:128" in err
    code, _, err = run_cli(["index", str(scenes["naip_2020_c"]), "-o", str(tmp_path / "y"), "--engine", "ray",
                            "--ray-address", "127.0.0.1:9", *model_args(tiny_clip)], capfd)
    assert code == 2 and "cannot reach the Ray cluster at 127.0.0.1:9" in err


def test_stac_item_collection_with_local_hrefs(scenes, tiny_clip, tmp_path, capfd):
    pytest.importorskip("pystac")
    folder = tmp_path / "stac"
    folder.mkdir()
    shutil.copy(scenes["naip_2020_c"], folder / "c.tif")

    def item(item_id: str, assets: dict) -> dict:
        return {"type": "Feature", "stac_version": "1.0.0", "id": item_id, "properties":
                {"datetime": "2021-05-04T10:00:00Z"}, "geometry": None, "links": [], "assets": assets}

    collection = {"type": "FeatureCollection", "features": [
        item("scene-one", {"visual": {"href": "c.tif", "type": "image/tiff; application=geotiff"}}),
        item("scene-two", {"thumbnail": {"href": "thumb.png", "type": "image/png"}})]}
    (folder / "items.json").write_text(json.dumps(collection))
    archive = tmp_path / "arch"
    code, summary, _ = run_cli(["index", "--scenes", str(folder / "items.json"), "-o", str(archive), "--grid", GRID,
                                *model_args(tiny_clip)], capfd)
    assert code == 1 and summary["added"] == ["scene-one"]
    assert "STAC item scene-two has no visual asset" in summary["failures"][0]["message"]
    info = Archive(archive).scenes()["scene-one"]
    assert info.date == "2021-05-04" and Path(info.path) == (folder / "c.tif").resolve()
