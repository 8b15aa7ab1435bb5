"""Evaluation images: class folders and image-caption CSV files, read and resized for a model.

Images are read with Pillow (JPEG, PNG, TIFF, BMP, WebP); files Pillow cannot read (multi-band or
16-bit GeoTIFFs) go through rs_vlm_app.geo (RGB band choice, stretch). Each image is resized so its
short side matches the model's input and centre-cropped: open_clip's evaluation preprocessing.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rs_vlm_app.errors import UserError
from rs_vlm_app.reporting import Reporter, check_cancelled

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp")
READ_THREADS = 4


def is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


@dataclass(frozen=True)
class ClassFolders:
    """A folder with one sub-folder of images per class (the AID / RESISC45 / EuroSAT layout)."""

    root: Path
    folders: tuple[str, ...]          # sub-folder names, sorted
    images: tuple[Path, ...]
    labels: np.ndarray                # index into ``folders`` per image


def scan_class_folders(root: Path) -> ClassFolders:
    root = Path(root)
    if not root.is_dir():
        raise UserError("no such folder (expected one sub-folder of images per class)", path=root)
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    images: list[Path] = []
    labels: list[int] = []
    for index, folder in enumerate(folders):
        found = sorted(p for p in folder.rglob("*") if is_image(p))
        if not found:
            log.warning("%s: no images in this class folder", folder)
        images += found
        labels += [index] * len(found)
    if not folders:
        raise UserError("has no sub-folders; put the images of each class in a sub-folder named after the class",
                        path=root)
    if not images:
        raise UserError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in its {len(folders)} class folder(s)", path=root)
    return ClassFolders(root, tuple(f.name for f in folders), tuple(images), np.array(labels, dtype=np.int64))


@dataclass(frozen=True)
class CaptionedImages:
    """Rows of an image-caption CSV grouped by image: several captions per image."""

    path: Path
    images: tuple[Path, ...]      # unique images, in first-seen order
    captions: tuple[str, ...]
    text_image: np.ndarray        # image index per caption


IMAGE_COLUMNS = ("filepath", "image", "filename", "image_path")
CAPTION_COLUMNS = ("caption", "title", "text")


def read_caption_csv(path: Path) -> CaptionedImages:
    """A CSV (or TSV) with a header naming an image column (filepath) and a caption column (caption or
    title, as open_clip's training CSVs have); image paths relative to the CSV's folder."""
    from rs_vlm_app.evaluation.retrieval import group_captions

    path = Path(path)
    if not path.is_file():
        raise UserError("no such file", path=path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise UserError("not a UTF-8 text file", path=path) from None
    lines = text.splitlines()
    first = lines[0] if lines else ""
    delimiter = "\t" if path.suffix.lower() == ".tsv" or ("\t" in first and "," not in first) else ","
    reader = csv.DictReader(lines, delimiter=delimiter)
    header = [h.strip() for h in (reader.fieldnames or [])]
    reader.fieldnames = header
    image_column = next((c for c in IMAGE_COLUMNS if c in header), None)
    caption_column = next((c for c in CAPTION_COLUMNS if c in header), None)
    missing = [need for need, found in (("filepath", image_column), ("caption", caption_column)) if found is None]
    if missing:
        raise UserError(f"missing column(s) {', '.join(missing)} in the header (found: {', '.join(header) or 'none'}); "
                        "expected filepath,caption rows", path=path)
    keys, captions = [], []
    for number, row in enumerate(reader, start=2):
        image, caption = row.get(image_column), row.get(caption_column)
        if image is None or caption is None:
            raise UserError(f"line {number} has too few fields", path=path)
        if not image.strip() or not caption.strip():
            raise UserError(f"line {number} has an empty {'filepath' if not image.strip() else 'caption'}", path=path)
        keys.append(image.strip())
        captions.append(" ".join(caption.split()))
    if not keys:
        raise UserError("no rows below the header", path=path)
    unique, text_image = group_captions(keys)
    images = tuple((path.parent / key) if not Path(key).is_absolute() else Path(key) for key in unique)
    for image in images:
        if not image.is_file():
            raise UserError(f"image {image} listed in the CSV does not exist", path=path)
    return CaptionedImages(path, images, tuple(captions), text_image)


def load_image(path: Path, size: int) -> np.ndarray:
    """(size, size, 3) uint8 RGB: short side resized to ``size`` (bicubic), centre crop."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
            rgb = image.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        rgb = _load_with_gdal(path)
    return _resize_crop(rgb, size)


def _load_with_gdal(path: Path):
    from PIL import Image

    from rs_vlm_app.geo.raster import open_raster

    try:
        with open_raster(path) as source:
            array, _valid = source.read_rgb(0, source.height, 0, source.width)
    except UserError:
        raise UserError("cannot read this image (not an image file, or corrupt)", path=path) from None
    return Image.fromarray(array, "RGB")


def _resize_crop(image, size: int) -> np.ndarray:
    from PIL import Image

    w, h = image.size
    scale = size / min(w, h)
    new = (max(size, round(w * scale)), max(size, round(h * scale)))
    if new != (w, h):
        image = image.resize(new, Image.Resampling.BICUBIC)
    left, top = (new[0] - size) // 2, (new[1] - size) // 2
    return np.asarray(image.crop((left, top, left + size, top + size)), dtype=np.uint8)


def image_batches(paths: Sequence[Path], size: int, batch_size: int,
                  reporter: Reporter, stage: str = "encode images") -> Iterator[tuple[int, np.ndarray]]:
    """(start, uint8 (B, size, size, 3)) batches of ``paths``, decoded on a few threads."""
    total = len(paths)
    reporter.progress(stage, 0, total)
    with ThreadPoolExecutor(READ_THREADS) as pool:
        for start in range(0, total, batch_size):
            check_cancelled(reporter)
            chunk = paths[start:start + batch_size]
            yield start, np.stack(list(pool.map(lambda p: load_image(p, size), chunk)))
            reporter.progress(stage, min(start + batch_size, total), total)


def encode_image_files(encoder, paths: Sequence[Path], reporter: Reporter) -> np.ndarray:
    """L2-normalised embeddings (N, D) of image files, in order."""
    out = np.empty((len(paths), encoder.embed_dim), dtype=np.float32)
    for start, batch in image_batches(paths, encoder.image_size, encoder.batch_size, reporter):
        out[start:start + len(batch)] = encoder.encode_images(batch)
    return out
