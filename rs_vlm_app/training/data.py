"""Training data: caption CSVs (open_clip's filepath,caption format) and WebDataset tar shards.

Both become a :class:`CaptionTable` (one image reference and one caption per sample), checked
before any model loads: missing columns, missing image files, samples without a caption are one
clear line each. Images are read lazily by the torch Dataset in :mod:`rs_vlm_app.training.loader`.
"""

from __future__ import annotations

import csv
import glob
import io
import logging
import re
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from rs_vlm_app.errors import UserError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "tif", "tiff", "bmp")
CAPTION_EXTENSIONS = ("txt",)
CSV_SUFFIXES = (".csv", ".tsv")


class TarMember(NamedTuple):
    """An image stored inside an uncompressed tar shard: read by seeking, never extracted."""

    tar: str
    offset: int
    size: int
    name: str


ImageRef = str | TarMember


@dataclass
class CaptionTable:
    """Samples of one data source: ``images[i]`` is described by ``captions[i]``."""

    source: str
    images: list[ImageRef] = field(default_factory=list)
    captions: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)

    def image_key(self, index: int) -> str:
        """A stable name of sample ``index``'s image (rows sharing an image share the key)."""
        ref = self.images[index]
        return f"{ref.tar}:{ref.name}" if isinstance(ref, TarMember) else ref


def is_csv(spec: str) -> bool:
    return Path(spec).suffix.lower() in CSV_SUFFIXES


def open_caption_data(spec: str, image_key: str = "filepath", caption_key: str = "caption") -> CaptionTable:
    """A caption CSV (``.csv``/``.tsv``) or WebDataset shards (a .tar, a folder, a glob or a brace range)."""
    if is_csv(spec):
        return read_caption_csv(Path(spec), image_key, caption_key)
    return read_shards(spec)


def check_caption_source(spec: str, image_key: str = "filepath", caption_key: str = "caption") -> None:
    """Cheap checks before anything heavy loads: the file exists and has the columns, or shards exist."""
    if not is_csv(spec):
        expand_shards(spec)
        return
    path = Path(spec)
    if not path.is_file():
        raise UserError("no such file", path=path)
    with path.open(newline="", encoding="utf-8-sig", errors="replace") as f:
        _delimiter, header = _parse_header(f.readline())
    _require_columns(path, header, (image_key, caption_key))


def _parse_header(line: str) -> tuple[str, list[str]]:
    """The delimiter (a tab when the header holds one, as open_clip writes, else a comma) and the columns."""
    delimiter = "\t" if "\t" in line else ","
    return delimiter, [h.strip() for h in next(csv.reader([line], delimiter=delimiter), [])]


def _require_columns(path: Path, header: list[str], columns: tuple[str, ...]) -> None:
    missing = [c for c in columns if c not in header]
    if missing:
        raise UserError(
            f"no {missing[0]!r} column (header: {', '.join(header) or 'empty'}); the CSV needs a header with "
            f"{' and '.join(columns)}",
            path=path,
        )


# --- CSV ---------------------------------------------------------------------------------------------

