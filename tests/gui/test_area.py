"""The desktop app's area of interest: Area › Choose area…, its indicator, the jobs' ``aoi`` field, and the
masked outputs of a real worker."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely

from rs_vlm_app.gui.jobs import CANCELLED, DONE, FAILED
from rs_vlm_app.gui.layers import VectorLayer
from rs_vlm_app.jobs.client import Job
from tests.conftest import SAMPLES

SCENE = SAMPLES / "naip_2020_5m.tif"
WORKER_TIMEOUT_MS = 240_000


@pytest.fixture(scope="module")
def west_third(tmp_path_factory):
    """The scene's west third as a polygon in EPSG:4326 (the scene is UTM 14N), in a GeoPackage with two
    layers (the area, and a layer of points that cannot be an area)."""
    from pyproj import Transformer

    with rasterio.open(SCENE) as src:
        left, bottom, right, top = src.bounds
        crs = src.crs
    cut = left + (right - left) / 3
    to_wgs84 = Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform
    polygon = shapely.transform(shapely.segmentize(shapely.box(left - 50, bottom - 50, cut, top + 50), 20), to_wgs84,
                                interleaved=False)
    path = tmp_path_factory.mktemp("area") / "areas.gpkg"
    gpd.GeoDataFrame({"name": ["west"]}, geometry=[polygon], crs="EPSG:4326").to_file(path, layer="west")
    gpd.GeoDataFrame({"name": ["p"]}, geometry=[shapely.Point(0, 0)], crs="EPSG:4326").to_file(path, layer="points")
    return path, cut


def submitted(window, monkeypatch) -> list[dict]:
    """Record the specs the window submits, without a worker."""
    specs: list[dict] = []

    def submit(spec, title="", interactive=False):
        specs.append(spec)
        return Job.ended("cancelled", "not run", spec=spec)

    monkeypatch.setattr(window.jobs, "submit", submit)
    return specs


def test_the_chosen_area_goes_into_every_job_until_cleared(window, tiny_choice, west_third, monkeypatch):
    path, _cut = west_third
    specs = submitted(window, monkeypatch)
    window.model_picker.add_custom(tiny_choice)
    assert window.open_scene(SCENE)
    assert window.area.label.text() == "Area: whole scene" and not window.area.clear_action.isEnabled()
    assert window.area.choose(path, "west")
    assert window.area.label.text() == "Area: areas.gpkg:west" and window.area.clear_action.isEnabled()
    assert "1 polygon" in window.messages.last()[1]
    window.ask("a lake")
    window.classify_tiles("aid", grid="128")
    window.caption_tiles(tiny_choice, grid="128")
    assert [s["kind"] for s in specs] == ["localize", "classify", "caption"]
    assert all(s["aoi"] == f"{path}:west" for s in specs)
    window.area.clear_action.trigger()
    assert window.area.label.text() == "Area: whole scene" and "whole scene" in window.messages.last()[1]
    window.ask("a lake")
    assert "aoi" not in specs[-1]


def test_a_file_that_cannot_be_an_area_is_one_message_and_keeps_the_area(window, west_third, tmp_path):
    path, _cut = west_third
    assert window.area.choose(path, "west")
    assert not window.area.choose(path, "points")
    level, text = window.messages.last()
    assert level == "error" and text.startswith("Area not changed: ") and "\n" not in text and "points" in text
    assert not window.area.choose(tmp_path / "missing.gpkg")
    assert "missing.gpkg" in window.messages.last()[1]
    assert window.area.aoi == f"{path}:west"  # the earlier area stays


@pytest.mark.slow
def test_a_query_in_an_area_is_masked_outside_it(qtbot, window, tiny_choice, west_third):
    path, cut = west_third
    window.model_picker.add_custom(tiny_choice)
    assert window.open_scene(SCENE)
    assert window.area.choose(path, "west")
    job = window.ask("a lake")
    assert job.spec["aoi"] == f"{path}:west"
    qtbot.waitUntil(lambda: job.state in (DONE, FAILED, CANCELLED), timeout=WORKER_TIMEOUT_MS)
    assert job.state == DONE, (job.error, job.log[-5:])
    with rasterio.open(job.result.files[[f.role for f in job.result.files].index("heatmap")].path) as heat:
        band = heat.read(1, masked=True)
        columns = np.flatnonzero(~band.mask.all(axis=0))
        east_edge = heat.xy(0, int(columns.max()))[0]
    assert columns.min() == 0 and east_edge == pytest.approx(cut, abs=3 * heat.res[0])
    assert any(isinstance(x, VectorLayer) and x.kind == "hotspots" for x in window.layer_list())
    vectors = job.result.files[[f.role for f in job.result.files].index("vectors")].path
    peaks = gpd.read_file(vectors, layer="hotspots")["peak_x"]
    assert len(peaks) and (peaks < cut).all()  # no hot spot outside the area
