"""The unit of work of an archive: one block of one scene's tiles (a whole scene unless it is huge).

:func:`plan_scene` runs where the archive is written: it opens the scene, proves it can be placed on
the map and says how many units it takes. :func:`encode_unit` runs on whichever engine worker gets
the unit; it needs only the scene path, the tile settings and a loaded encoder, and returns plain
arrays (the driver commits them). Memory per unit is bounded by UNIT_TILES and the batch size,
never by the scene's size.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from rs_vlm_app.archive.inputs import SceneInput, date_from_name
from rs_vlm_app.archive.store import SceneInfo
from rs_vlm_app.errors import UserError
from rs_vlm_app.reporting import NullReporter, Reporter, check_cancelled

#: A scene with more tile windows than this is split into several units (blocks of tile rows).
UNIT_TILES = 20_000


@dataclass(frozen=True)
class TileSettings:
    """How scenes are cut into tiles (the same for every scene of an archive)."""

    grid: str = "256"
    bands: tuple[int, ...] | None = None
    min_valid: float = 0.5

    def to_dict(self) -> dict:
        return {"grid": self.grid, "bands": list(self.bands) if self.bands else None, "min_valid": self.min_valid}


@dataclass(frozen=True)
class Unit:
    scene: str          # scene id
    path: str
    part: int
    parts: int

    @property
    def key(self) -> tuple[str, int]:
        return self.scene, self.part


@dataclass
class UnitResult:
    scene: str
    part: int
    windows: np.ndarray         # (N, 5) encoded windows
    embeddings: np.ndarray      # (N, D) float32
    skipped: int                # windows skipped as mostly nodata
    seconds: float
    worker: str = ""


def plan_scene(scene: SceneInput, settings: TileSettings, unit_tiles: int = UNIT_TILES) -> SceneInfo:
    """Open ``scene``; its record (fingerprint, CRS, footprint, date, number of units). UserError when it
    cannot be read or placed on the map."""
    from rs_vlm_app.archive.footprints import lonlat_bounds
    from rs_vlm_app.geo.grid import GridSpec, build_windows
    from rs_vlm_app.geo.raster import open_raster

    with open_raster(scene.path, bands=settings.bands) as source:
        if not source.georeferenced or source.crs is None:
            raise UserError("has no georeferencing (CRS and geotransform); an archive places every tile on "
                            "the map: georeference it first (gdal_translate -a_srs/-a_ullr)", path=scene.path)
        windows = build_windows(GridSpec.parse(settings.grid), source.height, source.width, path=source.path)
        crs_wkt = source.crs.to_wkt()
        transform = list(source.transform)[:6]
        try:
            bounds = lonlat_bounds(crs_wkt, source.transform, source.width, source.height)
        except Exception as exc:  # a CRS PROJ cannot take to lon/lat
            raise UserError(f"its CRS cannot be reprojected to EPSG:4326 ({exc})", path=scene.path) from None
        return SceneInfo(
            id=scene.name, path=scene.path, fingerprint=source.fingerprint(), width=source.width,
            height=source.height, crs_wkt=crs_wkt, transform=transform, bounds=bounds,
            date=scene.date or date_from_tags(scene.path), parts=max(1, math.ceil(len(windows) / unit_tiles)),
            origin=scene.origin,
        )


def date_from_tags(path: str) -> str | None:
    """The acquisition date in the raster's metadata (TIFFTAG_DATETIME, ACQUISITIONDATETIME, ...)."""
    import rasterio

    try:
        with rasterio.open(path) as ds:
            tags = {**ds.tags(), **ds.tags(ns="IMAGERY")}
    except Exception:
        return None
    for key in ("ACQUISITIONDATETIME", "ACQUISITION_DATE", "DATE_ACQUIRED", "TIFFTAG_DATETIME", "DATETIME"):
        value = tags.get(key)
        if value:
            found = date_from_name(str(value).replace(":", "-", 2))
            if found:
                return found
    return None


def unit_windows(windows: np.ndarray, part: int, parts: int) -> np.ndarray:
    """The windows of unit ``part`` of ``parts``: consecutive blocks in (row0, scale, col0) order, so a
    unit reads a band of rows of the raster."""
    order = np.lexsort((windows[:, 2], windows[:, 4], windows[:, 0]))
    size = math.ceil(len(windows) / parts)
    return windows[order[part * size:(part + 1) * size]]


def encode_unit(unit: Unit, settings: TileSettings, encoder, reporter: Reporter | None = None) -> UnitResult:
    """Encode the tiles of ``unit`` (windows with less valid area than min_valid are skipped)."""
    from rs_vlm_app.geo.blocks import BlockReader
    from rs_vlm_app.geo.grid import GridSpec, build_windows
    from rs_vlm_app.geo.raster import open_raster
    from rs_vlm_app.tasks.scene_encoding import fast_preprocessing

    reporter = reporter or NullReporter()
    started = time.monotonic()
    with open_raster(unit.path, bands=settings.bands) as source:
        windows = unit_windows(build_windows(GridSpec.parse(settings.grid), source.height, source.width,
                                             path=source.path), unit.part, unit.parts)
        reader = BlockReader(source, windows, batch_size=encoder.batch_size,
                             tile_transform=fast_preprocessing(encoder).transform,
                             min_valid=settings.min_valid, order="rows")
        indexes, vectors = [], []
        reporter.progress("tiles", 0, len(windows))
        for batch in reader:
            check_cancelled(reporter)
            indexes.append(np.asarray(batch.indexes, dtype=np.int64))
            vectors.append(np.asarray(encoder.encode_images(batch.tiles), dtype=np.float32))
            reporter.progress("tiles", int(batch.next_start), len(windows))
    if indexes:
        index = np.concatenate(indexes)
        order = np.argsort(index, kind="stable")   # tiles in window order, whatever the read order
        kept, embeddings = windows[index[order]], np.concatenate(vectors)[order]
    else:
        kept, embeddings = np.empty((0, 5), np.int64), np.empty((0, encoder.embed_dim), np.float32)
    return UnitResult(unit.scene, unit.part, kept, embeddings, len(windows) - len(kept),
                      time.monotonic() - started)
