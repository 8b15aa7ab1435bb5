"""Training captions for the demo: tiles cut from a training world, captioned by the MpGI rule stage.

Tiles are random square windows of the training scene (sides from ``min_side`` to ``max_side``
pixels) resized to the model's input size exactly as localization resizes its tiles. Each tile's
objects (the parts of them inside the window) are written as DOTA label files with the tile's
ground sample distance, so the folder is an ordinary dataset-builder source (``type: dota``): the
rule stage of rs_vlm_app.mpgi reads it and states what, how many, where and how big. Captions are
those rule sentences (no MLLM, no LLM): the "contains" sentence and each class's position sentence,
one CSV row each, in open_clip's ``filepath,caption`` format.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import shapely

from rs_vlm_app.atomic import atomic_dir, write_text_atomic
from rs_vlm_app.demo.world import World
from rs_vlm_app.reporting import NullReporter, Reporter, check_cancelled

#: A clipped object counts in a tile when this share of it (or of the tile) lies inside.
MIN_OBJECT_SHARE = 0.25
MIN_TILE_SHARE = 0.01


@dataclass(frozen=True)
class TileSpec:
    """How many tiles to cut, their window sides in scene pixels, and the model's input size."""

    count: int = 3000
    min_side: int = 96
    max_side: int = 384
    image_size: int = 32
    seed: int = 0


@dataclass
class CaptionDataset:
    folder: Path
    csv: Path            # filepath,caption (paths relative to the CSV's folder)
    facts: Path          # JSONL: every tile's window and all its rule sentences
    tiles: int
    rows: int
    class_tiles: dict[str, int]   # tiles that show each class


def tile_windows(world: World, spec: TileSpec) -> np.ndarray:
    """(count, 3) int rows ``row0, col0, side``: random windows inside the scene, seeded."""
    rng = np.random.default_rng([spec.seed, 7])
    size = world.spec.size
    sides = np.exp(rng.uniform(math.log(spec.min_side), math.log(spec.max_side), spec.count)).astype(int)
    sides = np.minimum(sides, size)
    rows = (rng.uniform(0, 1, spec.count) * (size - sides + 1)).astype(int)
    cols = (rng.uniform(0, 1, spec.count) * (size - sides + 1)).astype(int)
    return np.column_stack([rows, cols, sides])


def tile_objects(world: World, row0: int, col0: int, side: int, image_size: int) -> list[tuple[str, np.ndarray]]:
    """The objects seen in a window: (class, 4 corners of the oriented box around the visible part,
    in tile pixels of the resized tile)."""
    window = shapely.box(col0, row0, col0 + side, row0 + side)
    scale = image_size / side
    seen = []
    for o in world.objects:
        if not o.polygon.intersects(window):
            continue
        part = o.polygon.intersection(window)
        if part.is_empty or part.area <= 0:
            continue
        if part.area < MIN_OBJECT_SHARE * o.polygon.area and part.area < MIN_TILE_SHARE * side * side:
            continue
        box = part.minimum_rotated_rectangle
        corners = np.asarray(box.exterior.coords)[:4] if box.geom_type == "Polygon" else None
        if corners is None or len(corners) < 4:
            continue
        corners = (corners - [col0, row0]) * scale
        seen.append((o.cls, corners))
    return seen


def build_caption_dataset(world: World, folder: Path, spec: TileSpec,
                          reporter: Reporter | None = None) -> CaptionDataset:
    """Cut, label and caption the tiles into ``folder`` (built under a temporary name, then renamed)."""
    from rs_vlm_app.models.preprocess import fast_tile_transform

    reporter = reporter or NullReporter()
    resize = fast_tile_transform(spec.image_size)
    windows = tile_windows(world, spec)
    with atomic_dir(folder) as tmp:
        (tmp / "images").mkdir()
        (tmp / "labels").mkdir()
        for i, (row0, col0, side) in enumerate(windows):
            if i % 200 == 0:
                check_cancelled(reporter)
                reporter.progress("cut training tiles", i, len(windows))
            stem = f"tile_{i:05d}"
            tile = resize(world.image[row0: row0 + side, col0: col0 + side])
            ok, png = cv2.imencode(".png", np.ascontiguousarray(tile[:, :, ::-1]))
            if not ok:
                raise RuntimeError("OpenCV could not encode a PNG tile")
            (tmp / "images" / f"{stem}.png").write_bytes(png.tobytes())
            gsd = side * world.spec.pixel_m / spec.image_size
            lines = [f"gsd:{gsd:.3f}"]
            for cls, corners in tile_objects(world, int(row0), int(col0), int(side), spec.image_size):
                lines.append(" ".join(f"{v:.2f}" for v in corners.ravel()) + f" {cls}")
            (tmp / "labels" / f"{stem}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
        reporter.progress("cut training tiles", len(windows), len(windows))
        rows, facts_lines, class_tiles = caption_rows(tmp, windows, reporter)
        _write_csv(tmp / "captions.csv", rows)
        write_text_atomic(tmp / "facts.jsonl", "".join(facts_lines))
    return CaptionDataset(folder, folder / "captions.csv", folder / "facts.jsonl", len(windows), len(rows),
                          class_tiles)


def caption_rows(folder: Path, windows: np.ndarray,
                 reporter: Reporter) -> tuple[list[tuple[str, str]], list[str], dict[str, int]]:
    """Run the MpGI rule stage on the DOTA-layout tile folder; captions from its sentences."""
    from rs_vlm_app.mpgi.config import DotaSource
    from rs_vlm_app.mpgi.ingest import measure
    from rs_vlm_app.mpgi.records import SourceIssue
    from rs_vlm_app.mpgi.rules import facts
    from rs_vlm_app.mpgi.sources import iter_source

    source = DotaSource(labels=folder / "labels", images=folder / "images", name="demo")
    rows: list[tuple[str, str]] = []
    facts_lines: list[str] = []
    class_tiles: dict[str, int] = {}
    for n, item in enumerate(iter_source(source)):
        if isinstance(item, SourceIssue):
            raise RuntimeError(f"demo tile labels are malformed: {item.message}")
        if n % 200 == 0:
            check_cancelled(reporter)
            reporter.progress("rule captions", n, len(windows))
        record, issues = measure(item)
        if record is None:
            raise RuntimeError(f"demo tile unreadable: {issues[0].message if issues else item.path}")
        sentences = facts(record)
        for label in {b.label for b in record.objects or []}:
            class_tiles[label] = class_tiles.get(label, 0) + 1
        for caption in captions_from_facts(sentences):
            rows.append((f"images/{item.relpath}", caption))
        index = int(Path(item.relpath).stem.split("_")[1])
        row0, col0, side = (int(v) for v in windows[index])
        facts_lines.append(json.dumps({"image": f"images/{item.relpath}", "window": [row0, col0, side],
                                       "facts": sentences}) + "\n")
    reporter.progress("rule captions", len(windows), len(windows))
    return rows, facts_lines, class_tiles


def captions_from_facts(sentences: list[str]) -> list[str]:
    """The training captions of one tile: what it contains, and where each class lies.

    Counts and contents come first; positions name each class once more, so every class word is
    seen with the tiles that show it. A tile without objects says so.
    """
    out = [s for s in sentences if s.startswith("The image contains") or s.startswith("No annotated objects")]
    out += [s for s in sentences if (s.endswith(" of the image.") and not s.startswith("In total"))
            or " are spread over " in s]
    return out or [s for s in sentences[:1]]


def _write_csv(path: Path, rows: list[tuple[str, str]]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["filepath", "caption"])
    writer.writerows(rows)
    write_text_atomic(path, buffer.getvalue())
