"""Turning a finished job's files into QGIS layers: styled, in the source layer's CRS, grouped.

The worker writes every result as a file (GeoTIFF heat maps and class rasters, GeoPackage layers);
this module opens them as layers, applies the shipped .qml styles and puts them in a layer-tree
group named after the query (or the task), above everything else.
"""

from __future__ import annotations

from qgis.core import (
    QgsLayerTreeGroup,
    QgsMapLayer,
    QgsProject,
    QgsRasterLayer,
    QgsVectorLayer,
)

from .shipped import style_path

#: custom layer properties the plugin sets on the layers it adds
ROLE_PROPERTY = "rs_vlm/role"
QUERY_PROPERTY = "rs_vlm/query"


class ResultError(Exception):
    """A result file that cannot be opened as a layer; ``str()`` is one line."""


def apply_style(layer: QgsMapLayer, name: str) -> bool:
    """Apply the shipped ``<name>.qml``; False (and the layer keeps QGIS's default) when it fails."""
    try:
        path = style_path(name)
    except FileNotFoundError:
        return False
    _message, ok = layer.loadNamedStyle(str(path))
    if ok:
        layer.triggerRepaint()
    return bool(ok)


def open_raster(path: str, name: str, style: str | None, crs_from: QgsMapLayer | None) -> QgsRasterLayer:
    layer = QgsRasterLayer(str(path), name, "gdal")
    if not layer.isValid():
        raise ResultError(f"{path}: QGIS cannot open the worker's raster")
    _ensure_crs(layer, crs_from)
    if style:
        apply_style(layer, style)
    return layer


def open_vector(gpkg: str, layer_name: str, name: str, style: str | None,
                crs_from: QgsMapLayer | None) -> QgsVectorLayer:
    layer = QgsVectorLayer(f"{gpkg}|layername={layer_name}", name, "ogr")
    if not layer.isValid():
        raise ResultError(f"{gpkg}: QGIS cannot open its layer '{layer_name}'")
    _ensure_crs(layer, crs_from)
    if style:
        apply_style(layer, style)
    return layer


def _ensure_crs(layer: QgsMapLayer, crs_from: QgsMapLayer | None) -> None:
    """Results are written in the scene's CRS; a scene without one gives results without one, which
    then take the source layer's (QGIS would otherwise ask or guess)."""
    if not layer.crs().isValid() and crs_from is not None and crs_from.crs().isValid():
        layer.setCrs(crs_from.crs())


def unique_group_name(root: QgsLayerTreeGroup, name: str) -> str:
    taken = {child.name() for child in root.children() if isinstance(child, QgsLayerTreeGroup)}
    candidate, n = name, 2
    while candidate in taken:
        candidate, n = f"{name} ({n})", n + 1
    return candidate


def add_group(layers: list[tuple[QgsMapLayer, bool]], group_name: str, project: QgsProject | None = None,
              tag: dict[str, str] | None = None) -> QgsLayerTreeGroup:
    """Add ``layers`` (layer, visible) to ``project`` in a new top-level group, first on top."""
    project = project or QgsProject.instance()
    root = project.layerTreeRoot()
    group = root.insertGroup(0, unique_group_name(root, group_name))
    group.setExpanded(True)
    for layer, visible in layers:
        for key, value in (tag or {}).items():
            layer.setCustomProperty(key, value)
        project.addMapLayer(layer, False)
        node = group.addLayer(layer)
        node.setItemVisibilityChecked(visible)
    return group


def _first(files: list, role: str, suffixes: tuple[str, ...] = ()) -> str | None:
    for f in files:
        if f.role == role and (not suffixes or f.path.lower().endswith(suffixes)):
            return f.path
    return None


def localize_layers(outcome, query: str, source: QgsMapLayer | None) -> list[tuple[QgsMapLayer, bool]]:
    """Hot spots, heat map and tile scores of one localized query, as (layer, visible) pairs."""
    files = [f for f in outcome.files() if not f.title or f.title == query] or outcome.files()
    heatmap = _first(files, "heatmap")
    vectors = _first(files, "vectors", (".gpkg",))
    if heatmap is None or vectors is None:
        raise ResultError(f"the worker's result for '{query}' has no heat map or no hot spots")
    layers = [
        (open_vector(vectors, "hotspots", "hot spots", "hotspots", source), True),
        (open_raster(heatmap, "heat map", "heatmap", source), True),
        (open_vector(vectors, "tiles", "tile scores", "tile_scores", source), False),
    ]
    for layer, _visible in layers:
        layer.setCustomProperty(QUERY_PROPERTY, query)
    layers[0][0].setCustomProperty(ROLE_PROPERTY, "hotspots")
    layers[1][0].setCustomProperty(ROLE_PROPERTY, "heatmap")
    layers[2][0].setCustomProperty(ROLE_PROPERTY, "tiles")
    return layers


def caption_layers(outcome, source: QgsMapLayer | None) -> list[tuple[QgsMapLayer, bool]]:
    """The captioned tiles."""
    gpkg = _first(outcome.files(), "tiles", (".gpkg",)) or _first(outcome.files(), "vectors", (".gpkg",))
    if gpkg is None:
        raise ResultError("the worker's captioning result has no GeoPackage of tiles")
    layer = open_vector(gpkg, _layer_names(outcome, gpkg, "captions"), "captions", "captions", source)
    layer.setCustomProperty(ROLE_PROPERTY, "captions")
    return [(layer, True)]


def classify_layers(outcome, source: QgsMapLayer | None) -> list[tuple[QgsMapLayer, bool]]:
    """The class raster (its colour table comes with the file) and the tiles with their top classes."""
    out: list[tuple[QgsMapLayer, bool]] = []
    gpkg = _first(outcome.files(), "tiles", (".gpkg",)) or _first(outcome.files(), "vectors", (".gpkg",))
    if gpkg is not None:
        tiles = open_vector(gpkg, _layer_names(outcome, gpkg, "tiles"), "tile classes", "tile_classes", source)
        tiles.setCustomProperty(ROLE_PROPERTY, "tiles")
        out.append((tiles, True))
    classes = next((f.path for f in outcome.files() if f.path.replace("\\", "/").endswith("/classes.tif")),
                   None) or _first(outcome.files(), "raster", (".tif", ".tiff"))
    if classes is not None:  # its legend (classes.qml beside it) loads as the default style
        raster = open_raster(classes, "classes", None, source)
        raster.setCustomProperty(ROLE_PROPERTY, "classes")
        out.append((raster, True))
    if not out:
        raise ResultError("the worker's classification result has no class raster and no tiles")
    return out


def _layer_names(outcome, gpkg: str, default: str) -> str:
    """The GeoPackage layer the worker named in its result, else ``default``."""
    for f in outcome.files():
        if f.path == gpkg and f.layers:
            return f.layers[0]
    return default
