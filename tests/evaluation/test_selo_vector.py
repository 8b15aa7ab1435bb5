"""SeLo on your own scene with vector ground truth: the AIR-SLT parity polygons, converted to map
coordinates and saved in another CRS, give the AIR-SLT path's metrics number for number."""

from __future__ import annotations

import json

import geopandas as gpd
import pytest
import rasterio
import shapely

from rs_vlm_app.cli import main
from rs_vlm_app.errors import UserError
from rs_vlm_app.evaluation.selo_eval import evaluate_selo
from rs_vlm_app.evaluation.selo_vector import evaluate_selo_vector, read_truth
from rs_vlm_app.geo.grid import GridSpec
from rs_vlm_app.tasks.embedding_cache import EmbeddingCache
from tests.colour_encoder import ColourEncoder
from tests.conftest import SELO

PARITY = SELO / "parity"
SCENE = PARITY / "visible_scene.tif"


@pytest.fixture(scope="module")
def samples():
    """The parity sample with two polygons (a multi-part truth; one sample keeps the test short)."""
    return json.loads((PARITY / "visible_anno.json").read_text())[1:]


@pytest.fixture
def truth(tmp_path, samples):
    """The parity samples' polygons in map coordinates, saved in EPSG:4326 with the query in "what"."""
    with rasterio.open(SCENE) as src:
        transform, crs = src.transform, src.crs
    rows = []
    for sample in samples:
        for points in sample["points"]:
            ring = [transform @ (x, y) for x, y in points]
            rows.append({"what": sample["caption"], "geometry": shapely.Polygon(ring)})
    path = tmp_path / "truth.gpkg"
    gpd.GeoDataFrame(rows, crs=crs.to_wkt()).to_crs("EPSG:4326").to_file(path, layer="truth")
    return path


@pytest.mark.slow
def test_vector_truth_gives_the_airslt_metrics(tmp_path, samples, truth):
    data = tmp_path / "airslt"
    (data / "imgs").mkdir(parents=True)
    (data / "annotations").mkdir()
    (data / "imgs" / "visible_scene.tif").symlink_to(SCENE)
    anno = [{**s, "jpg_name": "visible_scene.tif"} for s in samples]
    (data / "annotations" / "anno.json").write_text(json.dumps(anno))
    cache = EmbeddingCache(tmp_path / "cache")
    grid = GridSpec("selo", (256, 512))
    airslt = evaluate_selo(data, ColourEncoder(), tmp_path / "a", grid=grid, cache=cache)
    encoder = ColourEncoder()
    ours = evaluate_selo_vector(SCENE, f"{truth}:truth", "what", encoder, tmp_path / "b", grid=grid, cache=cache)
    assert encoder.images_encoded == 0  # the same scene encoding, from the cache
    metrics = ("Rsu", "Ras", "Rda", "Rmi")
    assert [r["caption"] for r in ours["per_sample"]] == [s["caption"] for s in samples]
    for theirs, mine in zip(airslt["per_sample"], ours["per_sample"], strict=True):
        assert {m: mine[m] for m in metrics} == {m: theirs[m] for m in metrics}
    assert ours["mean"] == airslt["mean"]
    assert (tmp_path / "b" / "selo_metrics.csv").read_text().splitlines()[1:] != []


def test_truth_without_the_query_field_is_one_line(tmp_path, truth, capsys):
    with pytest.raises(UserError, match=r"has no field 'query' to take the queries from; its fields: what"):
        read_truth(truth, "query")
    code = main(["eval", "selo", "--scene", str(SCENE), "--truth", str(truth), "--query-field", "label",
                 "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("rsvlm: error:")]
    assert len(lines) == 1 and "has no field 'label'" in lines[0] and "truth.gpkg" in lines[0]


def test_scene_without_truth_is_refused(tmp_path, capsys):
    assert main(["eval", "selo", "--scene", str(SCENE), "-o", str(tmp_path / "out")]) == 2
    assert "missing: truth, query_field" in capsys.readouterr().err
