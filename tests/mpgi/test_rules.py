"""The rule stage: exact sentences for hand-made annotations."""

from __future__ import annotations

from pathlib import Path

from rs_vlm_app.mpgi.records import Box, ImageRecord
from rs_vlm_app.mpgi.rules import facts, grid_cell
from rs_vlm_app.mpgi.wording import count_phrase, humanise, plural


def square(label: str, cx: float, cy: float, side: float) -> Box:
    return Box(label, cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2, side * side)


def airport(metadata=None, footprint=None) -> ImageRecord:
    objects = [square("airplane", 50, 50, 20), square("airplane", 60, 40, 20), square("airplane", 150, 150, 20),
               square("storage tank", 250, 250, 60)]
    return ImageRecord("dior/a.jpg", "dior", Path("/x/a.jpg"), 300, 300, "airport", objects, metadata or {}, footprint)


def test_sentences_for_a_hand_made_image():
    assert facts(airport()) == [
        "The scene is classified as airport.",
        "The image contains three airplanes and one storage tank.",
        "The three airplanes are in the upper left (2) and center (1) of the image.",
        "The storage tank is in the lower right of the image.",
        "The airplanes are small, each covering about 0.4% of the image.",
        "The storage tank is medium-sized, covering about 4% of the image.",
        "The storage tank is larger than the airplanes.",
        "The airplanes are clustered together.",
        "In total 4 objects cover about 5% of the image, a sparse scene.",
    ]


def test_metadata_gives_capture_sentence_and_real_sizes():
    meta = {"sensor": "WorldView-3", "date": "2020-08-31", "place": "Lincoln, Nebraska", "gsd": "0.5"}
    out = facts(airport(meta))
    assert out[1] == ("The image was captured by WorldView-3 on 2020-08-31 over Lincoln, Nebraska at a ground "
                      "sample distance of 0.5 m.")
    assert "The airplanes are small, each about 10 m across (0.4% of the image)." in out
    assert "The storage tank is medium-sized, about 30 m across (4% of the image)." in out


def test_georeferenced_footprint_gives_extent_and_sizes():
    footprint = {"crs": "EPSG:26914", "gsd_m": 2.0, "size_m": [600.0, 600.0]}
    out = facts(airport(footprint=footprint))
    assert "The image covers about 600 m by 600 m on the ground." in out
    assert "The storage tank is medium-sized, about 120 m across (4% of the image)." in out


def test_many_objects_spread_over_the_grid_and_evenly_spaced():
    boxes = [square("small vehicle", 50 + 100 * i, 50 + 100 * j, 10) for i in range(3) for j in range(3)]
    boxes.append(square("small vehicle", 60, 60, 10))
    record = ImageRecord("d/x.png", "d", Path("/x.png"), 300, 300, None, boxes, {})
    out = facts(record)
    assert out[0] == "The image contains ten small vehicles."
    assert out[1] == ("The ten small vehicles are spread over 9 of the 9 parts of a 3x3 grid, most of them in the "
                      "upper left (2).")
    assert out[2] == "The small vehicles are small, each covering about 0.1% of the image."
    assert out[3] == "The small vehicles are evenly spaced."
    assert out[4] == "In total 10 objects cover about 1% of the image, a sparse scene."


def test_all_in_one_cell():
    record = ImageRecord("d/x.png", "d", Path("/x.png"), 900, 900, None,
                         [square("ship", 20, 20, 10), square("ship", 280, 20, 10), square("ship", 20, 280, 10),
                          square("ship", 280, 280, 10)], {})
    assert "All four ships are in the upper left of the image." in facts(record)


def test_even_spacing():
    record = ImageRecord("d/x.png", "d", Path("/x.png"), 300, 300, None,
                         [square("ship", x, y, 10) for x in (75, 225) for y in (75, 225)], {})
    assert "The ships are evenly spaced." in facts(record)


def test_annotated_image_without_objects_and_folder_image():
    empty = ImageRecord("d/x.png", "d", Path("/x.png"), 10, 10, None, [], {})
    assert facts(empty) == ["No annotated objects are present."]
    folder = ImageRecord("aid/forest/1.jpg", "aid", Path("/1.jpg"), 10, 10, "forest", None, {})
    assert facts(folder) == ["The scene is classified as forest."]


def test_two_of_a_kind_and_one_each():
    record = ImageRecord("d/x.png", "d", Path("/x.png"), 300, 300, None,
                         [square("bus", 20, 20, 10), square("bus", 40, 20, 10), square("bridge", 150, 150, 100)], {})
    out = facts(record)
    assert out[0] == "The image contains two buses and one bridge."
    assert out[1] == "Both buses are in the upper left of the image."
    assert "The bridge is larger than the buses." in out


def test_grid_cells():
    assert grid_cell(0, 0, 300, 300) == "upper left"
    assert grid_cell(150, 10, 300, 300) == "upper middle"
    assert grid_cell(299.9, 299.9, 300, 300) == "lower right"
    assert grid_cell(300, 150, 300, 300) == "middle right"  # on the border: last cell


def test_wording():
    assert humanise("storage-tank") == "storage tank"
    assert humanise("DenseResidential") == "dense residential"
    assert humanise("dense_residential") == "dense residential"
    assert humanise("storagetank") == "storage tank"
    assert humanise("plane", {"plane": "aircraft"}) == "aircraft"
    assert plural("storage tank") == "storage tanks"
    assert plural("overpass") == "overpasses"
    assert plural("factory") == "factories"
    assert count_phrase(1, "ship") == "one ship"
    assert count_phrase(25, "ship") == "25 ships"
