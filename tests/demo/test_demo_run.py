"""`rsvlm demo` end to end: the quick demo in a subprocess, as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely

from tests.conftest import REPO

pytestmark = pytest.mark.slow


def rsvlm(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "rs_vlm_app", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "out"
    proc = rsvlm("demo", "-o", str(out), "--quick", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc


def read_layer(gpkg: Path, layer: str):
    from pyogrio.raw import read

    meta, _, geometry, values = read(str(gpkg), layer=layer)
    return meta, [shapely.from_wkb(g) for g in geometry], dict(zip(meta["fields"], values, strict=True))


def test_report_and_metrics_are_written(quick_demo):
    out, proc = quick_demo
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "Semantic localization (SeLo)" in page
    assert page.count('src="data:image/') >= 11  # scene, 8 heat maps, 2 class maps, tiles
    summary = json.loads((out / "demo.json").read_text())
    assert set(summary["selo"]) == {"trained", "untrained"}
    assert summary["training"]["steps"] > 100
    assert summary["training"]["final_loss"] < summary["training"]["first_loss"] - 0.5
    assert "mean" in proc.stdout and "report:" in proc.stdout
    for name in ("scene_truth.png", "heat_lake_trained.png", "classes_trained.png"):
        assert (out / "figures" / name).read_bytes()[:4] == b"\x89PNG"


def test_trained_model_finds_the_objects_far_better_than_untrained(quick_demo):
    out, _ = quick_demo
    selo = json.loads((out / "demo.json").read_text())["selo"]
    trained, untrained = selo["trained"], selo["untrained"]
    assert trained["mean"]["Rmi"] > untrained["mean"]["Rmi"] + 0.15
    better = [q for q in trained["per_query"] if trained["per_query"][q]["Rmi"] > untrained["per_query"][q]["Rmi"]]
    assert len(better) >= 3, better
    assert trained["mean"]["Rsu"] > untrained["mean"]["Rsu"]


def test_heat_maps_lie_on_the_scene_and_hot_spots_on_the_objects(quick_demo):
    out, _ = quick_demo
    with rasterio.open(out / "world" / "eval.tif") as scene:
        crs, bounds = scene.crs, scene.bounds
    _, regions, fields = read_layer(out / "world" / "eval_objects.gpkg", "regions")
    manifest = json.loads((out / "localize" / "trained" / "localize.json").read_text())
    found = 0
    for entry in manifest["queries"]:
        with rasterio.open(out / "localize" / "trained" / entry["heatmap"]) as heat:
            assert heat.crs == crs
            assert heat.bounds == pytest.approx(bounds)
            values = heat.read(1)
            values = values[values != heat.nodata]
            assert values.min() >= 0.0 and values.max() == pytest.approx(1.0)
        meta, spots, spot_fields = read_layer(out / "localize" / "trained" / entry["vectors"], "hotspots")
        assert meta["crs"] == "EPSG:32633"
        assert spots, entry["query"]
        scene_box = shapely.box(*bounds)
        assert all(scene_box.buffer(1.0).contains(s) for s in spots)
        best = spots[int(np.argmin(spot_fields["rank"]))]
        truth = [g for g, q in zip(regions, fields["query"], strict=True) if q == entry["query"]]
        found += any(best.intersects(t) for t in truth)
    assert found >= 3  # the best hot spot of (almost) every query is on one of its objects


def test_class_map_agrees_with_the_truth_better_when_trained(quick_demo):
    out, _ = quick_demo
    accuracy = json.loads((out / "demo.json").read_text())["classification"]
    assert accuracy["trained"]["accuracy"] > accuracy["untrained"]["accuracy"] + 0.2
    with rasterio.open(out / "classify" / "trained" / "classes.tif") as ds:
        assert ds.crs.to_epsg() == 32633


def test_trained_checkpoint_loads_in_rsvlm_localize(quick_demo, tmp_path):
    out, _ = quick_demo
    proc = rsvlm("localize", str(out / "world" / "eval.tif"), "a lake", "--model-config",
                 str(out / "model" / "run" / "model_config.json"), "--checkpoint",
                 str(out / "model" / "run" / "model.safetensors"), "--grid", "256", "-o", str(tmp_path / "loc"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "loc" / "a_lake_heatmap.tif").is_file()


def test_running_again_reuses_every_stage(quick_demo):
    out, _ = quick_demo
    before = (out / "demo.json").read_text()
    proc = rsvlm("demo", "-o", str(out), "--quick", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stderr.count("done earlier, reused") == 7
    assert (out / "demo.json").read_text() == before


def test_other_settings_in_the_same_folder_are_one_line_errors(quick_demo):
    out, _ = quick_demo
    proc = rsvlm("demo", "-o", str(out), "--quick", "--seed", "7")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"rsvlm: error: {out}: holds a demo made with other settings (seed); add --fresh to start over, "
        "or choose another folder"]


def test_unwritable_output_folder_is_a_one_line_error(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    proc = rsvlm("demo", "-o", str(blocker / "out"), "--quick")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rsvlm: error: ") and "a_file" in lines[0]


def test_full_demo(tmp_path):
    """The README's command at full size (about 2-3 minutes on two CPU cores)."""
    out = tmp_path / "demo"
    proc = rsvlm("demo", "-o", str(out), "--device", "cpu")
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "demo.json").read_text())
    assert summary["settings"]["scene_size"] == 2048
    assert summary["selo"]["trained"]["mean"]["Rmi"] > summary["selo"]["untrained"]["mean"]["Rmi"] + 0.15
    assert summary["classification"]["trained"]["accuracy"] > 0.4
