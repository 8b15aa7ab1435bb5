"""Outputs that open in QGIS exactly on the scene: GeoTIFF / COG rasters and GeoPackage layers.

Every writer is atomic (rs_vlm_app.atomic): a failed write leaves no file and no temporary behind.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import shapely
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window

from rs_vlm_app.atomic import atomic_path

#: Overview levels are added (x2 each) until the smallest is below this many pixels on its long side.
OVERVIEW_MIN_SIZE = 256

Block = tuple[Window, np.ndarray]


# -- GeoTIFF ----------------------------------------------------------------------------------------


def write_geotiff(
    path: str | Path, array: np.ndarray, *, crs: CRS | str | None, transform: Affine,
    nodata: float | None = None, cog: bool = False, overviews: bool = True,
    colormap: dict[int, tuple[int, int, int, int]] | None = None,
    band_descriptions: Sequence[str] | None = None, tags: dict[str, str] | None = None,
) -> Path:
    """Write a (H, W) or (bands, H, W) array as a tiled, DEFLATE-compressed GeoTIFF.

    ``crs`` None writes pixel coordinates (with ``transform``). ``cog`` writes a Cloud-Optimized
    GeoTIFF. Overviews average, except for class rasters with a ``colormap`` (nearest).
    Returns ``path``.
    """
    array = np.asarray(array)
    if array.ndim == 2:
        array = array[np.newaxis]
    if array.ndim != 3:
        raise ValueError(f"array must be (H, W) or (bands, H, W), got shape {array.shape}")
    count, height, width = array.shape
    block = _block_size(height, width)

    def blocks() -> Iterator[Block]:
        for row in range(0, height, block):
            rows = min(block, height - row)
            yield Window(0, row, width, rows), array[:, row:row + rows]

    return write_geotiff_blocks(
        path, blocks(), height=height, width=width, count=count, dtype=array.dtype, crs=crs,
        transform=transform, nodata=nodata, cog=cog, overviews=overviews, colormap=colormap,
        band_descriptions=band_descriptions, tags=tags,
    )


def write_geotiff_blocks(
    path: str | Path, blocks: Iterable[Block] | Callable[[Window], np.ndarray], *, height: int,
    width: int, count: int, dtype: Any, crs: CRS | str | None, transform: Affine,
    nodata: float | None = None, cog: bool = False, overviews: bool = True,
    colormap: dict[int, tuple[int, int, int, int]] | None = None,
    band_descriptions: Sequence[str] | None = None, tags: dict[str, str] | None = None,
) -> Path:
    """Like :func:`write_geotiff` for rasters bigger than memory, written block by block.

    ``blocks``: an iterable of ``(window, block)`` pairs (block (bands, h, w) or (h, w) for one
    band; windows may come in any order; pixels never written read as ``nodata``, or 0), or a
    callable ``window -> block`` called once for each internal block of the file, row by row.
    Memory is bounded by the caller's blocks plus GDAL's cache.
    """
    dtype = np.dtype(dtype)
    if colormap is not None and (count != 1 or dtype not in (np.uint8, np.uint16)):
        raise ValueError("a colormap needs a single uint8 or uint16 band")
    if band_descriptions is not None and len(band_descriptions) != count:
        raise ValueError(f"{len(band_descriptions)} band descriptions for {count} bands")
    block = _block_size(height, width)
    profile = {
        "driver": "GTiff", "height": height, "width": width, "count": count, "dtype": dtype.name,
        "crs": CRS.from_user_input(crs) if crs is not None else None, "transform": transform,
        "nodata": nodata, "tiled": True, "blockxsize": block, "blockysize": block,
        "compress": "deflate", "predictor": _predictor(dtype), "BIGTIFF": "IF_SAFER",
    }
    if profile["crs"] is None:
        profile.pop("crs")
    resampling = Resampling.nearest if colormap is not None else Resampling.average
    path = Path(path)
    with atomic_path(path) as tmp:
        if not cog:
            _write_gtiff(tmp, profile, blocks, colormap, band_descriptions, tags,
                         overview_factors(height, width) if overviews else [], resampling)
        else:
            # GDAL's COG driver only copies: write a plain tiled GeoTIFF beside it, then convert.
            fd, staging_name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".staging.tif",
                                                dir=tmp.parent)
            os.close(fd)
            staging = Path(staging_name)
            try:
                _write_gtiff(staging, profile, blocks, colormap, band_descriptions, tags, [], resampling)
                _copy_to_cog(staging, tmp, dtype, block, overviews, resampling)
            finally:
                _remove_with_sidecars(staging)
    return path


def _write_gtiff(
    target: Path, profile: dict, blocks: Iterable[Block] | Callable[[Window], np.ndarray],
    colormap: dict | None, band_descriptions: Sequence[str] | None, tags: dict[str, str] | None,
    factors: list[int], resampling: Resampling,
) -> None:
    options = {"COMPRESS_OVERVIEW": "DEFLATE", "PREDICTOR_OVERVIEW": str(profile["predictor"]),
               "GDAL_TIFF_OVR_BLOCKSIZE": str(profile["blockxsize"])}
    with warnings.catch_warnings():
        # the pixel frame (PIXEL_TRANSFORM) is a flipped identity: GDAL's GTiff driver does store it
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        dst = rasterio.open(target, "w", **profile)
    with rasterio.Env(**options), dst:
        if callable(blocks):
            for _ij, window in dst.block_windows(1):
                _write_block(dst, window, blocks(window))
        else:
            for window, block in blocks:
                _write_block(dst, window, block)
        if colormap is not None:
            dst.write_colormap(1, {int(k): tuple(int(c) for c in v) for k, v in colormap.items()})
        for band, text in enumerate(band_descriptions or (), start=1):
            dst.set_band_description(band, text)
        if tags:
            dst.update_tags(**{str(k): str(v) for k, v in tags.items()})
        if factors:
            dst.build_overviews(factors, resampling)
            dst.update_tags(ns="rio_overview", resampling=resampling.name)


def _write_block(dst: Any, window: Window, block: np.ndarray) -> None:
    block = np.asarray(block)
    if block.ndim == 2:
        block = block[np.newaxis]
    if block.shape != (dst.count, int(window.height), int(window.width)):
        raise ValueError(f"block of shape {block.shape} does not fit window {window} of {dst.count} bands")
    dst.write(block, window=window)


def _copy_to_cog(source: Path, target: Path, dtype: np.dtype, block: int, overviews: bool,
                 resampling: Resampling) -> None:
    from rasterio.shutil import copy as gdal_copy

    gdal_copy(
        source, target, driver="COG", COMPRESS="DEFLATE", PREDICTOR=str(_predictor(dtype)),
        BLOCKSIZE=str(block), BIGTIFF="IF_SAFER", OVERVIEWS="AUTO" if overviews else "NONE",
        OVERVIEW_RESAMPLING=resampling.name.upper(),
    )


def overview_factors(height: int, width: int, min_size: int = OVERVIEW_MIN_SIZE) -> list[int]:
    """2, 4, 8, ... until the overview's long side is at most ``min_size`` pixels."""
    factors = []
    factor = 2
    while max(height, width) / (factor / 2) > min_size:
        factors.append(factor)
        factor *= 2
    return factors


