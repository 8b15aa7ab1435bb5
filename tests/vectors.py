"""Read GeoPackage layers in tests without geopandas."""

from __future__ import annotations

from pathlib import Path

import shapely
from pyogrio.raw import read


def read_layer(path: Path, layer: str | None = None):
    """``(meta, shapely geometries, {field: array})`` of one layer (the first when ``layer`` is None)."""
    meta, _fids, geometry, fields = read(path, layer=layer)
    return meta, shapely.from_wkb(geometry), dict(zip(meta["fields"], fields, strict=True))
