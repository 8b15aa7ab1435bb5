"""caption|classify --scenes LIST [--engine ray]: per-scene outputs and one merged EPSG:4326 layer."""

from __future__ import annotations

import numpy as np
import pyogrio
import pytest

from tests.archive.conftest import GRID, model_args, run_cli

CHOSEN = ("naip_20200831_a", "naip_20120731_a", "landsat_20200601_utm")


@pytest.fixture
def scene_list(scenes, tmp_path):
    listing = tmp_path / "scenes.txt"
    listing.write_text("# three scenes\n" + "".join(f"{scenes[name]}\n" for name in CHOSEN))
    return listing


@pytest.mark.slow
def test_classify_many_scenes_local_and_ray_agree(ray_cluster, scene_list, tiny_clip, tmp_path, capfd):
    classes = tmp_path / "classes.txt"
    classes.write_text("forest\nfarmland\nriver\n")
    merged = {}
    for engine in ("local", "ray"):
        out = tmp_path / engine
        extra = ["--workers", "2"] if engine == "ray" else []
        code, summary, _ = run_cli(["classify", "--scenes", str(scene_list), "--classes", str(classes), "--grid", GRID,
                                    "-o", str(out), "--engine", engine, *extra, *model_args(tiny_clip)], capfd)
        assert code == 0 and sorted(summary["scenes"]) == sorted(CHOSEN) and summary["failures"] == []
        for name in CHOSEN:  # what `rsvlm classify` writes, per scene
            assert (out / name / "classes.tif").is_file() and (out / name / "tiles.gpkg").is_file()
        frame = pyogrio.read_dataframe(out / "tiles.gpkg", layer="tiles")
        assert frame.crs.to_epsg() == 4326 and set(frame["scene"]) == set(CHOSEN)
        merged[engine] = frame.sort_values(["scene", "row0", "col0"]).reset_index(drop=True)
    local, ray = merged["local"], merged["ray"]
    assert len(local) == len(ray) and (local["class_1"] == ray["class_1"]).all()
    assert np.allclose(local["prob_1"], ray["prob_1"], atol=1e-5)
    assert np.allclose(local.geometry.bounds.values, ray.geometry.bounds.values)


def test_caption_many_scenes_reports_a_bad_one(scenes, tiny_coca, tmp_path, capfd):
    listing = tmp_path / "list.txt"
    bad = tmp_path / "bad.tif"
    bad.write_text("no raster")
    listing.write_text(f"{scenes['naip_2020_c']}\n{bad}\n")
    code, summary, _ = run_cli(["caption", "--scenes", str(listing), "--grid", "128", "--decoding", "greedy",
                                "--max-len", "4", "-o", str(tmp_path / "caps"), "--checkpoint",
                                str(tiny_coca["checkpoint"]), "--model-config", str(tiny_coca["config"]),
                                "--device", "cpu"], capfd)
    assert code == 1 and summary["scenes"] == ["naip_2020_c"]
    assert "bad.tif" in summary["failures"][0]["message"]
    frame = pyogrio.read_dataframe(tmp_path / "caps" / "captions.gpkg", layer="captions")
    assert frame.crs.to_epsg() == 4326 and len(frame) == 4 and set(frame["scene"]) == {"naip_2020_c"}
