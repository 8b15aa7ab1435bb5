"""Map layers read from result files: heat maps (GeoTIFF), hot spots and tile layers (GeoPackage).

Every layer is drawn from a file a job wrote, so what the app shows is exactly what QGIS shows
when the same file is opened there (the heat map uses the colour ramp of the .qml style written
beside it).
"""

from __future__ import annotations

import math
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from affine import Affine
from PyQt6.QtCore import QPointF, QRectF, Qt
from PyQt6.QtGui import QBrush, QColor, QFont, QImage, QPainter, QPainterPath, QPen, QPixmap, QPolygonF
from PyQt6.QtWidgets import QGraphicsItem, QGraphicsPixmapItem

from rs_vlm_app.errors import UserError
from rs_vlm_app.gui.map_view import Z_HEATMAP, Z_VECTORS, Frame

#: Heat maps are shown at most this many pixels per side (read decimated from their overviews).
HEATMAP_MAX_PIXELS = 2048

#: Fields that hold a tile's caption, and the start of names of class fields.
CAPTION_FIELDS = ("caption", "text", "description")
CLASS_HINTS = ("class", "label", "top", "category", "pred")
SCORE_FIELDS = ("score", "prob", "probability", "confidence", "similarity")

#: Qualitative palette for classes (Tableau 20-like, readable over imagery).
PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
           "#9c755f", "#bab0ac", "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
           "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]

_FALLBACK_RAMP = [(0.0, "#30123b", 0), (0.2, "#4662d7", 0), (0.4, "#1ae4b6", 70), (0.6, "#a2fc3c", 150),
                  (0.8, "#fb8022", 200), (1.0, "#7a0403", 230)]


@cache
def heat_ramp() -> np.ndarray:
    """(256, 4) uint8 RGBA lookup table of the heat-map style (resources/styles/heatmap.qml)."""
    stops = _FALLBACK_RAMP
    try:
        from rs_vlm_app.resources import resource

        root = ET.parse(resource("styles", "heatmap.qml")).getroot()
        items = root.findall(".//colorrampshader/item")
        parsed = [(float(i.get("value")), i.get("color"), int(i.get("alpha", "255"))) for i in items]
        if len(parsed) >= 2:
            stops = sorted(parsed)
    except (OSError, ET.ParseError, TypeError, ValueError, FileNotFoundError):
        pass
    values = np.array([s[0] for s in stops])
    colours = np.array([[*QColor(s[1]).getRgb()[:3], s[2]] for s in stops], dtype=float)
    x = np.linspace(0.0, 1.0, 256)
    lut = np.stack([np.interp(x, values, colours[:, c]) for c in range(4)], axis=1)
    return np.clip(np.round(lut), 0, 255).astype(np.uint8)


def colourize(heat: np.ndarray, valid: np.ndarray) -> QImage:
    """A 0..1 heat map as an RGBA image in the heat-map colours (invalid pixels transparent)."""
    idx = np.clip(np.nan_to_num(heat, nan=0.0) * 255 + 0.5, 0, 255).astype(np.uint8)
    rgba = heat_ramp()[idx]
    rgba[~valid] = 0
    rgba = np.ascontiguousarray(rgba)
    h, w = heat.shape
    return QImage(rgba.data, w, h, 4 * w, QImage.Format.Format_RGBA8888).copy()


class Layer:
    """One thing drawn on the map, read from ``path``; ``group`` is the query it answers."""

    kind = "layer"

    def __init__(self, name: str, path: Path, group: str = ""):
        self.name = name
        self.path = Path(path)
        self.group = group or name
        self.items: list[QGraphicsItem] = []
        self.visible = True
        self.opacity = 1.0
        self.loaded_at = time.time()
        self._scene = None

    def set_visible(self, visible: bool) -> None:
        self.visible = visible
        for item in self.items:
            item.setVisible(visible)

    def set_opacity(self, opacity: float) -> None:
        self.opacity = opacity
        for item in self.items:
            item.setOpacity(opacity)

    def add_to(self, scene) -> None:
        self._scene = scene
        for item in self.items:
            scene.addItem(item)
            item.setVisible(self.visible)
            item.setOpacity(self.opacity)

    def remove_from(self, scene) -> None:
        self._scene = None
        for item in self.items:
            if item.scene() is scene:
                scene.removeItem(item)

    def extent(self) -> QRectF:
        rect = QRectF()
        for item in self.items:
            rect = rect.united(item.sceneBoundingRect())
        return rect

    def files(self) -> list[Path]:
        """The files to copy when the layer is exported (with sidecars such as the .qml style)."""
        out = [self.path]
        style = self.path.with_suffix(".qml")
        if style.is_file():
            out.append(style)
        return out

    def features_at(self, x: float, y: float) -> list[dict[str, Any]]:
        return []


