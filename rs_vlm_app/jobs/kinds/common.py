"""Checks and result helpers shared by several kinds of job (light imports only)."""

from __future__ import annotations

from pathlib import Path

from rs_vlm_app.errors import UserError
from rs_vlm_app.jobs.specs import ModelSpec
from rs_vlm_app.tasks.options import declared


def task_options(spec, options_class, **overrides):
    """The task's options dataclass built from the spec's fields of the same names (validated by the
    options; built once per spec object while those fields stay the same). A null field whose declared
    default is not null means "the task's default" (e.g. ``grid``); ``overrides`` replace fields."""
    cached = spec.__dict__.get("_task_options")
    values = dict(overrides)
    for name, info in declared(options_class).items():
        if not hasattr(spec, name) or name in values:
            continue
        value = getattr(spec, name)
        if value is None and info.default is not None:
            continue
        values[name] = tuple(value) if isinstance(value, list) else value
    if cached is not None and cached[0] == values:
        return cached[1]
    options = options_class(**values)
    spec.__dict__["_task_options"] = (values, options)
    return options


def check_scene(scene: Path, bands: list[int] | None) -> None:
    """The raster opens and has the bands asked for (before any model loads)."""
    from rs_vlm_app.geo.raster import open_raster

    with open_raster(Path(scene), bands=tuple(bands) if bands else None):
        pass


def check_aoi(aoi: str | None, scenes: list[Path], bands: list[int] | None) -> None:
    """The area of interest reads as polygons and overlaps the scene (one scene) or any of them."""
    if aoi is None:
        return
    from rs_vlm_app.geo.aoi import read_aoi
    from rs_vlm_app.geo.raster import open_raster

    area = read_aoi(aoi)
    missed: UserError | None = None
    for scene in scenes:
        with open_raster(Path(scene), bands=tuple(bands) if bands else None) as source:
            try:
                area.check_scene(source.bounds, source.crs if source.georeferenced else None, scene=scene)
                return
            except UserError as exc:
                missed = missed or exc
    if missed is not None and len(scenes) == 1:
        raise missed
    raise UserError(f"the area of interest does not intersect any of the {len(scenes)} scenes", path=aoi)


def check_second_model(spec: ModelSpec | None, field_name: str, family: str) -> None:
    """Check an optional second model; its errors name the spec field."""
    if spec is None:
        return
    try:
        spec.check(family=family)
    except UserError as exc:
        raise UserError(f"{field_name}: {exc}") from None


def scene_names(scenes: list[Path], limit: int = 3) -> str:
    names = [Path(s).name for s in scenes[:limit]]
    more = len(scenes) - limit
    return ", ".join(names) + (f" and {more} more" if more > 0 else "")


def short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
