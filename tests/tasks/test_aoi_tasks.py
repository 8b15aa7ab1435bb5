"""--aoi on the tasks: tiles outside a polygon (in another CRS) are never read or encoded, raster
outputs are nodata outside it, and a polygon that misses the scene is one line before any model loads."""

from __future__ import annotations

from dataclasses import dataclass

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine

from rs_vlm_app.cli import main
from rs_vlm_app.errors import UserError
from rs_vlm_app.geo.grid import GridSpec
from rs_vlm_app.tasks.captioning import CaptionOptions, caption_scene
from rs_vlm_app.tasks.classify import CLASS_NODATA, ClassifyOptions, classify_scene
from rs_vlm_app.tasks.embedding_cache import EmbeddingCache
from rs_vlm_app.tasks.localize import HEATMAP_NODATA, LocalizeOptions, localize
from rs_vlm_app.tasks.search import SearchOptions, search_scenes
from tests.colour_encoder import ColourEncoder
from tests.geo.rasters import write
from tests.vectors import read_layer

TRANSFORM = Affine(2.0, 0.0, 300000.0, 0.0, -2.0, 4000000.0)
CRS = "EPSG:32633"


@pytest.fixture
def halves(tmp_path):
    """512 x 512, UTM 33N, 2 m pixels: left half red, right half green (grid 128: 4 x 4 windows)."""
    data = np.zeros((3, 512, 512), dtype=np.uint8)
    data[0, :, :256] = 200
    data[1, :, 256:] = 180
    return write(tmp_path / "halves.tif", data, crs=CRS, transform=TRANSFORM)


def aoi_file(path, rows, cols, crs_out="EPSG:4326"):
    """A polygon over pixel ``rows`` x ``cols`` of the halves scene, saved in ``crs_out``."""
    (x0, y0), (x1, y1) = TRANSFORM @ (cols[0], rows[0]), TRANSFORM @ (cols[1], rows[1])
    frame = gpd.GeoDataFrame({"name": ["zone"]}, geometry=[shapely.box(x0, y1, x1, y0)], crs=CRS)
    frame.to_crs(crs_out).to_file(path, layer="zone")
    return path


@pytest.fixture
def area(tmp_path):
    # rows 10..120, columns 200..400: the windows of the top row with col0 128, 256 and 384
    return aoi_file(tmp_path / "area.gpkg", rows=(10, 120), cols=(200, 400))


def test_localize_encodes_only_the_area_and_masks_the_heat_map(tmp_path, halves, area):
    encoder = ColourEncoder()
    options = LocalizeOptions(grid=GridSpec("regular", (128,)), aoi=f"{area}:zone")
    result = localize(halves, ["green fields"], tmp_path / "out", encoder, options,
                      cache=EmbeddingCache(tmp_path / "c"))
    assert encoder.images_encoded == 3 and result.encoding.tiles_encoded == 3  # of 16 windows
    _, polygons, tiles = read_layer(result.queries[0].vectors, "tiles")
    assert sorted(zip(tiles["row0"], tiles["col0"], strict=True)) == [(0, 128), (0, 256), (0, 384)]
    with rasterio.open(result.queries[0].heatmap) as heat:
        values = heat.read(1)
        assert heat.shape == (128, 128) and heat.crs.to_epsg() == 32633  # the scene's extent, 4 px per cell
    inside = values != HEATMAP_NODATA
    # output pixels are 4 source pixels: the area is rows 2.5..30, columns 50..100
    assert inside[10, 60] and inside[25, 95] and inside[10, 80]
    assert not inside[10, 40] and not inside[40, 80] and not inside[100, 100] and not inside[1, 60]
    assert abs(int(inside.sum()) - 27.5 * 50) < 60
    assert values[10, 90] > values[10, 55]  # green query: the green side is hotter
    _, spots, _ = read_layer(result.queries[0].vectors, "hotspots")
    zone = gpd.read_file(area).to_crs(CRS).geometry[0]
    assert spots and all(zone.buffer(8.0).contains(s) for s in spots)


def test_an_area_reuses_a_whole_scene_encoding(tmp_path, halves, area):
    encoder = ColourEncoder()
    cache = EmbeddingCache(tmp_path / "c")
    grid = GridSpec("regular", (128,))
    whole = localize(halves, ["green"], tmp_path / "a", encoder, LocalizeOptions(grid=grid), cache=cache)
    assert encoder.images_encoded == 16
    part = localize(halves, ["green"], tmp_path / "b", encoder, LocalizeOptions(grid=grid, aoi=str(area)), cache=cache)
    assert encoder.images_encoded == 16 and part.encoding.cache_hit
    _, _, all_tiles = read_layer(whole.queries[0].vectors, "tiles")
    _, _, some = read_layer(part.queries[0].vectors, "tiles")
    scores = {(r, c): s for r, c, s in zip(all_tiles["row0"], all_tiles["col0"], all_tiles["score"], strict=True)}
    assert [scores[r, c] for r, c in zip(some["row0"], some["col0"], strict=True)] == list(some["score"])


