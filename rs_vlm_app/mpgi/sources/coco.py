"""COCO JSON detection annotations: ``images``, ``annotations`` (bbox = x, y, width, height), ``categories``.

The JSON file is read whole (a COCO file is one JSON document); what it yields is streamed on.
Crowd annotations (``iscrowd: 1``) mark groups, not objects, and are not counted.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

from rs_vlm_app.errors import UserError
from rs_vlm_app.mpgi.config import CocoSource
from rs_vlm_app.mpgi.records import RawBox, SourceIssue, SourceItem
from rs_vlm_app.mpgi.wording import humanise


def iter_coco(source: CocoSource, name: str) -> Iterator[SourceItem | SourceIssue]:
    path = source.annotations
    if not path.is_file():
        raise UserError("COCO annotation file not found (sources: annotations)", path=path)
    if not source.images.is_dir():
        raise UserError("image folder not found (sources: images)", path=source.images)
    try:
        with path.open("rb") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"not valid JSON ({exc})", path=path) from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise UserError("not a COCO annotation file (no 'images' list)", path=path)
    categories = {}
    for cat in data.get("categories") or []:
        if isinstance(cat, dict) and "id" in cat and "name" in cat:
            categories[cat["id"]] = humanise(str(cat["name"]), source.class_names)
    images: dict[Any, dict] = {}
    for i, image in enumerate(data["images"]):
        if not isinstance(image, dict) or "id" not in image or not image.get("file_name"):
            yield SourceIssue(name, f"images[{i}]", f"{path}: images[{i}] has no 'id' or 'file_name'; skipped")
            continue
        images[image["id"]] = image
    boxes: dict[Any, list[RawBox]] = defaultdict(list)
    for i, ann in enumerate(data.get("annotations") or []):
        where = f"annotation {ann.get('id', f'#{i}')}" if isinstance(ann, dict) else f"annotations[{i}]"
        if not isinstance(ann, dict):
            yield SourceIssue(name, where, f"{path}: {where} is not an object; skipped")
            continue
        if ann.get("iscrowd"):
            continue
        image_id = ann.get("image_id")
        if image_id not in images:
            yield SourceIssue(name, where, f"{path}: {where} refers to image id {image_id!r}, which 'images' does not list; skipped")
            continue
        label = categories.get(ann.get("category_id"))
        if label is None:
            yield SourceIssue(name, where, f"{path}: {where} has category id {ann.get('category_id')!r}, which 'categories' does not list; skipped")
            continue
        bbox = ann.get("bbox")
        try:
            x, y, w, h = (float(v) for v in bbox)
        except (TypeError, ValueError):
            yield SourceIssue(name, where, f"{path}: {where} has no usable 'bbox' [x, y, width, height] (got {bbox!r}); skipped")
            continue
        area = ann.get("area")
        area = float(area) if isinstance(area, int | float) and 0 < area <= w * h else None
        boxes[image_id].append(RawBox(label, ((x, y), (x + w, y + h)), where, area))
    del data
    for image_id, image in images.items():
        file_name = str(image["file_name"])
        size = None
        if isinstance(image.get("width"), int) and isinstance(image.get("height"), int):
            size = (image["width"], image["height"])
        metadata = {k: image[k] for k in ("date_captured", "gsd", "sensor", "place") if image.get(k) not in (None, "")}
        if "date_captured" in metadata:
            metadata["date"] = metadata.pop("date_captured")
        yield SourceItem(
            name, file_name, source.images / file_name,
            scene_class=humanise(source.scene_class, source.class_names) if source.scene_class else None,
            boxes=boxes.pop(image_id, []), metadata=metadata, size_hint=size,
            origin=f"{path}: image {file_name!r} (id {image_id})",
        )
