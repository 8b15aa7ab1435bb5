"""Contact sheets and confusion-matrix images: sizes, tile placement, atomic output."""

import numpy as np
import pytest
from PIL import Image

from rs_vlm_app.evaluation.confusion_plot import render_confusion
from rs_vlm_app.tasks.contact_sheet import render_contact_sheet


def test_contact_sheet_places_each_tile(tmp_path):
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    tiles = [np.full((32, 32, 3), c, dtype=np.uint8) for c in colours]
    path = render_contact_sheet(tiles, ["#1 0.9", "#2 0.8", "#3 0.7"], tmp_path / "sheet.png", columns=2, cell=64)
    sheet = np.asarray(Image.open(path).convert("RGB"))
    pad, text_h = 6, 20
    assert sheet.shape[1] == 2 * (64 + pad) + pad and sheet.shape[0] == 2 * (64 + text_h + pad) + pad
    centres = [(pad + 32, pad + 32), (pad + 32, 2 * pad + 64 + 32), (2 * pad + 64 + text_h + 32, pad + 32)]
    for (y, x), colour in zip(centres, colours, strict=True):
        assert tuple(sheet[y, x]) == colour
    assert list(tmp_path.iterdir()) == [path]


def test_contact_sheet_needs_a_label_per_tile(tmp_path):
    with pytest.raises(ValueError):
        render_contact_sheet([np.zeros((8, 8, 3), np.uint8)], [], tmp_path / "x.png")
    assert not list(tmp_path.iterdir())


def test_confusion_png_shades_by_row_share(tmp_path):
    confusion = np.array([[9, 1], [0, 0]])
    path = render_confusion(confusion, ["lake", "forest"], tmp_path / "c.png", title="t")
    image = np.asarray(Image.open(path).convert("RGB"))
    assert image.shape[0] > 80 and image.shape[1] > 80
    assert image.min() < 60  # the 90% cell is dark