def test_classify_maps_are_nodata_outside_the_area(tmp_path, halves, area):
    classes = tmp_path / "c.txt"
    classes.write_text("Red = red roofs\nGreen = green forest\n")
    encoder = ColourEncoder()
    classify_scene(halves, tmp_path / "out", encoder, ClassifyOptions(classes=str(classes), grid="128", aoi=str(area)))
    assert encoder.images_encoded == 3
    with rasterio.open(tmp_path / "out" / "classes.tif") as src:
        index = src.read(1)
    assert index.shape == (32, 32)  # 16 source pixels per output pixel: area rows 0.6..7.5, cols 12.5..25
    assert index[3, 14] == 0 and index[3, 20] == 1
    assert index[3, 5] == CLASS_NODATA and index[20, 20] == CLASS_NODATA and index[3, 28] == CLASS_NODATA


@dataclass
class Caption:
    text: str
    mean_logprob: float = -1.0
    tokens: int = 2
    ended: bool = True


class CountingCaptioner:
    """Captions a tile by its dominant colour and counts the tiles it was given."""

    image_size = 16
    batch_size = 4
    fingerprint = "test-colour-captioner"
    display_name = "colour captioner (test)"
    device = "cpu"

    def __init__(self):
        self.tiles = 0

    def preprocess_key(self) -> str:
        return "colour"

    def caption_tiles(self, tiles, decoding):
        self.tiles += len(tiles)
        return [Caption("red" if t[..., 0].mean() > t[..., 1].mean() else "green") for t in tiles]


def test_caption_reads_only_the_area(tmp_path, halves, area):
    captioner = CountingCaptioner()
    result = caption_scene(halves, tmp_path / "cap.gpkg", captioner, CaptionOptions(grid="128", aoi=str(area)),
                           store_dir=tmp_path / "store")
    assert captioner.tiles == 3 and result.tiles == 3
    _, _, fields = read_layer(tmp_path / "cap.gpkg", "captions")
    assert sorted(zip(fields["col0"], fields["caption"], strict=True)) == [(128, "red"), (256, "green"),
                                                                            (384, "green")]


def test_search_skips_scenes_outside_the_area(tmp_path, halves, area):
    other = write(tmp_path / "elsewhere.tif", np.full((3, 256, 256), 150, np.uint8), crs=CRS,
                  transform=Affine(2.0, 0.0, 900000.0, 0.0, -2.0, 4000000.0))
    encoder = ColourEncoder()
    result = search_scenes([other, halves], "green", tmp_path / "s.gpkg", encoder,
                           SearchOptions(grid="128", top_k=10, aoi=str(area), contact_sheet=False))
    assert encoder.images_encoded == 3
    assert {h.scene for h in result.hits} == {1} and len(result.hits) == 3
    with pytest.raises(UserError, match="does not intersect any of the 1 scene"):
        search_scenes([other], "green", tmp_path / "t.gpkg", encoder, SearchOptions(grid="128", aoi=str(area)))


@pytest.mark.slow
def test_cli_refuses_an_area_away_from_the_scene_in_one_line(tmp_path, halves, capsys, tiny_clip):
    far = aoi_file(tmp_path / "far.gpkg", rows=(5000, 5100), cols=(5000, 5100), crs_out="EPSG:3857")
    model = ["--model-config", str(tiny_clip["config"]), "--checkpoint", str(tiny_clip["checkpoint"]),
             "--device", "cpu"]
    for argv in (["localize", str(halves), "green", "-o", str(tmp_path / "o"), "--aoi", str(far)],
                 ["classify", str(halves), "--classes", "aid", "-o", str(tmp_path / "k"), "--aoi", f"{far}:zone"],
                 ["search", str(halves), "green", "-o", str(tmp_path / "s.gpkg"), "--aoi", str(far)]):
        assert main([*argv, *model]) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err
        lines = [line for line in err.splitlines() if line.startswith("rsvlm: error:")]
        assert len(lines) == 1 and "does not intersect" in lines[0] and "far.gpkg" in lines[0], err
    assert main(["localize", str(halves), "green", "-o", str(tmp_path / "o"), "--aoi", f"{far}:nope", *model]) == 2
    assert "has no layer 'nope'" in capsys.readouterr().err
