"""What a source yields: one image with its annotations, or a problem found while reading it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Box:
    """One annotated object: its class (display name), axis-aligned extent in pixels and area.

    ``area`` is the polygon's area for oriented boxes, the box's area otherwise.
    """

    label: str
    x0: float
    y0: float
    x1: float
    y1: float
    area: float

    @property
    def center(self) -> tuple[float, float]:
        return (self.x0 + self.x1) / 2, (self.y0 + self.y1) / 2

    def to_json(self) -> list:
        return [self.label, *(round(v, 2) for v in (self.x0, self.y0, self.x1, self.y1, self.area))]

    @classmethod
    def from_json(cls, item: list) -> Box:
        return cls(item[0], *(float(v) for v in item[1:6]))


@dataclass(frozen=True)
class RawBox:
    """A box as an annotation file gives it, before it is checked against the image."""

    label: str
    points: tuple[tuple[float, float], ...]  # 2 corners (plain box) or a polygon (oriented box)
    where: str  # "line 7", "annotation 12": for messages
    area: float | None = None  # the object's own area when the annotation gives it (a mask's, in COCO)


@dataclass
class SourceItem:
    """One image of a source: relative path (its key within the source) and its annotations.

    ``boxes`` is None when the source has no detection annotations (a class-folder source); an empty
    list means the image was annotated and holds no objects.
    """

    source: str
    relpath: str
    path: Path
    scene_class: str | None = None
    boxes: list[RawBox] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    size_hint: tuple[int, int] | None = None  # (width, height) the annotations claim
    origin: str = ""  # where the item was declared, for messages ("labels/P0001.txt", "coco.json: image 'a.png'")

    @property
    def key(self) -> str:
        return f"{self.source}/{self.relpath}"


@dataclass(frozen=True)
class SourceIssue:
    """Bad input found while reading a source: one line naming the file and the problem."""

    source: str
    item: str
    message: str
    severity: str = "error"  # error: the item is skipped; warning: it is kept, corrected


@dataclass(frozen=True)
class ImageRecord:
    """An ingested image: checked, measured, with the objects that lie on it."""

    key: str
    source: str
    path: Path
    width: int
    height: int
    scene_class: str | None
    objects: list[Box] | None
    metadata: dict[str, Any]
    footprint: dict[str, Any] | None = None
