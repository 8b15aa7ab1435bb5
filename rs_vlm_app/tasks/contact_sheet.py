"""Contact sheets: a grid of image tiles with a caption line under each, as one PNG."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rs_vlm_app.atomic import atomic_path

BACKGROUND = (32, 32, 32)
TEXT = (235, 235, 235)
DIM_TEXT = (170, 170, 170)


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _fit(draw, text: str, font, width: int) -> str:
    """``text`` shortened with an ellipsis to fit ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def render_contact_sheet(
    tiles: Sequence[np.ndarray], labels: Sequence[str], path: str | Path, *,
    sublabels: Sequence[str] | None = None, columns: int = 5, cell: int = 192, title: str | None = None,
) -> Path:
    """Write a PNG grid of ``tiles`` (uint8 (h, w, 3), any size: each is fitted into a ``cell`` square
    keeping its aspect), each with ``labels[i]`` (and ``sublabels[i]`` in a dimmer second line) below.
    Returns ``path``. Written atomically."""
    from PIL import Image, ImageDraw

    if len(tiles) != len(labels) or (sublabels is not None and len(sublabels) != len(tiles)):
        raise ValueError("one label (and sublabel) per tile")
    columns = max(1, min(columns, len(tiles) or 1))
    rows = max(1, -(-len(tiles) // columns))
    font, small = _font(14), _font(12)
    pad, text_h = 6, 20 + (16 if sublabels is not None else 0)
    title_h = 28 if title else 0
    width = columns * (cell + pad) + pad
    height = title_h + rows * (cell + text_h + pad) + pad
    sheet = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    if title:
        draw.text((pad, 6), _fit(draw, title, font, width - 2 * pad), fill=TEXT, font=font)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, columns)
        x0 = pad + c * (cell + pad)
        y0 = title_h + pad + r * (cell + text_h + pad)
        image = Image.fromarray(np.ascontiguousarray(tile[..., :3]).astype(np.uint8), "RGB")
        scale = cell / max(image.width, image.height)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.NEAREST)
        sheet.paste(image, (x0 + (cell - size[0]) // 2, y0 + (cell - size[1]) // 2))
        draw.text((x0, y0 + cell + 3), _fit(draw, labels[i], font, cell), fill=TEXT, font=font)
        if sublabels is not None:
            draw.text((x0, y0 + cell + 20), _fit(draw, sublabels[i], small, cell), fill=DIM_TEXT, font=small)
    path = Path(path)
    with atomic_path(path) as tmp:
        sheet.save(tmp, format="PNG", optimize=True)
    return path
