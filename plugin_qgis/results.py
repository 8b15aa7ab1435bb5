"""Turning a finished job's files into QGIS layers: styled, in the source layer's CRS, grouped.

The worker writes every result as a file (GeoTIFF heat maps and class rasters, GeoPackage layers).
Which files become which layers (names, styles, visibility, grouping) is the shared client's layer
plan (rs_vlm_app/jobs/client.py, the same the desktop app follows); this module opens the planned
layers with QGIS, applies the shipped .qml styles and puts them in a layer-tree group named after the
query (or the task), above everything else.
"""

from __future__ import annotations

from qgis.core import (
    QgsLayerTreeGroup,
    QgsMapLayer,
    QgsProject,
    QgsRasterLayer,
    QgsVectorLayer,
)

from .jobproto import client
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


def open_planned(planned, source: QgsMapLayer | None) -> QgsMapLayer:
    """Open one layer of the client's layer plan (client.PlannedLayer), styled and tagged with its role."""
    if planned.source == "raster":
        layer = open_raster(planned.path, planned.name, planned.style or None, source)
    else:
        layer = open_vector(planned.path, planned.sublayer, planned.name, planned.style or None, source)
    layer.setCustomProperty(ROLE_PROPERTY, planned.role)
    if planned.query:
        layer.setCustomProperty(QUERY_PROPERTY, planned.query)
    return layer


def plan_layers(outcome, title: str = "") -> list:
    """The client's layer plan of a finished job (client.LayerGroupPlan list)."""
    return client.result_layer_plan(outcome, title)


def result_layers(outcome, source: QgsMapLayer | None, title: str = "",
                  group: str | None = None) -> list[tuple[QgsMapLayer, bool]]:
    """The layers of a finished job as (layer, visible) pairs, top first: those of the plan's group
    ``group`` (localize: the query), else of its first group."""
    plan = plan_layers(outcome, title)
    chosen = next((g for g in plan if group is not None and g.name == group), plan[0] if plan else None)
    if chosen is None or not chosen.layers:
        raise ResultError(f"the worker's {outcome.kind or 'job'} result has no layer to show")
    return [(open_planned(planned, source), planned.visible) for planned in chosen.layers]
