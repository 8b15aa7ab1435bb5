"""DOTA / DIOR style text labels: one ``<stem>.txt`` per image, one object per line.

Accepted lines (tokens separated by spaces or commas)::

    x1 y1 x2 y2 x3 y3 x4 y4 class [difficult]     DOTA oriented box (4 corners)
    xmin ymin xmax ymax class                       plain box, class last
    class xmin ymin xmax ymax                       plain box, class first

DOTA's header lines ``imagesource:...`` and ``gsd:...`` become metadata.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

from rs_vlm_app.errors import UserError
from rs_vlm_app.mpgi.config import DotaSource
from rs_vlm_app.mpgi.records import RawBox, SourceIssue, SourceItem
from rs_vlm_app.mpgi.wording import humanise

_SPLIT = re.compile(r"[\s,]+")


def iter_dota(source: DotaSource, name: str) -> Iterator[SourceItem | SourceIssue]:
    if not source.labels.is_dir():
        raise UserError("label folder not found (sources: labels)", path=source.labels)
    if not source.images.is_dir():
        raise UserError("image folder not found (sources: images)", path=source.images)
    extensions = [e.lower() if e.startswith(".") else f".{e.lower()}" for e in source.extensions]
    images_by_stem = _image_index(source.images, extensions)
    with os.scandir(source.labels) as entries:
        label_files = sorted(e.name for e in entries if e.name.endswith(".txt") and e.is_file())
    for file_name in label_files:
        label_path = source.labels / file_name
        stem = file_name[:-4]
        image_name = images_by_stem.get(stem)
        boxes, metadata, issues = parse_labels(label_path, source.class_names)
        for item, message in issues:
            yield SourceIssue(name, item, message)
        if image_name is None:
            yield SourceIssue(name, file_name, f"{label_path}: no image named {stem}.* under {source.images}; "
                                               f"its {len(boxes)} boxes are skipped")
            continue
        yield SourceItem(
            name, image_name, source.images / image_name,
            scene_class=humanise(source.scene_class, source.class_names) if source.scene_class else None,
            boxes=boxes, metadata=metadata, origin=str(label_path))


def _image_index(folder: Path, extensions: list[str]) -> dict[str, str]:
    """stem -> file name of the images in ``folder`` (the first extension in ``extensions`` wins)."""
    rank = {ext: i for i, ext in enumerate(extensions)}
    best: dict[str, tuple[int, str]] = {}
    with os.scandir(folder) as entries:
        for entry in entries:
            stem, dot, ext = entry.name.rpartition(".")
            if not dot or f".{ext.lower()}" not in rank:
                continue
            order = rank[f".{ext.lower()}"]
            if stem not in best or order < best[stem][0]:
                best[stem] = (order, entry.name)
    return {stem: name for stem, (_, name) in best.items()}


def parse_labels(path: Path, class_names: dict[str, str]) -> tuple[list[RawBox], dict, list[tuple[str, str]]]:
    """Boxes, header metadata and (item, message) problems of one label file."""
    boxes: list[RawBox] = []
    metadata: dict = {}
    issues: list[tuple[str, str]] = []
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        return boxes, metadata, [(path.name, f"{path}: cannot read ({exc.strerror}); skipped")]
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        header = re.match(r"^(imagesource|gsd)\s*:\s*(.*)$", line, re.IGNORECASE)
        if header:
            key, value = header.group(1).lower(), header.group(2).strip()
            if value and value.lower() not in ("null", "none"):
                metadata["source" if key == "imagesource" else "gsd"] = value
            continue
        where = f"line {number}"
        parsed = _parse_object(_SPLIT.split(line))
        if parsed is None:
            issues.append((f"{path.name} {where}", f"{path} line {number}: cannot read {line[:80]!r} (expected 8 coordinates and a "
                                  "class, or xmin ymin xmax ymax and a class); line skipped"))
            continue
        label, points = parsed
        boxes.append(RawBox(humanise(label, class_names), points, where))
    return boxes, metadata, issues


def _parse_object(tokens: list[str]) -> tuple[str, tuple[tuple[float, float], ...]] | None:
    tokens = [t for t in tokens if t]
    words = [i for i, t in enumerate(tokens) if not _is_number(t)]
    if len(words) != 1:
        return None
    at = words[0]
    before = [float(t) for t in tokens[:at]]
    after = tokens[at + 1:]
    if len(before) == 8 and len(after) <= 1:  # DOTA: polygon, class, optional difficulty
        return tokens[at], tuple(zip(before[0::2], before[1::2], strict=True))
    if len(before) == 4 and not after:  # xmin ymin xmax ymax class
        return tokens[at], ((before[0], before[1]), (before[2], before[3]))
    if at == 0 and len(after) == 4:  # class xmin ymin xmax ymax
        values = [float(t) for t in after]
        return tokens[0], ((values[0], values[1]), (values[2], values[3]))
    return None


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True
