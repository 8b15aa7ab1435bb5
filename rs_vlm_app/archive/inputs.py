"""What to index: scene arguments (files, folders, globs, GDAL paths) and --scenes lists (a text file
of paths/URLs, a glob, a STAC Item or ItemCollection) become named scenes.

Scenes are keyed by name in an archive (the file stem, or the STAC item id), so two different
scenes with one name are refused before any work. A STAC item without the asset asked for is not
fatal: it is returned as a problem, recorded with the run's failures, and the others are indexed.
"""

from __future__ import annotations

import datetime as dt
import glob
import json
import re
from dataclasses import dataclass
from pathlib import Path

from rs_vlm_app.errors import UserError

RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".jp2", ".img", ".png", ".jpg", ".jpeg", ".ntf")
#: STAC assets tried, in order, when --asset is not given.
DEFAULT_ASSETS = ("visual", "rgb", "image", "data")
_GDAL_PATH = re.compile(r"^(/vsi|[A-Za-z0-9_]{2,}:)|://")
_DATE_IN_NAME = re.compile(r"(?<!\d)((?:19|20)\d\d)[-_]?(0[1-9]|1[0-2])[-_]?(0[1-9]|[12]\d|3[01])(?!\d)")


@dataclass(frozen=True)
class SceneInput:
    """One scene to index: its archive name, what GDAL opens, and its date when the input says it."""

    name: str
    path: str
    date: str | None = None        # ISO date (YYYY-MM-DD)
    origin: str = ""               # the argument or list entry it came from (for messages)


@dataclass(frozen=True)
class InputProblem:
    """An input that names no readable scene (e.g. a STAC item without the asset)."""

    name: str
    path: str
    message: str


def collect_scenes(args: list[str], lists: list[str] | None = None, *,
                   asset: str | None = None) -> tuple[list[SceneInput], list[InputProblem]]:
    """Every scene named by ``args`` (files, folders, globs, GDAL paths) and ``lists`` (--scenes:
    text files, globs, STAC JSON), de-duplicated by path; UserError for two scenes with one name."""
    scenes: list[SceneInput] = []
    problems: list[InputProblem] = []
    for arg in args:
        scenes += _expand(str(arg))
    for entry in lists or []:
        found, bad = _expand_list(str(entry), asset)
        scenes += found
        problems += bad
    unique: dict[str, SceneInput] = {}
    by_name: dict[str, SceneInput] = {}
    for scene in scenes:
        if scene.path in unique:
            continue
        other = by_name.get(scene.name)
        if other is not None:
            raise UserError(f"two scenes are named {scene.name!r} ({other.path} and {scene.path}); an archive "
                            "keys scenes by name: rename one or index them into separate archives")
        unique[scene.path] = by_name[scene.name] = scene
    if not unique and not problems:
        raise UserError("no scenes to index: give raster files, folders, globs or --scenes LIST")
    return list(unique.values()), problems


def date_from_name(name: str) -> str | None:
    """An ISO date found in a file name (2020-08-31, 20200831, 2020_08_31), else None."""
    for match in _DATE_IN_NAME.finditer(name):
        try:
            return dt.date(int(match[1]), int(match[2]), int(match[3])).isoformat()
        except ValueError:
            continue
    return None


def _scene(path: str, origin: str, date: str | None = None, name: str | None = None) -> SceneInput:
    stem = name or Path(path.rstrip("/")).stem
    return SceneInput(name=safe_name(stem), path=path, date=date or date_from_name(Path(path).name), origin=origin)


def safe_name(text: str) -> str:
    """A scene name usable as a folder name everywhere."""
    name = re.sub(r"[^\w.\-]+", "_", text).strip("._")
    return name[:120] or "scene"


def _expand(arg: str) -> list[SceneInput]:
    if _GDAL_PATH.search(arg):
        return [_scene(arg, arg)]
    path = Path(arg).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in RASTER_SUFFIXES)
        if not files:
            raise UserError("folder holds no raster files (.tif, .vrt, .jp2, ...)", path=path)
        return [_scene(str(p), arg) for p in files]
    if any(c in arg for c in "*?["):
        files = sorted(glob.glob(arg, recursive=True))
        if not files:
            raise UserError(f"the pattern {arg!r} matches no files")
        return [_scene(p, arg) for p in files if Path(p).is_file()]
    if not path.exists():
        raise UserError("file not found", path=path)
    return [_scene(str(path), arg)]


def _expand_list(entry: str, asset: str | None) -> tuple[list[SceneInput], list[InputProblem]]:
    path = Path(entry).expanduser()
    if any(c in entry for c in "*?[") and not path.exists():
        return _expand(entry), []
    if not path.is_file():
        raise UserError("scene list not found", path=path)
    if path.suffix.lower() in (".json", ".geojson"):
        return read_stac(path, asset)
    scenes = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if not _GDAL_PATH.search(line) and not Path(line).expanduser().is_absolute():
            line = str(path.parent / line)
        scenes += _expand(line)
    return scenes, []


def read_stac(path: Path, asset: str | None) -> tuple[list[SceneInput], list[InputProblem]]:
    """The scenes of a STAC Item or ItemCollection (one asset of each item)."""
    try:
        import pystac
    except ImportError:
        raise UserError("reading STAC needs pystac: pip install 'rs-vlm[distributed]'", path=path) from None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"not a JSON file ({exc})", path=path) from None
    kind = data.get("type") if isinstance(data, dict) else None
    try:
        if kind == "Feature":
            items = [pystac.Item.from_dict(data)]
        elif kind == "FeatureCollection":
            items = list(pystac.ItemCollection.from_dict(data))
        else:
            raise UserError("is neither a STAC Item nor an ItemCollection (its \"type\" must be Feature or "
                            "FeatureCollection)", path=path)
    except UserError:
        raise
    except Exception as exc:  # pystac raises several types for malformed items
        raise UserError(f"not a valid STAC item ({' '.join(str(exc).split())[:200]})", path=path) from None
    scenes, problems = [], []
    for item in items:
        key, found = _pick_asset(item, asset)
        if found is None:
            names = ", ".join(item.assets) or "none"
            wanted = f"asset {asset!r}" if asset else f"visual asset ({', '.join(DEFAULT_ASSETS)})"
            problems.append(InputProblem(item.id, str(path), f"STAC item {item.id} has no {wanted}; its assets: "
                                                              f"{names} (choose one with --asset NAME)"))
            continue
        href = found.href
        if not _GDAL_PATH.search(href) and not Path(href).is_absolute():
            href = str((path.parent / href).resolve())
        if href.startswith(("http://", "https://")):
            href = "/vsicurl/" + href
        when = item.datetime or item.common_metadata.start_datetime
        scenes.append(_scene(href, f"{path}#{item.id}:{key}", date=when.date().isoformat() if when else None,
                             name=item.id))
    return scenes, problems


def _pick_asset(item, asset: str | None):
    if asset:
        return asset, item.assets.get(asset)
    for key in DEFAULT_ASSETS:
        if key in item.assets:
            return key, item.assets[key]
    for key, value in item.assets.items():
        if "visual" in (value.roles or []):
            return key, value
    for key, value in item.assets.items():
        if value.media_type and "tiff" in value.media_type:
            return key, value
    return None, None