def _block_size(height: int, width: int) -> int:
    return 512 if min(height, width) >= 4096 else 256


def _predictor(dtype: np.dtype) -> int:
    return 3 if dtype.kind == "f" else 2


def _remove_with_sidecars(path: Path) -> None:
    for candidate in (path, path.with_name(path.name + ".aux.xml"), path.with_name(path.name + ".ovr")):
        with contextlib.suppress(FileNotFoundError):
            candidate.unlink()


# -- georeferencing helpers ------------------------------------------------------------------------


def scaled_transform(transform: Affine, width: int, height: int, out_width: int, out_height: int) -> Affine:
    """The transform of an ``out_width`` x ``out_height`` grid over the same footprint as a
    ``width`` x ``height`` grid with ``transform``."""
    return transform @ Affine.scale(width / out_width, height / out_height)


def window_polygon(transform: Affine, row0: float, row1: float, col0: float, col1: float) -> shapely.Polygon:
    """The footprint of pixel window rows ``row0:row1``, columns ``col0:col1`` in the raster's CRS."""
    corners = [transform @ (c, r) for c, r in ((col0, row0), (col1, row0), (col1, row1), (col0, row1))]
    return shapely.Polygon(corners)


def window_polygons(transform: Affine, windows: np.ndarray) -> np.ndarray:
    """Footprints of many windows ((N, >=4) array of row0, row1, col0, col1), as a shapely array."""
    windows = np.asarray(windows, dtype=np.float64)
    row0, row1, col0, col1 = (windows[:, i] for i in range(4))
    cols = np.stack([col0, col1, col1, col0], axis=1)
    rows = np.stack([row0, row0, row1, row1], axis=1)
    a, b, c, d, e, f = transform[:6]
    xs, ys = a * cols + b * rows + c, d * cols + e * rows + f
    return shapely.polygons(np.stack([xs, ys], axis=-1))


