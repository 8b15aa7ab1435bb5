"""Checks and result helpers shared by several kinds of job (light imports only)."""

from __future__ import annotations

from pathlib import Path

from rs_vlm_app.errors import UserError
from rs_vlm_app.jobs.specs import ModelSpec


def check_scene(scene: Path, bands: list[int] | None) -> None:
    """The raster opens and has the bands asked for (before any model loads)."""
    from rs_vlm_app.geo.raster import open_raster

    with open_raster(Path(scene), bands=tuple(bands) if bands else None):
        pass


def check_second_model(spec: ModelSpec | None, field_name: str, family: str) -> None:
    """Check an optional second model; its errors name the spec field."""
    if spec is None:
        return
    try:
        spec.check(family=family)
    except UserError as exc:
        raise UserError(f"{field_name}: {exc}") from None


def model_name(model, spec: ModelSpec) -> str:
    """The name a person knows a loaded model (encoder, captioner) by."""
    loaded = getattr(model, "loaded", None)
    return str(getattr(loaded, "display_name", "") or getattr(model, "display_name", "") or spec.describe())


def scene_names(scenes: list[Path], limit: int = 3) -> str:
    names = [Path(s).name for s in scenes[:limit]]
    more = len(scenes) - limit
    return ", ".join(names) + (f" and {more} more" if more > 0 else "")


def short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
