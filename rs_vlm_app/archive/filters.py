"""Which tiles of an archive a question looks at: ``--where`` conditions and an ``--aoi`` area.

``--where`` is one or more conditions joined by ``and``: ``FIELD OP VALUE`` with OP one of
= == != < <= > >=. Fields: ``date`` (the scene's acquisition date, ISO YYYY-MM-DD; scenes without
a date never match a date condition), ``scene`` (the scene's name), ``scale`` (the tile side in
pixels). Example: ``date >= 2020-01-01 and date < 2021-01-01 and scale = 256``.
"""

from __future__ import annotations

import datetime as dt
import operator
import re
from dataclasses import dataclass

import numpy as np

from rs_vlm_app.archive.store import SceneInfo
from rs_vlm_app.errors import UserError

OPERATORS = {"=": operator.eq, "==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le,
             ">": operator.gt, ">=": operator.ge}
SCENE_FIELDS = ("date", "scene")
TILE_FIELDS = ("scale",)
_CLAUSE = re.compile(r"^\s*(\w+)\s*(==|!=|<=|>=|=|<|>)\s*(.+?)\s*$")


@dataclass(frozen=True)
class Condition:
    field: str
    op: str
    value: str | int

    def test(self, value) -> bool:
        if value is None:
            return False
        return bool(OPERATORS[self.op](value, self.value))


def parse_where(text: str | None) -> list[Condition]:
    """The conditions of a --where text; UserError naming the part that does not parse."""
    if text is None or not text.strip():
        return []
    conditions = []
    for clause in re.split(r"\s+and\s+", text.strip(), flags=re.IGNORECASE):
        match = _CLAUSE.match(clause)
        if not match:
            raise UserError(f"--where: cannot read {clause.strip()!r}; write FIELD OP VALUE, e.g. "
                            "\"date >= 2020-01-01 and scale = 256\"")
        name, op, raw = match[1].lower(), match[2], match[3].strip().strip("'\"")
        if name == "date":
            try:
                value: str | int = dt.date.fromisoformat(raw).isoformat()
            except ValueError:
                raise UserError(f"--where: {raw!r} is not a date; write YYYY-MM-DD") from None
        elif name == "scale":
            if not raw.isdigit():
                raise UserError(f"--where: scale must be a whole number of pixels, not {raw!r}")
            value = int(raw)
        elif name == "scene":
            value = raw
        else:
            raise UserError(f"--where: unknown field {name!r}; fields: {', '.join(SCENE_FIELDS + TILE_FIELDS)}")
        conditions.append(Condition(name, op, value))
    return conditions


@dataclass(frozen=True)
class SceneSet:
    """A condition "scene is one of these names" (the job field ``scenes``)."""

    names: frozenset
    field: str = "scene"
    op: str = "in"

    def test(self, value) -> bool:
        return value in self.names


@dataclass
class TileFilter:
    """--where conditions and an optional area of interest (rs_vlm_app.geo.aoi.Aoi)."""

    conditions: list  # Condition | SceneSet
    aoi: object | None = None

    @property
    def active(self) -> bool:
        return bool(self.conditions) or self.aoi is not None

    def scene_ok(self, scene: SceneInfo) -> bool:
        """False when no tile of ``scene`` can match (its date or name, its footprint and the area)."""
        for c in self.conditions:
            if c.field == "date" and not c.test(scene.date):
                return False
            if c.field == "scene" and not c.test(scene.id):
                return False
        if self.aoi is not None:
            import shapely

            area = self.aoi.in_crs("EPSG:4326")
            if not area.intersects(shapely.box(*scene.bounds)):
                return False
        return True

    def tile_mask(self, scene: SceneInfo, windows: np.ndarray) -> np.ndarray:
        """(N,) bool: the tiles (windows (N, 5)) of a scene that passed :meth:`scene_ok` which match."""
        keep = np.ones(len(windows), dtype=bool)
        for c in self.conditions:
            if c.field == "scale":
                keep &= OPERATORS[c.op](windows[:, 4], c.value)
        if self.aoi is not None and keep.any():
            from pyproj import CRS

            keep &= self.aoi.window_mask(windows, scene.affine, CRS.from_wkt(scene.crs_wkt))
        return keep


def make_filter(where: str | None, aoi: str | None) -> TileFilter:
    """Parse --where and read --aoi (any OGR vector file, FILE[:LAYER])."""
    area = None
    if aoi:
        from rs_vlm_app.geo.aoi import read_aoi

        area = read_aoi(aoi)
        if area.crs is None:
            raise UserError("the area of interest has no CRS, so it cannot be placed on an archive's map; "
                            "assign one and save it again", path=area.source)
    return TileFilter(parse_where(where), area)