class HeatmapLayer(Layer):
    """A float heat map GeoTIFF (0..1, nodata transparent) over the scene."""

    kind = "heatmap"

    def __init__(self, path: Path, frame: Frame, group: str = ""):
        import rasterio
        from rasterio.enums import Resampling
        from rasterio.errors import RasterioError

        path = Path(path)
        try:
            with rasterio.open(path) as ds:
                step = max(1.0, max(ds.width, ds.height) / HEATMAP_MAX_PIXELS)
                shape = (max(1, round(ds.height / step)), max(1, round(ds.width / step)))
                data = ds.read(1, out_shape=shape, masked=True, resampling=Resampling.average)
                transform = ds.transform @ Affine.scale(ds.width / shape[1], ds.height / shape[0])
                tags = ds.tags()
                crs = ds.crs
                band_name = (ds.descriptions or (None,))[0]
        except (RasterioError, OSError) as exc:
            raise UserError(f"not a heat map rs-vlm can read ({' '.join(str(exc).split())})", path=path) from None
        if crs is not None and frame.crs is not None and crs != frame.crs:
            raise UserError(f"is in {crs.to_string()}, the open scene in {frame.crs.to_string()}; "
                            "open the scene it was computed on", path=path)
        self.query = tags.get("query") or band_name or path.stem.removesuffix("_heatmap")
        super().__init__("heat map", path, group or self.query)
        values = np.asarray(data.filled(np.nan), dtype=np.float32)
        valid = ~np.ma.getmaskarray(data) & np.isfinite(values)
        self.cosine_range = _float_pair(tags.get("cosine_min"), tags.get("cosine_max"))
        self.value_range = (float(np.nanmin(values[valid])) if valid.any() else math.nan,
                            float(np.nanmax(values[valid])) if valid.any() else math.nan)
        self.map_transform = transform
        item = QGraphicsPixmapItem(QPixmap.fromImage(colourize(values, valid)))
        item.setTransform(frame.qtransform_from(transform))
        item.setTransformationMode(Qt.TransformationMode.SmoothTransformation)
        item.setShapeMode(QGraphicsPixmapItem.ShapeMode.BoundingRectShape)
        item.setAcceptedMouseButtons(Qt.MouseButton.NoButton)
        item.setZValue(Z_HEATMAP)
        self.items = [item]
        self.opacity = 0.75


@dataclass
class Features:
    """Polygons of a GeoPackage layer in scene pixel coordinates, with their attributes."""

    geometries: np.ndarray           # shapely geometries (scene pixels)
    fields: list[str]
    records: list[dict[str, Any]] = field(default_factory=list)
    tree: Any = None

    def at(self, x: float, y: float) -> list[int]:
        import shapely

        if self.tree is None or not len(self.geometries):
            return []
        hits = self.tree.query(shapely.Point(x, y), predicate="intersects")
        return sorted((int(i) for i in hits), key=lambda i: self.geometries[i].area)


def read_features(path: Path, layer: str | None, frame: Frame) -> Features:
    """Read a vector layer (GeoPackage, GeoParquet, GeoJSON; geopandas) into the scene's pixel frame."""
    import shapely

    from rs_vlm_app.geo.vectors import read_vector

    table = read_vector(path, layer)
    geoms = np.asarray(table.geometry.values, dtype=object)
    source_crs = table.crs.to_wkt() if table.crs is not None else None
    if source_crs and frame.crs is not None:
        geoms = _reproject(geoms, source_crs, frame.crs)
    inverse = ~frame.transform

    def to_pixels(coords: np.ndarray) -> np.ndarray:
        x, y = coords[:, 0], coords[:, 1]
        return np.stack([inverse.a * x + inverse.b * y + inverse.c, inverse.d * x + inverse.e * y + inverse.f], 1)

    geoms = shapely.transform(geoms, to_pixels) if len(geoms) else geoms
    names = [str(n) for n in table.columns if n != table.geometry.name]
    columns = [table[name].to_numpy() for name in names]
    records = [{name: _plain(columns[j][i]) for j, name in enumerate(names)} for i in range(len(geoms))]
    return Features(geoms, names, records, shapely.STRtree(geoms) if len(geoms) else None)


