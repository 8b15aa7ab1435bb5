"""Validation shared by the task option dataclasses (caption, classify, search): one-line UserErrors."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict
from typing import ClassVar

from rs_vlm_app.errors import UserError
from rs_vlm_app.geo.grid import GridSpec


def parse_grid(grid: str | GridSpec) -> GridSpec:
    """A GridSpec from its text form ("256", "256,512@0.25", "selo", ...) or as given."""
    if isinstance(grid, GridSpec):
        return grid
    if not isinstance(grid, str):
        raise UserError(f"grid must be text such as '256' or '256,512@0.25', not {grid!r}")
    return GridSpec.parse(grid)


def check_bands(bands: Sequence[int] | None) -> tuple[int, ...] | None:
    """None, or 1 or 3 band numbers (1-based)."""
    if bands is None:
        return None
    try:
        values = tuple(int(b) for b in bands)
    except (TypeError, ValueError):
        raise UserError(f"bands must be band numbers such as 4,3,2, not {bands!r}") from None
    if len(values) not in (1, 3) or any(b < 1 for b in values) or any(int(b) != b for b in bands):
        raise UserError(f"bands must be one or three band numbers counted from 1, not {bands!r}")
    return values


def check_fraction(name: str, value: float) -> float:
    if not isinstance(value, int | float) or math.isnan(value) or not 0.0 <= value <= 1.0:
        raise UserError(f"{name} must be between 0 and 1, not {value!r}")
    return float(value)


def check_count(name: str, value: int, minimum: int = 1, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum or (maximum and value > maximum):
        limit = f"between {minimum} and {maximum}" if maximum else f"at least {minimum}"
        raise UserError(f"{name} must be a whole number {limit}, not {value!r}")
    return value


class TileOptionsIO:
    """Mixin for frozen option dataclasses with ``grid`` (text) and ``bands`` fields: the parsed grid
    and a JSON round trip (``from_dict(to_dict()) == self``) that names unknown keys."""

    task_name: ClassVar[str] = "task"

    @property
    def grid_spec(self) -> GridSpec:
        return parse_grid(self.grid)  # type: ignore[attr-defined]

    def to_dict(self) -> dict:
        out = asdict(self)  # type: ignore[call-overload]
        out["bands"] = list(self.bands) if self.bands else None  # type: ignore[attr-defined]
        return out

    @classmethod
    def from_dict(cls, data: dict):
        unknown = set(data) - set(cls.__dataclass_fields__)  # type: ignore[attr-defined]
        if unknown:
            raise UserError(f"unknown {cls.task_name} option(s): {', '.join(sorted(unknown))}")
        data = dict(data)
        if data.get("bands") is not None:
            data["bands"] = tuple(data["bands"])
        return cls(**data)
