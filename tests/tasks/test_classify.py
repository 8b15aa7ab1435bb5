"""Zero-shot class maps on rasters whose answer is known (a colour encoder), their georeferencing,
metadata for GIS, and bad input."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine
from pyogrio.raw import read

from rs_vlm_app.errors import UserError
from rs_vlm_app.tasks.classify import CLASS_NODATA, PROBABILITY_NODATA, ClassifyOptions, classify_scene
from tests.colour_encoder import ColourEncoder
from tests.geo.rasters import write

TRANSFORM = Affine(2.0, 0.0, 300000.0, 0.0, -2.0, 4000000.0)


@pytest.fixture
def halves(tmp_path):
    """512 x 512, UTM 33N, 2 m pixels: left half red, right half green; nodata (0) from row 416 down."""
    data = np.zeros((3, 512, 512), dtype=np.uint8)
    data[0, :, :256] = 200
    data[1, :, 256:] = 180
    data[:, 416:, :] = 0
    return write(tmp_path / "halves.tif", data, crs="EPSG:32633", transform=TRANSFORM, nodata=0)


@pytest.fixture
def class_file(tmp_path):
    path = tmp_path / "colours.txt"
    path.write_text("# land covers by colour\nRedRoofs = red roofs\nGreenForest = green forest\nBlueWater = blue water\n")
    return path


def test_class_maps_follow_the_scene(tmp_path, halves, class_file):
    out = tmp_path / "out"
    encoder = ColourEncoder()
    result = classify_scene(halves, out, encoder, ClassifyOptions(classes=str(class_file), grid="128", top_k=2))
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["classes.tif", "classes.tif.aux.xml", "classes.qml", "probabilities.tif", "tiles.gpkg", "classify.json"])
    with rasterio.open(out / "classes.tif") as src:
        classes = src.read(1)
        assert src.crs.to_epsg() == 32633 and src.bounds == pytest.approx((300000, 3998976, 301024, 4000000))
        assert src.nodata == CLASS_NODATA and src.descriptions == ("class",)
        assert json.loads(src.tags()["CLASSES"]) == ["RedRoofs", "GreenForest", "BlueWater"]
        assert src.tags()["CLASS_1"] == "GreenForest"
        colours = src.colormap(1)
        assert colours[0] != colours[1] and colours[CLASS_NODATA][3] == 0
        h, w = classes.shape
    assert (h, w) == (32, 32)  # smallest window 128 / 8 = 16 source pixels per output pixel
    # left half red roofs, right half green forest; below row 384 no tile was classified (the bottom
    # windows are 75% nodata and skipped), so output rows 24+ are nodata
    assert (classes[:24, :16] == 0).all() and (classes[:24, 16:] == 1).all()
    assert (classes[24:] == CLASS_NODATA).all()
    with rasterio.open(out / "probabilities.tif") as src:
        p = src.read()
        assert src.count == 3 and src.descriptions == ("RedRoofs", "GreenForest", "BlueWater")
        assert src.transform == rasterio.open(out / "classes.tif").transform
    valid = p[0] != PROBABILITY_NODATA
    np.testing.assert_allclose(p[:, valid].sum(axis=0), 1.0, atol=1e-5)
    assert (p[0, :24, :8] > 0.99).all() and (p[1, :24, 24:] > 0.99).all()
    assert (p[:, 24:] == PROBABILITY_NODATA).all()
    aux = (out / "classes.tif.aux.xml").read_text()
    assert "<Category>RedRoofs</Category>" in aux and aux.index("RedRoofs") < aux.index("BlueWater")
    qml = (out / "classes.qml").read_text()
    assert 'label="GreenForest"' in qml and 'type="paletted"' in qml
    manifest = json.loads((out / "classify.json").read_text())
    assert manifest["area_share"]["RedRoofs"] == pytest.approx(0.5) and manifest["area_share"]["BlueWater"] == 0
    assert result.area_share == manifest["area_share"]
    assert manifest["classes"][2] == {"index": 2, "label": "BlueWater", "prompt": "blue water",
                                      "colour": manifest["classes"][2]["colour"]}
    # tiles: top-k classes per tile; the footprints lie on the scene
    meta, _, geometry, fields = read(out / "tiles.gpkg")
    fields = dict(zip(meta["fields"], fields, strict=True))
    assert meta["crs"] == "EPSG:32633" and len(geometry) == result.tiles == 12  # 4 x 4 windows but the bottom row
    for polygon, c0, c1, first, second in zip(shapely.from_wkb(geometry), fields["col0"], fields["col1"],
                                              fields["class_1"], fields["class_2"], strict=True):
        assert first == ("RedRoofs" if c1 <= 256 else "GreenForest") and second != first
        assert polygon.bounds[0] == pytest.approx(300000 + 2 * c0)
    assert (fields["prob_1"] >= fields["prob_2"]).all()


def test_category_names_reach_gdal(tmp_path, halves, class_file):
    if shutil.which("gdalinfo") is None:
        pytest.skip("gdalinfo is not installed")
    classify_scene(halves, tmp_path / "out", ColourEncoder(), ClassifyOptions(classes=str(class_file), grid="128"))
    info = subprocess.run(["gdalinfo", str(tmp_path / "out" / "classes.tif")], capture_output=True, text=True).stdout
    assert "Categories:" in info and "1: GreenForest" in info


def test_second_class_list_reuses_the_embeddings(tmp_path, halves, class_file):
    encoder = ColourEncoder()
    classify_scene(halves, tmp_path / "a", encoder, ClassifyOptions(classes=str(class_file), grid="128"))
    encoded = encoder.images_encoded
    classify_scene(halves, tmp_path / "b", encoder, ClassifyOptions(classes="eurosat", grid="128",
                                                                   probabilities=False))
    assert encoder.images_encoded == encoded  # only the class prompts were encoded
    assert not (tmp_path / "b" / "probabilities.tif").exists()


@pytest.mark.parametrize(("text", "message"), [
    ("", "the class list is empty"),
    ("Lake\nForest\nlake\n", "line 3: duplicate class name 'lake'"),
])
def test_bad_class_file_writes_nothing(tmp_path, halves, text, message):
    path = tmp_path / "bad.txt"
    path.write_text(text)
    encoder = ColourEncoder()
    with pytest.raises(UserError, match=message):
        classify_scene(halves, tmp_path / "out", encoder, ClassifyOptions(classes=str(path)))
    assert not (tmp_path / "out").exists() and encoder.images_encoded == 0


def test_failed_write_leaves_no_partial_outputs(tmp_path, halves, class_file, monkeypatch):
    import rs_vlm_app.tasks.classify as classify

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(classify, "write_gpkg", broken)
    with pytest.raises(OSError):
        classify_scene(halves, tmp_path / "out", ColourEncoder(), ClassifyOptions(classes=str(class_file)))
    assert list((tmp_path / "out").iterdir()) == []


def test_options_round_trip_and_validation():
    options = ClassifyOptions(classes="resisc45", grid="256@0.5", top_k=5, pixel=4)
    assert ClassifyOptions.from_dict(json.loads(json.dumps(options.to_dict()))) == options
    for bad, message in [({"top_k": 0}, "top_k"), ({"pixel": 0.5}, "^pixel must be at least 1, not 0.5$"),
                         ({"classes": " "}, "give the classes"), ({"grid": "x"}, "bad grid")]:
        with pytest.raises(UserError, match=message):
            ClassifyOptions.from_dict({**ClassifyOptions().to_dict(), **bad})