def _reproject(geoms: np.ndarray, source_crs: str, target_crs) -> np.ndarray:
    from pyproj import CRS, Transformer

    src, dst = CRS.from_user_input(source_crs), CRS.from_wkt(target_crs.to_wkt())
    if src == dst or not len(geoms):
        return geoms
    import shapely

    transformer = Transformer.from_crs(src, dst, always_xy=True)

    def convert(coords: np.ndarray) -> np.ndarray:
        x, y = transformer.transform(coords[:, 0], coords[:, 1])
        return np.stack([x, y], 1)

    return shapely.transform(geoms, convert)


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


def painter_path(geometry) -> QPainterPath:
    """A shapely (multi)polygon (scene pixels) as a QPainterPath with holes."""
    path = QPainterPath()
    path.setFillRule(Qt.FillRule.OddEvenFill)
    polygons = getattr(geometry, "geoms", [geometry])
    for polygon in polygons:
        rings = [polygon.exterior, *polygon.interiors] if hasattr(polygon, "exterior") else [polygon]
        for ring in rings:
            coords = np.asarray(ring.coords)
            if len(coords) >= 2:
                path.addPolygon(QPolygonF([QPointF(float(x), float(y)) for x, y in coords[:, :2]]))
    return path


class PolygonsItem(QGraphicsItem):
    """Many polygons drawn in a few paint calls: one path per (fill, outline) style."""

    def __init__(self, groups: list[tuple[QPainterPath, QBrush, QPen]]):
        super().__init__()
        self.groups = groups
        rect = QRectF()
        for path, _brush, _pen in groups:
            rect = rect.united(path.boundingRect())
        self._rect = rect.adjusted(-2, -2, 2, 2)
        self.setAcceptedMouseButtons(Qt.MouseButton.NoButton)

    def boundingRect(self) -> QRectF:
        return self._rect

    def paint(self, painter: QPainter, option, widget=None) -> None:
        for path, brush, pen in self.groups:
            painter.setPen(pen)
            painter.setBrush(brush)
            painter.drawPath(path)


def cosmetic_pen(colour: str | QColor, width: float) -> QPen:
    pen = QPen(QColor(colour), width)
    pen.setCosmetic(True)
    pen.setJoinStyle(Qt.PenJoinStyle.RoundJoin)
    return pen


class RankBadge(QGraphicsItem):
    """A hot spot's rank in a dark disc, the same size at every zoom."""

    RADIUS = 10

    def __init__(self, text: str):
        super().__init__()
        self.text = text
        self.setFlag(QGraphicsItem.GraphicsItemFlag.ItemIgnoresTransformations)
        self.setAcceptedMouseButtons(Qt.MouseButton.NoButton)

    def boundingRect(self) -> QRectF:
        r = self.RADIUS + 1
        return QRectF(-r, -r, 2 * r, 2 * r)

    def paint(self, painter: QPainter, option, widget=None) -> None:
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.setPen(QPen(QColor("#ffffff"), 1.5))
        painter.setBrush(QBrush(QColor(20, 20, 20, 210)))
        painter.drawEllipse(QPointF(0, 0), self.RADIUS, self.RADIUS)
        font = QFont()
        font.setBold(True)
        font.setPointSize(8)
        painter.setFont(font)
        painter.drawText(self.boundingRect(), Qt.AlignmentFlag.AlignCenter, self.text)


