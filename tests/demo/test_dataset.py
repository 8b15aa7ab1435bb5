"""Training tiles and their rule captions."""

from __future__ import annotations

import csv

import pytest
from PIL import Image

from rs_vlm_app.demo.dataset import TileSpec, build_caption_dataset, captions_from_facts, tile_objects
from rs_vlm_app.demo.world import WorldSpec, generate_world


@pytest.fixture(scope="module")
def world():
    return generate_world(WorldSpec(size=640, seed=5))


def test_tile_objects_are_the_objects_in_the_window(world):
    lake = world.objects_of("lake")[0].polygon
    x0, y0, x1, y1 = lake.bounds
    side = int(max(x1 - x0, y1 - y0)) + 20
    row0, col0 = max(0, int(y0) - 10), max(0, int(x0) - 10)
    seen = tile_objects(world, row0, col0, side, 32)
    assert "lake" in [cls for cls, _ in seen]
    for _, corners in seen:
        assert corners.shape == (4, 2)
    # a window on open land (no mask pixel within it) sees nothing
    empty = world.masks.sum(axis=0) == 0
    row, col = next((r, c) for r in range(0, 600, 16) for c in range(0, 600, 16) if empty[r:r + 40, c:c + 40].all())
    assert tile_objects(world, row + 4, col + 4, 32, 32) == []


def test_captions_from_rule_sentences():
    facts = ["The image was at a ground sample distance of 2 m.", "The image contains one lake and one road.",
             "The lake is in the center of the image.", "The road is in the upper left of the image.",
             "The lake is large, about 50 m across (20% of the image).",
             "In total 2 objects cover about 25% of the image, a moderately dense scene."]
    assert captions_from_facts(facts) == ["The image contains one lake and one road.",
                                          "The lake is in the center of the image.",
                                          "The road is in the upper left of the image."]
    assert captions_from_facts(["No annotated objects are present."]) == ["No annotated objects are present."]


def test_dataset_is_an_open_clip_csv_of_rule_captions(world, tmp_path):
    built = build_caption_dataset(world, tmp_path / "ds", TileSpec(count=60, image_size=32, seed=1))
    assert built.tiles == 60 and built.rows >= 60
    with open(built.csv, newline="") as f:
        rows = list(csv.DictReader(f))
    assert set(rows[0]) == {"filepath", "caption"}
    assert len(rows) == built.rows
    for row in rows:
        image = Image.open(built.csv.parent / row["filepath"])
        assert image.size == (32, 32)
    labels = (built.folder / "labels" / "tile_00000.txt").read_text().splitlines()
    assert labels[0].startswith("gsd:")
    # a tile whose label file names a class has a caption that names it too
    for stem in ("tile_00000", "tile_00001", "tile_00002"):
        classes = {line.split()[-1] for line in (built.folder / "labels" / f"{stem}.txt").read_text().splitlines()[1:]}
        text = " ".join(r["caption"] for r in rows if r["filepath"] == f"images/{stem}.png")
        for cls in classes:
            assert cls in text
        if not classes:
            assert text == "No annotated objects are present."
    assert sum(built.class_tiles.values()) > 0
