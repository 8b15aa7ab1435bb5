"""Sources and ingest: class folders, COCO, DOTA / DIOR labels, metadata, georeferenced images, bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from rs_vlm_app.errors import UserError
from rs_vlm_app.mpgi.config import CocoSource, DotaSource, FolderSource
from rs_vlm_app.mpgi.ingest import in_shard, measure
from rs_vlm_app.mpgi.records import SourceIssue, SourceItem
from rs_vlm_app.mpgi.sources import iter_source
from rs_vlm_app.mpgi.sources.dota import parse_labels
from rs_vlm_app.mpgi.sources.metadata import load_metadata
from tests.conftest import SAMPLES
from tests.mpgi import data


def split(items):
    good = [i for i in items if isinstance(i, SourceItem)]
    bad = [i for i in items if isinstance(i, SourceIssue)]
    return good, bad


def test_class_folders_in_the_aid_layout(tmp_path):
    root = data.class_folders(tmp_path / "AID", {"DenseResidential": 2, "forest": 1})
    data.make_image(root / "loose.png")
    (root / "forest" / "notes.txt").write_text("not an image")
    items, issues = split(list(iter_source(FolderSource(root=root))))
    assert not issues
    assert [(i.key, i.scene_class) for i in items] == [
        ("AID/loose.png", None),
        ("AID/DenseResidential/denseresidential_0.png", "dense residential"),
        ("AID/DenseResidential/denseresidential_1.png", "dense residential"),
        ("AID/forest/forest_0.png", "forest"),
    ]
    assert all(i.boxes is None for i in items)


def test_coco_boxes_and_bad_references(tmp_path):
    path = data.coco_dataset(tmp_path, [
        {"file_name": "a.png", "size": (100, 80), "boxes": [(1, 10, 10, 20, 10), (2, 50, 40, 10, 10)]},
        {"file_name": "b.png", "size": (100, 80), "boxes": []},
    ], {1: "storage-tank", 2: "airplane"})
    raw = json.loads(path.read_text())
    raw["annotations"][0]["area"] = 150.0  # a mask covering part of its 20 x 10 box
    raw["annotations"].append({"id": 99, "image_id": 42, "category_id": 1, "bbox": [0, 0, 1, 1]})
    raw["annotations"].append({"id": 100, "image_id": 1, "category_id": 7, "bbox": [0, 0, 1, 1]})
    path.write_text(json.dumps(raw))
    items, issues = split(list(iter_source(CocoSource(annotations=path, images=tmp_path / "images", name="dior"))))
    assert [i.key for i in items] == ["dior/a.png", "dior/b.png"]
    a = items[0]
    assert [(b.label, b.points) for b in a.boxes] == [("storage tank", ((10, 10), (30, 20))),
                                                      ("airplane", ((50, 40), (60, 50)))]
    assert items[1].boxes == []
    record, _ = measure(a)
    assert [b.area for b in record.objects] == [150.0, 100.0]  # the mask's area where COCO gives one
    assert [i.message for i in issues] == [
        f"{path}: annotation 99 refers to image id 42, which 'images' does not list; skipped",
        f"{path}: annotation 100 has category id 7, which 'categories' does not list; skipped",
    ]


def test_dota_oriented_and_plain_boxes(tmp_path):
    text = ("imagesource:GoogleEarth\ngsd:0.5\n"
            "10 0 20 10 10 20 0 10 plane 0\n"
            "30 30 50 40 ship\n"
            "harbor 60 10 90 30\n"
            "what is this line\n")
    root = data.dota_dataset(tmp_path, {"P0001": text, "P0002": "1 1 5 5 ship\n"}, {"P0001.png": (100, 60)})
    items, issues = split(list(iter_source(DotaSource(labels=root / "labelTxt", images=root / "images"))))
    assert len(items) == 1
    item = items[0]
    assert item.key == "images/P0001.png"
    assert item.metadata == {"source": "GoogleEarth", "gsd": "0.5"}
    assert [(b.label, len(b.points)) for b in item.boxes] == [("airplane", 4), ("ship", 2), ("harbor", 2)]
    assert [i.message for i in issues] == [
        f"{root / 'labelTxt' / 'P0001.txt'} line 6: cannot read 'what is this line' (expected 8 coordinates and a "
        "class, or xmin ymin xmax ymax and a class); line skipped",
        f"{root / 'labelTxt' / 'P0002.txt'}: no image named P0002.* under {root / 'images'}; its 1 boxes are skipped",
    ]
    record, problems = measure(item)
    assert not problems
    plane = record.objects[0]
    assert (plane.x0, plane.y0, plane.x1, plane.y1) == (0, 0, 20, 20)
    assert plane.area == pytest.approx(200.0)  # the diamond's area, not its bounding box's


def test_dior_class_names_and_overrides(tmp_path):
    boxes, _, _ = parse_labels(_write(tmp_path / "x.txt", "1 1 9 9 storagetank\n1 1 9 9 golffield\n"),
                               {"golffield": "golf field"})
    assert [b.label for b in boxes] == ["storage tank", "golf field"]


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_boxes_outside_the_image_are_ignored_or_clipped(tmp_path):
    image = data.make_image(tmp_path / "a.png", (100, 50))
    from rs_vlm_app.mpgi.records import RawBox

    item = SourceItem("s", "a.png", image, boxes=[
        RawBox("ship", ((10, 10), (20, 20)), "annotation 1"),
        RawBox("ship", ((200, 10), (220, 20)), "annotation 2"),   # wholly outside: ignored
        RawBox("ship", ((90, 40), (110, 60)), "annotation 3"),    # overhangs by 10 px: clipped
        RawBox("ship", ((99.5, 10), (100.5, 20)), "annotation 4"),  # within tolerance: clipped quietly
        RawBox("ship", ((5, 5), (5, 9)), "annotation 5"),         # no width
    ], origin="ann.json: image 'a.png' (id 1)")
    record, issues = measure(item)
    assert [(b.x0, b.y0, b.x1, b.y1, b.area) for b in record.objects] == [
        (10, 10, 20, 20, 100), (90, 40, 100, 50, 100), (99.5, 10, 100, 20, 5)]
    assert [i.message for i in issues] == [
        "ann.json: image 'a.png' (id 1), annotation 2: ship box (200, 10)-(220, 20) lies outside the 100x50 image; "
        "ignored",
        "ann.json: image 'a.png' (id 1), annotation 3: ship box (90, 40)-(110, 60) extends past the 100x50 image; "
        "clipped to it",
        "ann.json: image 'a.png' (id 1), annotation 5: ship box (5, 5)-(5, 9) is empty; ignored",
    ]
    assert all(i.severity == "warning" for i in issues)


def test_missing_and_unreadable_images(tmp_path):
    missing = SourceItem("s", "gone.png", tmp_path / "gone.png", boxes=[],
                         origin="ann.json: image 'gone.png' (id 3)")
    record, issues = measure(missing)
    assert record is None
    assert issues[0].message == f"ann.json: image 'gone.png' (id 3): image file {tmp_path / 'gone.png'} not found; skipped"
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"this is not a JPEG")
    record, issues = measure(SourceItem("s", "broken.jpg", broken))
    assert record is None
    assert issues[0].message.startswith(f"{broken}: cannot read image (")
    assert issues[0].message.endswith("; skipped")


def test_size_mismatch_is_a_warning(tmp_path):
    image = data.make_image(tmp_path / "a.png", (100, 50))
    record, issues = measure(SourceItem("s", "a.png", image, boxes=[], size_hint=(200, 100), origin="c.json: image"))
    assert record is not None
    assert issues[0].message == ("c.json: image: the annotations give 200x100 pixels but the image is 100x50; "
                                 "boxes are used as given")


def test_metadata_csv_matches_by_path_name_or_stem(tmp_path):
    table_path = tmp_path / "meta.csv"
    table_path.write_text("image,sensor,gsd,date\nforest/a.png,Sentinel-2,10,2020-01-01\nb,Landsat 8,30,\n")
    table = load_metadata(table_path)
    assert table.lookup("forest/a.png") == {"sensor": "Sentinel-2", "gsd": "10", "date": "2020-01-01"}
    assert table.lookup("beach/b.jpg") == {"sensor": "Landsat 8", "gsd": "30"}
    assert table.lookup("c.png") == {}
    bad = tmp_path / "bad.csv"
    bad.write_text("name,sensor\nx,y\n")
    with pytest.raises(UserError, match="bad.csv: row 1 has no 'image' column"):
        load_metadata(bad)


def test_georeferenced_image_keeps_its_footprint(tmp_path):
    scene = shutil.copy(SAMPLES / "naip_2020_5m.tif", tmp_path / "naip.tif")
    record, issues = measure(SourceItem("s", "naip.tif", Path(scene)))
    assert not issues
    assert (record.width, record.height) == (934, 723)
    fp = record.footprint
    assert fp["crs"] == "EPSG:26914"
    assert fp["bounds"] == [485899.0, 5205631.0, 490569.0, 5209246.0]
    assert fp["gsd_m"] == 5.0
    assert fp["size_m"] == [4670.0, 3615.0]
    west, south, east, north = fp["bounds_wgs84"]
    assert -99.2 < west < east < -99.0 and 46.9 < south < north < 47.1


def test_geographic_footprint_in_metres(tmp_path):
    record, _ = measure(SourceItem("s", "l.tif", SAMPLES / "landsat_2020_4326.tif"))
    fp = record.footprint
    assert fp["crs"] == "EPSG:4326"
    assert 85 < fp["gsd_m"] < 95  # 0.000808 degrees near the equator is about 90 m


def test_shards_partition_the_keys():
    from rs_vlm_app.mpgi.config import Shard

    keys = [f"src/img_{i}.png" for i in range(400)]
    owners = [[k for k in keys if in_shard(k, Shard(i, 3))] for i in (1, 2, 3)]
    assert sorted(sum(owners, [])) == sorted(keys)
    assert all(90 < len(o) < 180 for o in owners)