def read_csv_columns(path: Path, columns: tuple[str, ...]) -> list[tuple[int, list[str]]]:
    """Rows of a CSV with a header as (line number, [value per requested column])."""
    if not path.is_file():
        raise UserError("no such file", path=path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            delimiter, header = _parse_header(f.readline())
            if not header or header == [""]:
                raise UserError("empty file; a caption CSV needs a header such as filepath,caption", path=path)
            _require_columns(path, header, columns)
            reader = csv.reader(f, delimiter=delimiter)
            positions = [header.index(c) for c in columns]
            rows = []
            for row in reader:
                if not any(cell.strip() for cell in row):
                    continue
                values = [row[p].strip() if p < len(row) else "" for p in positions]
                rows.append((reader.line_num + 1, values))  # +1: the header line read above
    except UnicodeDecodeError:
        raise UserError("not a UTF-8 text file", path=path) from None
    except csv.Error as exc:
        raise UserError(f"not a readable CSV: {exc}", path=path) from None
    if not rows:
        raise UserError("no data rows below the header", path=path)
    return rows


def resolve_image_paths(path: Path, rows: list[tuple[int, list[str]]]) -> list[str]:
    """Absolute image paths (relative ones resolved against the CSV's folder); all must exist."""
    base = path.resolve().parent
    resolved: list[str] = []
    missing: list[tuple[int, str]] = []
    for line, values in rows:
        name = values[0]
        if not name:
            raise UserError(f"line {line}: empty image path", path=path)
        image = Path(name).expanduser()
        image = image if image.is_absolute() else base / image
        if not image.is_file():
            missing.append((line, name))
        resolved.append(str(image))
    if missing:
        line, name = missing[0]
        raise UserError(
            f"{len(missing)} of {len(rows)} image files are missing, first on line {line}: {name} "
            f"(relative paths are read from {base})",
            path=path,
        )
    return resolved


def read_caption_csv(path: Path, image_key: str = "filepath", caption_key: str = "caption") -> CaptionTable:
    """An open_clip caption CSV: a header naming the image and caption columns, one pair per row."""
    rows = read_csv_columns(path, (image_key, caption_key))
    kept = [(line, values) for line, values in rows if values[1]]
    if len(kept) < len(rows):
        log.warning("%s: %d rows without a caption were skipped", path, len(rows) - len(kept))
    if not kept:
        raise UserError(f"no row has a caption in column {caption_key!r}", path=path)
    images = resolve_image_paths(path, kept)
    return CaptionTable(source=str(path), images=list(images), captions=[values[1] for _, values in kept])


def read_label_csv(path: Path, image_key: str = "filepath", label_key: str = "label") -> tuple[list[str], list[str]]:
    """A zero-shot evaluation CSV: image path and class name per row -> (images, labels)."""
    rows = read_csv_columns(path, (image_key, label_key))
    for line, values in rows:
        if not values[1]:
            raise UserError(f"line {line}: empty {label_key!r}", path=path)
    return resolve_image_paths(path, rows), [values[1] for _, values in rows]


# --- WebDataset shards -------------------------------------------------------------------------------

_BRACE = re.compile(r"\{(\d+)\.\.(\d+)\}")


def expand_shards(spec: str) -> list[Path]:
    """Shard paths of ``spec``: a .tar file, a folder of .tar files, a glob, or ``name-{000..009}.tar``.

    Several specs may be joined with ``::`` (as open_clip does).
    """
    paths: list[Path] = []
    for part in spec.split("::"):
        part = part.strip()
        if not part:
            continue
        match = _BRACE.search(part)
        if match:
            lo, hi = match.group(1), match.group(2)
            width = len(lo)
            for number in range(int(lo), int(hi) + 1):
                paths.extend(expand_shards(part[: match.start()] + str(number).zfill(width) + part[match.end():]))
            continue
        if any(ch in part for ch in "*?["):
            found = sorted(Path(p) for p in glob.glob(part))
            if not found:
                raise UserError("no shard matches this pattern", path=part)
            paths.extend(found)
            continue
        path = Path(part).expanduser()
        if path.is_dir():
            found = sorted(path.glob("*.tar"))
            if not found:
                raise UserError("folder holds no .tar shards", path=path)
            paths.extend(found)
        elif path.is_file():
            paths.append(path)
        else:
            raise UserError("no such file or folder (give a caption .csv or WebDataset .tar shards)", path=path)
    if not paths:
        raise UserError("no training data found", path=spec)
    return paths


def split_key(name: str) -> tuple[str, str]:
    """WebDataset's sample key and extension: ``dir/a1.seg.png`` -> (``dir/a1``, ``seg.png``)."""
    folder, _, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    key = f"{folder}/{stem}" if folder else stem
    return key, ext.lower() if dot else ""


def index_shard(path: Path) -> tuple[list[TarMember], list[str], int]:
    """Samples of one shard: images (as tar members), captions, and how many samples were skipped."""
    if path.suffix.lower() in (".gz", ".tgz", ".bz2", ".xz", ".zst"):
        raise UserError("compressed shards cannot be read by seeking; use plain .tar shards", path=path)
    members: dict[str, dict[str, tarfile.TarInfo]] = {}
    texts: dict[str, bytes] = {}
    try:
        with tarfile.open(path, mode="r:") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                key, ext = split_key(member.name)
                members.setdefault(key, {})[ext] = member
                if ext in CAPTION_EXTENSIONS:
                    texts[key] = tar.extractfile(member).read()  # type: ignore[union-attr]
    except (tarfile.TarError, OSError) as exc:
        raise UserError(f"not a readable tar shard: {exc}", path=path) from None
    images: list[TarMember] = []
    captions: list[str] = []
    skipped = 0
    for key, files in members.items():
        image = next((files[e] for e in IMAGE_EXTENSIONS if e in files), None)
        caption = texts.get(key, b"").decode("utf-8", errors="replace").strip()
        if image is None or not caption:
            skipped += 1
            continue
        images.append(TarMember(str(path), image.offset_data, image.size, image.name))
        captions.append(caption)
    return images, captions, skipped


def read_shards(spec: str) -> CaptionTable:
    """All samples (image + .txt caption) of the shards named by ``spec``."""
    table = CaptionTable(source=spec)
    skipped = 0
    for path in expand_shards(spec):
        images, captions, n_skipped = index_shard(path)
        table.images.extend(images)
        table.captions.extend(captions)
        skipped += n_skipped
    if skipped:
        log.warning("%s: %d samples without an image or a .txt caption were skipped", spec, skipped)
    if not table.images:
        raise UserError("the shards hold no sample with both an image and a .txt caption", path=spec)
    return table


# --- reading one image -------------------------------------------------------------------------------

def read_image(ref: ImageRef):
    """The image of ``ref`` as an RGB PIL image; an unreadable file is a UserError naming it."""
    from PIL import Image, UnidentifiedImageError

    try:
        if isinstance(ref, TarMember):
            with open(ref.tar, "rb") as f:
                f.seek(ref.offset)
                data = f.read(ref.size)
            image = Image.open(io.BytesIO(data))
        else:
            image = Image.open(ref)
        image.load()
        return image.convert("RGB")
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        where = f"{ref.tar}:{ref.name}" if isinstance(ref, TarMember) else ref
        raise UserError(f"cannot read the image: {exc}", path=where) from None
