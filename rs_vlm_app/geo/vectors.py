"""Vector files through geopandas: GeoPackage, GeoParquet and GeoJSON, chosen by the file's extension.

Every vector output of rs-vlm (hot spots, tiles, captions, search results) is written here, and every
vector input (areas of interest, ground-truth polygons, layers read back by the API) is read here.
Writes are atomic (rs_vlm_app.atomic): a failed write leaves no file and no temporary behind.

| extension              | format     | layers                      |
| ---------------------- | ---------- | --------------------------- |
| .gpkg                  | GeoPackage | any number                  |
| .parquet, .geoparquet  | GeoParquet | one                         |
| .geojson, .json        | GeoJSON    | one                         |
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rs_vlm_app.atomic import atomic_path
from rs_vlm_app.errors import UserError

#: extension -> (format name, how many layers it holds: None = any)
FORMATS: dict[str, tuple[str, int | None]] = {
    ".gpkg": ("GeoPackage", None),
    ".parquet": ("GeoParquet", 1),
    ".geoparquet": ("GeoParquet", 1),
    ".geojson": ("GeoJSON", 1),
    ".json": ("GeoJSON", 1),
}


def vector_format(path: str | Path, layers: int = 1) -> str:
    """The format ``path``'s extension names; UserError for an unknown extension or too many layers."""
    path = Path(path)
    found = FORMATS.get(path.suffix.lower())
    if found is None:
        raise UserError(f"unknown vector format {path.suffix or '(no extension)'!r}; use "
                        f"{', '.join(sorted(FORMATS))}", path=path)
    name, most = found
    if most is not None and layers > most:
        raise UserError(f"{name} holds one layer, this output has {layers}; use .gpkg", path=path)
    return name


def write_vector(path: str | Path, frames: Mapping[str, Any], *, geometry_types: Mapping[str, str] | None = None
                 ) -> Path:
    """Write GeoDataFrames (layer name -> frame) into ``path`` in the format its extension names.

    GeoPackage keeps every layer by name; GeoParquet and GeoJSON hold one. ``geometry_types``:
    layer -> declared geometry type ("Polygon", "MultiPolygon", ...), needed for an empty layer.
    Replaces ``path`` atomically; returns it.
    """
    path = Path(path)
    if not frames:
        raise ValueError("write_vector needs at least one layer")
    kind = vector_format(path, len(frames))
    geometry_types = dict(geometry_types or {})
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.filterwarnings("ignore", "'crs' was not provided", UserWarning)  # pixel frame: no CRS
        for i, (layer, frame) in enumerate(frames.items()):
            if kind == "GeoParquet":
                frame.to_parquet(tmp, index=False)
            elif kind == "GeoJSON":
                frame.to_file(tmp, layer=layer, driver="GeoJSON", engine="pyogrio", index=False)
            else:
                extra = {"geometry_type": geometry_types[layer]} if layer in geometry_types else {}
                frame.to_file(tmp, layer=layer, driver="GPKG", engine="pyogrio", append=i > 0, index=False,
                              encoding="UTF-8", **extra)
    return path


def read_vector(path: str | Path, layer: str | None = None):
    """One layer of a vector file as a GeoDataFrame (GeoParquet by extension, anything else via OGR).

    ``layer`` is ignored for the one-layer formats (GeoParquet, GeoJSON), so a caller may ask for the
    layer a GeoPackage output would have. UserError (one line naming the file) for a missing file, a
    missing layer, or a file OGR cannot read.
    """
    import geopandas as gpd

    path = Path(path)
    if not path.exists():
        raise UserError("file not found", path=path)
    if path.suffix.lower() in (".parquet", ".geoparquet"):
        try:
            return gpd.read_parquet(path)
        except Exception as exc:
            raise UserError(f"cannot read GeoParquet ({_reason(exc)})", path=path) from None
    import pyogrio

    try:
        names = [str(row[0]) for row in pyogrio.list_layers(path)]
    except Exception as exc:
        raise UserError(f"not a vector file OGR can read ({_reason(exc)})", path=path) from None
    if FORMATS.get(path.suffix.lower(), ("", None))[1] == 1 and len(names) == 1:
        layer = None
    if layer is not None and layer not in names:
        raise UserError(f"has no layer {layer!r}; its layers: {', '.join(names) or 'none'}", path=path)
    try:
        return gpd.read_file(path, layer=layer, engine="pyogrio")
    except Exception as exc:
        raise UserError(f"cannot read the layer ({_reason(exc)})", path=path) from None


def layer_names(path: str | Path) -> list[str]:
    """The layers of a vector file (GeoParquet: one, named after the file)."""
    path = Path(path)
    if path.suffix.lower() in (".parquet", ".geoparquet"):
        return [path.stem]
    import pyogrio

    return [str(row[0]) for row in pyogrio.list_layers(path)]


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if "not recognized as being in a supported file format" in text or "No such file" in text:
        return "OGR does not recognise the format"
    return text[:200] or type(exc).__name__
