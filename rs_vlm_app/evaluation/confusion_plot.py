"""A confusion matrix as a PNG: rows = true class, columns = predicted class, shaded by row share."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rs_vlm_app.atomic import atomic_path

#: white -> dark blue, by the share of a true class's images in a cell
_LOW = np.array([255, 255, 255], dtype=np.float64)
_HIGH = np.array([8, 48, 107], dtype=np.float64)


def render_confusion(confusion: np.ndarray, labels: Sequence[str], path: str | Path, *,
                     title: str = "", max_cell: int = 40) -> Path:
    """Write ``confusion`` (classes x classes counts) as a labelled, shaded grid with counts."""
    from PIL import Image, ImageDraw

    confusion = np.asarray(confusion)
    n = confusion.shape[0]
    if confusion.shape != (n, n) or len(labels) != n:
        raise ValueError("confusion must be square with one label per class")
    cell = int(np.clip(900 // max(n, 1), 14, max_cell))
    font = _font(max(8, min(13, cell // 2 - 2)))
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    label_w = int(max((probe.textlength(str(label), font=font) for label in labels), default=0)) + 10
    top = label_w + (24 if title else 4)
    left = label_w
    note = "rows: true class, columns: predicted class"
    text_w = max(probe.textlength(note, font=font) + left, probe.textlength(title, font=font) + 6)
    size = (int(max(left + n * cell + 10, text_w + 10)), top + n * cell + 28)
    horizontal = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(horizontal)
    if title:
        draw.text((6, 4), title, fill="black", font=font)
    support = confusion.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(support > 0, confusion / support, 0.0)
    for i in range(n):
        draw.text((4, top + i * cell + (cell - font.size) // 2), str(labels[i]), fill="black", font=font)
        for j in range(n):
            x, y = left + j * cell, top + i * cell
            colour = tuple(int(v) for v in _LOW + (_HIGH - _LOW) * share[i, j])
            draw.rectangle((x, y, x + cell - 1, y + cell - 1), fill=colour, outline=(220, 220, 220))
            if confusion[i, j] and cell >= 18:
                text = str(int(confusion[i, j]))
                ink = "white" if share[i, j] > 0.5 else "black"
                tw = probe.textlength(text, font=font)
                draw.text((x + (cell - tw) / 2, y + (cell - font.size) / 2 - 1), text, fill=ink, font=font)
    draw.text((left, top + n * cell + 8), note, fill="black", font=font)
    # column labels: drawn on a strip, then turned to read bottom-up, starting next to the matrix
    strip = Image.new("RGB", (label_w, n * cell), "white")
    strip_draw = ImageDraw.Draw(strip)
    for j in range(n):
        strip_draw.text((4, j * cell + (cell - font.size) // 2), str(labels[j]), fill="black", font=font)
    horizontal.paste(strip.rotate(90, expand=True), (left, top - label_w))
    path = Path(path)
    with atomic_path(path) as tmp:
        horizontal.save(tmp, format="PNG", optimize=True)
    return path


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):
        return ImageFont.load_default()
