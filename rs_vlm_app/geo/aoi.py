"""Areas of interest: a polygon layer (any OGR vector, any CRS) that limits where a task works.

``--aoi FILE[:LAYER]`` on localize, caption, classify, search and index. The layer's polygons are
unioned into one geometry; it is reprojected to each raster's CRS on demand. Only tile windows that
overlap the area are read and encoded (:meth:`Aoi.window_mask`), and raster outputs are masked to
it (:meth:`Aoi.raster_mask`), so a 500 m area in a 10 km scene costs what the area costs.

Every bad input is one line naming the file: a missing file or layer, a layer without polygons,
an invalid polygon, an area that does not meet the scene.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import shapely

from rs_vlm_app.errors import UserError

log = logging.getLogger(__name__)

#: Edges are cut into at most this many pieces of the area's extent before reprojection, so that a
#: straight edge in one CRS may follow the curve it becomes in another.
DENSIFY_PARTS = 64


def split_spec(spec: str | Path) -> tuple[Path, str | None]:
    """``FILE[:LAYER]`` -> (file, layer or None). A path that exists as given is never split, so
    ``C:\\data\\aoi.gpkg`` and file names with colons work."""
    text = str(spec).strip()
    if not text:
        raise UserError("the area of interest is empty; give FILE or FILE:LAYER (a polygon layer)")
    if Path(text).expanduser().exists() or ":" not in text:
        return Path(text).expanduser(), None
    name, _, layer = text.rpartition(":")
    if not name or len(name) == 1 and name.isalpha():  # "C:foo" is a drive, not a layer
        return Path(text).expanduser(), None
    return Path(name).expanduser(), layer or None


def check_aoi_text(value: object) -> str | None:
    """An option value for an area of interest: None or ``FILE[:LAYER]`` text (not read here)."""
    if value is None:
        return None
    if not isinstance(value, str | Path) or not str(value).strip():
        raise UserError(f"the area of interest must be a file name (FILE or FILE:LAYER), not {value!r}")
    return str(value).strip()


@dataclass(frozen=True)
class Aoi:
    """One area of interest: the union of a layer's polygons, in the layer's CRS."""

    geometry: shapely.Geometry          # valid, non-empty (Multi)Polygon
    crs: Any                            # pyproj.CRS, or None (coordinates in the scene's frame)
    source: str                         # FILE or FILE:LAYER, named in messages
    features: int = 0                   # polygons read
    _cache: dict = field(default_factory=dict, compare=False, repr=False)

    def in_crs(self, crs: Any) -> shapely.Geometry:
        """The area in ``crs`` (anything pyproj or rasterio accept; None: the scene's own frame)."""
        if crs is None or self.crs is None:
            if (crs is None) != (self.crs is None):
                raise UserError(self._frame_mismatch(crs), path=self.source)
            return self.geometry
        from pyproj import CRS as ProjCRS

        target = ProjCRS.from_user_input(crs.to_wkt() if hasattr(crs, "to_wkt") else crs)
        key = target.to_wkt()
        if key not in self._cache:
            if target.equals(self.crs):
                self._cache[key] = self.geometry
            else:
                self._cache[key] = _reproject(self.geometry, self.crs, target, self.source)
        return self._cache[key]

    def _frame_mismatch(self, crs: Any) -> str:
        if self.crs is None:
            return ("has no coordinate reference system, so it cannot be placed on a georeferenced scene; "
                    "assign one (QGIS: Layer > Set CRS) and save it again")
        return ("is georeferenced but the scene is not (it has no CRS), so the area cannot be placed on it")

    def pixel_geometry(self, transform: Any, crs: Any) -> shapely.Geometry:
        """The area in the pixel (column, row) frame of a raster with ``transform`` and ``crs``."""
        inverse = ~transform
        a, b, c, d, e, f = inverse[:6]

        def to_pixels(xy: np.ndarray) -> np.ndarray:
            x, y = xy[:, 0], xy[:, 1]
            return np.column_stack([a * x + b * y + c, d * x + e * y + f])

        return shapely.transform(self.in_crs(crs), to_pixels)

    def window_mask(self, windows: np.ndarray, transform: Any, crs: Any) -> np.ndarray:
        """Which tile windows ((N, >=4) row0, row1, col0, col1) share area with the AOI: (N,) bool.

        A window that only touches the boundary does not count."""
        windows = np.asarray(windows)
        if not len(windows):
            return np.zeros(0, dtype=bool)
        area = self.pixel_geometry(transform, crs)
        shapely.prepare(area)
        boxes = shapely.box(windows[:, 2], windows[:, 0], windows[:, 3], windows[:, 1])
        return shapely.intersects(area, boxes) & ~shapely.touches(area, boxes)

    def select_windows(self, windows: np.ndarray, transform: Any, crs: Any, *, scene: str | Path) -> np.ndarray:
        """The windows that overlap the AOI (a sub-array, same order); UserError when none does."""
        keep = self.window_mask(windows, transform, crs)
        if not keep.any():
            raise UserError(f"the area of interest {self.source} does not intersect the scene", path=scene)
        log.info("%s: area of interest %s keeps %d of %d tiles", scene, self.source, int(keep.sum()),
                 len(keep))
        return np.asarray(windows)[keep]

    def raster_mask(self, shape: tuple[int, int], transform: Any, crs: Any) -> np.ndarray:
        """(H, W) bool: True for pixels of a grid with ``transform`` whose centre lies in the AOI."""
        from rasterio.features import geometry_mask

        return geometry_mask([self.in_crs(crs)], out_shape=shape, transform=transform, invert=True)

    def check_scene(self, bounds: tuple[float, float, float, float], crs: Any, *, scene: str | Path) -> None:
        """UserError unless the AOI overlaps the box ``bounds`` (left, bottom, right, top) in ``crs``."""
        area = self.in_crs(crs)
        box = shapely.box(*bounds)
        if not area.intersects(box) or area.touches(box):
            raise UserError(f"the area of interest {self.source} does not intersect the scene", path=scene)

    def key(self) -> str:
        """A short digest of the geometry and CRS (for cache keys and manifests)."""
        digest = hashlib.blake2b(shapely.to_wkb(self.geometry), digest_size=8)
        digest.update((self.crs.to_wkt() if self.crs is not None else "").encode())
        return digest.hexdigest()

    def to_geodataframe(self):
        """The area as a one-row GeoDataFrame (column ``source``)."""
        import geopandas as gpd

        return gpd.GeoDataFrame({"source": [self.source]}, geometry=[self.geometry], crs=self.crs)


def read_aoi(spec: str | Path) -> Aoi:
    """Read ``FILE[:LAYER]`` (any vector OGR reads: GeoPackage, Shapefile, GeoJSON, GeoParquet, KML ...).

    The polygons (Polygon / MultiPolygon features; other geometry types are ignored) are unioned.
    A file with several layers needs ``:LAYER`` unless exactly one of them holds polygons.
    """
    import pyogrio

    path, layer = split_spec(spec)
    name = f"{path}:{layer}" if layer else str(path)
    if not path.exists():
        raise UserError("file not found (area of interest)", path=path)
    if path.suffix.lower() in (".parquet", ".geoparquet"):  # GeoParquet: one layer, read by geopandas itself
        from rs_vlm_app.geo.vectors import read_vector

        frame = read_vector(path)
    else:
        try:
            layers = pyogrio.list_layers(path)
        except Exception as exc:  # pyogrio raises DataSourceError and others for unreadable input
            raise UserError(f"not a vector file OGR can read ({_reason(exc)})", path=path) from None
        names = [str(row[0]) for row in layers]
        if layer is not None and layer not in names:
            raise UserError(f"has no layer {layer!r}; its layers: {', '.join(names) or 'none'}", path=path)
        if layer is None:
            layer = _pick_layer(path, layers)
        frame = _read_frame(path, layer)
    if frame.empty:
        raise UserError("the area of interest has no features (an empty layer)", path=name)
    geoms = np.asarray(frame.geometry.values, dtype=object)
    present = geoms[~shapely.is_missing(geoms)]
    polygons = present[np.isin(shapely.get_type_id(present), [3, 6])] if len(present) else present
    if not len(polygons):
        kinds = sorted({g.geom_type for g in present}) or ["no geometry"]
        raise UserError(f"holds no polygons ({', '.join(kinds)}); an area of interest must be polygons", path=name)
    invalid = ~shapely.is_valid(polygons)
    if invalid.any():
        first = int(np.flatnonzero(invalid)[0])
        reason = shapely.is_valid_reason(polygons[first])
        raise UserError(f"polygon {first + 1} is invalid ({reason}); repair it (QGIS: Fix geometries) "
                        f"and try again", path=name)
    union = shapely.union_all(polygons)
    if union.is_empty or union.area <= 0:
        raise UserError("the polygons have no area", path=name)
    return Aoi(geometry=union, crs=frame.crs, source=name, features=len(polygons))


def _pick_layer(path: Path, layers: np.ndarray) -> str | None:
    if len(layers) <= 1:
        return str(layers[0][0]) if len(layers) else None
    polygonal = [str(row[0]) for row in layers if row[1] and "polygon" in str(row[1]).lower()]
    if len(polygonal) == 1:
        return polygonal[0]
    names = ", ".join(str(row[0]) for row in layers)
    raise UserError(f"has several layers ({names}); choose one as FILE:LAYER", path=path)


def _read_frame(path: Path, layer: str | None):
    import geopandas as gpd

    try:
        return gpd.read_file(path, layer=layer, engine="pyogrio")
    except Exception as exc:
        raise UserError(f"cannot read the area of interest ({_reason(exc)})", path=path) from None


def _reproject(geometry: shapely.Geometry, src: Any, dst: Any, source: str) -> shapely.Geometry:
    from pyproj import Transformer
    from pyproj.exceptions import ProjError

    minx, miny, maxx, maxy = geometry.bounds
    dense = shapely.segmentize(geometry, max(maxx - minx, maxy - miny) / DENSIFY_PARTS or 1.0)
    transformer = Transformer.from_crs(src, dst, always_xy=True)

    def forward(xy: np.ndarray) -> np.ndarray:
        x, y = transformer.transform(xy[:, 0], xy[:, 1], errcheck=True)
        return np.column_stack([x, y])

    try:
        out = shapely.transform(dense, forward)
    except ProjError as exc:
        raise UserError(f"cannot reproject the area of interest to the scene's CRS ({_reason(exc)})",
                        path=source) from None
    if not np.isfinite(shapely.get_coordinates(out)).all():
        raise UserError("the area of interest lies outside the area the scene's CRS can represent", path=source)
    return shapely.make_valid(out) if not out.is_valid else out


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if "not recognized as being in a supported file format" in text or "No such file" in text:
        return "OGR does not recognise the format"
    return text[:200] or type(exc).__name__