# -- GeoPackage ------------------------------------------------------------------------------------


@dataclass
class VectorLayer:
    """One GeoPackage layer: geometries and one value per geometry in each field."""

    name: str
    geometries: Sequence[shapely.Geometry] | np.ndarray
    fields: dict[str, Sequence | np.ndarray]
    geometry_type: str  # "Polygon", "MultiPolygon", "Point", ...


def write_gpkg(path: str | Path, layers: Sequence[VectorLayer], *, crs: CRS | str | None) -> Path:
    """Write ``layers`` with geopandas into ``path`` (replacing the file), atomically. Returns ``path``.

    The extension chooses the format (rs_vlm_app.geo.vectors): .gpkg (any number of layers),
    .parquet (GeoParquet) or .geojson (one layer). Field types follow the numpy dtypes: integers ->
    int64, floats -> float64, bool, text. An empty layer is written with its fields. ``crs`` None:
    no CRS (pixel coordinates).
    """
    from rs_vlm_app.geo.vectors import write_vector

    if not layers:
        raise ValueError("write_gpkg needs at least one layer")
    names = [layer.name for layer in layers]
    if len(set(names)) != len(names):
        raise ValueError(f"layer names must be distinct: {names}")
    crs_text = _crs_text(crs)
    frames = {layer.name: layer_frame(layer, crs_text) for layer in layers}
    return write_vector(path, frames, geometry_types={layer.name: layer.geometry_type for layer in layers})


def layer_frame(layer: VectorLayer, crs: CRS | str | None = None):
    """``layer`` as a GeoDataFrame (fields typed as :func:`write_gpkg` writes them)."""
    import geopandas as gpd

    geometries, values, field_names = _prepare(layer)
    columns = dict(zip(field_names, values, strict=True))
    return gpd.GeoDataFrame(columns, geometry=gpd.GeoSeries(list(geometries), crs=_crs_text(crs) if crs else None),
                            crs=_crs_text(crs) if crs else None)


def _prepare(layer: VectorLayer) -> tuple[np.ndarray, list[np.ndarray], list[str]]:
    geometries = np.asarray(layer.geometries, dtype=object)
    if geometries.ndim != 1:
        geometries = geometries.reshape(-1)
    if layer.geometry_type.startswith("Multi"):
        single = layer.geometry_type[len("Multi"):]
        geometries = np.array([_promote(g, single) for g in geometries], dtype=object)
    n = len(geometries)
    values = []
    for name, column in layer.fields.items():
        array = _field_array(column)
        if len(array) != n:
            raise ValueError(f"layer {layer.name!r}: field {name!r} has {len(array)} values for {n} geometries")
        values.append(array)
    return geometries, values, list(layer.fields)


def _promote(geometry: shapely.Geometry, single: str) -> shapely.Geometry:
    if geometry is not None and geometry.geom_type == single:
        return {"Polygon": shapely.MultiPolygon, "Point": shapely.MultiPoint,
                "LineString": shapely.MultiLineString}[single]([geometry])
    return geometry


def _field_array(column: Sequence | np.ndarray) -> np.ndarray:
    array = np.asarray(column)
    if array.ndim != 1:
        array = np.asarray(list(column), dtype=object) if array.ndim == 0 else array.reshape(-1)
    kind = array.dtype.kind
    if kind == "b":
        return array.astype(bool)
    if kind in "iu":
        return array.astype(np.int64)
    if kind == "f":
        return array.astype(np.float64)
    if kind == "O":
        present = [v for v in array if v is not None]
        if present and all(isinstance(v, bool | np.bool_) for v in present) and len(present) == len(array):
            return array.astype(bool)
        if present and all(isinstance(v, int | np.integer) for v in present) and len(present) == len(array):
            return array.astype(np.int64)
        if present and all(isinstance(v, int | float | np.number) for v in present):
            return np.array([np.nan if v is None else float(v) for v in array], dtype=np.float64)
    if kind in "USO":
        return np.array([None if v is None else str(v) for v in array], dtype=object)
    raise TypeError(f"unsupported field type {array.dtype}")


def _crs_text(crs: CRS | str | None) -> str | None:
    if crs is None:
        return None
    crs = CRS.from_user_input(crs)
    epsg = crs.to_epsg(confidence_threshold=100)
    return f"EPSG:{epsg}" if epsg else crs.to_wkt()