class VectorLayer(Layer):
    """A GeoPackage layer. ``role``: "hotspots" (outlines + rank labels), "tiles" (tile polygons
    coloured by class or score, hover/click shows caption, classes, scores) or "vectors"."""

    def __init__(self, path: Path, layer: str | None, frame: Frame, role: str = "vectors", group: str = "",
                 lazy: bool = False):
        self.layer = layer
        self.kind = role
        self.frame = frame
        title = {"hotspots": "hot spots", "tiles": "tiles"}.get(role, layer or Path(path).stem)
        super().__init__(title, path, group or Path(path).stem)
        self.legend: list[tuple[str, QColor]] = []
        self.scale_shown: int | None = None
        self.features = Features(np.array([], dtype=object), [])
        self.loaded = False
        if not lazy:
            self.load()

    def load(self) -> None:
        """Read the features and build the drawing (a lazy layer does this when first shown)."""
        if self.loaded:
            return
        self.features = read_features(self.path, self.layer, self.frame)
        self.loaded = True
        self.items = self._hotspot_items() if self.kind == "hotspots" else self._tile_items()
        for item in self.items:
            item.setZValue(Z_VECTORS)
        if self._scene is not None:
            self.add_to(self._scene)

    def set_visible(self, visible: bool) -> None:
        if visible and not self.loaded:
            self.visible = visible
            self.load()
        super().set_visible(visible)

    def files(self) -> list[Path]:
        return [self.path]

    @property
    def caption_field(self) -> str | None:
        return next((f for f in self.features.fields if f.lower() in CAPTION_FIELDS), None)

    @property
    def class_field(self) -> str | None:
        for name in self.features.fields:
            low = name.lower()
            if low == "query" or low in CAPTION_FIELDS:
                continue
            values = [r[name] for r in self.features.records[:50]]
            if any(low.startswith(h) or h in low for h in CLASS_HINTS) and values and all(
                    isinstance(v, str) or v is None for v in values):
                return name
        return None

    @property
    def score_field(self) -> str | None:
        for name in self.features.fields:
            if name.lower() in SCORE_FIELDS:
                return name
        return None

    def _hotspot_items(self) -> list[QGraphicsItem]:
        halo = cosmetic_pen("#111111", 4.0)
        line = cosmetic_pen("#ffffff", 2.0)
        path = QPainterPath()
        for geometry in self.features.geometries:
            if geometry is not None and not geometry.is_empty:
                path.addPath(painter_path(geometry))
        no_fill = QBrush(Qt.BrushStyle.NoBrush)
        items: list[QGraphicsItem] = [PolygonsItem([(path, no_fill, halo), (path, no_fill, line)])]
        for record, geometry in zip(self.features.records, self.features.geometries, strict=True):
            if geometry is None or geometry.is_empty:
                continue
            point = geometry.representative_point()
            badge = RankBadge(str(record.get("rank", "")))
            badge.setPos(point.x, point.y)
            badge.setZValue(Z_VECTORS + 1)
            items.append(badge)
        return items

    def _tile_items(self) -> list[QGraphicsItem]:
        records, geometries = self.features.records, self.features.geometries
        indexes = list(range(len(records)))
        if records and "scale" in self.features.fields:
            scales = sorted({r["scale"] for r in records if r.get("scale") is not None})
            if scales:
                self.scale_shown = scales[0]  # overlapping scales would hide each other: show the finest
                indexes = [i for i in indexes if records[i].get("scale") == self.scale_shown]
        outline = cosmetic_pen(QColor(255, 255, 255, 140), 1.0)
        groups: dict[Any, QPainterPath] = {}
        class_field, score_field = self.class_field, self.score_field
        colours: dict[Any, QColor] = {}
        if class_field:
            names = sorted({str(records[i][class_field]) for i in indexes if records[i][class_field] is not None})
            colours = {n: QColor(PALETTE[k % len(PALETTE)]) for k, n in enumerate(names)}
            self.legend = list(colours.items())
        elif score_field:
            values = np.array([records[i][score_field] for i in indexes], dtype=float)
            lo, hi = (np.nanmin(values), np.nanmax(values)) if len(values) else (0.0, 1.0)
            lut = heat_ramp()
        for i in indexes:
            geometry = geometries[i]
            if geometry is None or geometry.is_empty:
                continue
            if class_field:
                key: Any = str(records[i][class_field])
            elif score_field:
                value = records[i][score_field]
                key = int(round(255 * (value - lo) / (hi - lo))) if hi > lo and value is not None else 0
            else:
                key = None
            groups.setdefault(key, QPainterPath()).addPath(painter_path(geometry))
        styled = []
        for key, path in groups.items():
            if class_field:
                colour = QColor(colours.get(key, QColor("#888888")))
                colour.setAlpha(110)
                brush = QBrush(colour)
            elif score_field:
                r, g, b, _a = (int(v) for v in lut[key])
                brush = QBrush(QColor(r, g, b, 30 + int(150 * key / 255)))
            else:
                brush = QBrush(Qt.BrushStyle.NoBrush)
            styled.append((path, brush, outline))
        return [PolygonsItem(styled)]

    def features_at(self, x: float, y: float) -> list[dict[str, Any]]:
        if not self.loaded:
            return []
        hits = self.features.at(x, y)
        if self.scale_shown is not None:
            shown = [i for i in hits if self.features.records[i].get("scale") == self.scale_shown]
            hits = shown + [i for i in hits if i not in shown]
        return [self.features.records[i] for i in hits]

    def geometry_of(self, record: dict[str, Any]):
        index = self.features.records.index(record)
        return self.features.geometries[index]


def gpkg_layers(path: Path) -> list[str]:
    """Names of the layers of a vector file (UserError if it is not one)."""
    from rs_vlm_app.geo.vectors import layer_names

    try:
        return layer_names(path)
    except Exception as exc:  # pyogrio's DataSourceError and OSError
        raise UserError(f"not a vector file rs-vlm can read ({' '.join(str(exc).split())})", path=path) from None


def _float_pair(a: str | None, b: str | None) -> tuple[float, float] | None:
    try:
        return float(a), float(b)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
