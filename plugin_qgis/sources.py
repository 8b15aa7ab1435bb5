"""Which file the worker reads for a raster layer, and windows of it (the visible map extent).

The worker reads rasters with its own GDAL, so a layer must be backed by something GDAL can open
by name: a file (GeoTIFF, COG, VRT, JPEG2000, ...) or a /vsi path. Web services (WMS/WMTS/XYZ),
virtual and in-memory layers are refused with a message that says what to do instead.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from pathlib import Path

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsMapLayer,
    QgsProject,
    QgsProviderRegistry,
    QgsRasterLayer,
    QgsRectangle,
)

from .compat import enum

#: GDAL data type names of QGIS's raster data types (the names are the same in both)
_GDAL_TYPES = ("Byte", "Int8", "UInt16", "Int16", "UInt32", "Int32", "Float32", "Float64")


class SourceError(Exception):
    """A layer the worker cannot read; ``str()`` is one line naming the layer and what to do."""


def raster_path(layer: QgsMapLayer | None) -> str:
    """The GDAL dataset name (a file path or /vsi path) behind ``layer``."""
    if layer is None:
        raise SourceError("choose a raster layer first")
    name = layer.name()
    if not isinstance(layer, QgsRasterLayer):
        raise SourceError(f"layer '{name}' is not a raster layer; rs-vlm works on raster imagery")
    provider = layer.providerType()
    if provider != "gdal":
        kind = {"wms": "a web map service (WMS/WMTS/XYZ)", "wcs": "a web coverage service (WCS)",
                "virtualraster": "a virtual (computed) raster", "arcgismapserver": "an ArcGIS map service",
                "postgresraster": "a PostGIS raster table"}.get(provider, f"the '{provider}' data provider")
        raise SourceError(
            f"layer '{name}' comes from {kind}, not from a file the rs-vlm worker can read: save it as a "
            "GeoTIFF (right-click the layer > Export > Save As...) and run on the saved layer"
        )
    uri = layer.source()
    parts = QgsProviderRegistry.instance().decodeUri("gdal", uri)
    path = str(parts.get("path") or uri)
    if path.startswith("/vsi"):
        return path
    if not Path(path).is_file():
        raise SourceError(f"layer '{name}': its file {path} does not exist (moved or deleted?)")
    if not layer.isValid():
        raise SourceError(f"layer '{name}': QGIS cannot read {path}")
    return path


def layer_crs_extent(layer: QgsRasterLayer, extent: QgsRectangle, extent_crs: QgsCoordinateReferenceSystem) -> QgsRectangle:
    """``extent`` (in ``extent_crs``, e.g. the map canvas's) as a rectangle in the layer's CRS."""
    if extent_crs.isValid() and layer.crs().isValid() and extent_crs != layer.crs():
        transform = QgsCoordinateTransform(extent_crs, layer.crs(), QgsProject.instance())
        extent = transform.transformBoundingBox(extent)
    return extent


def pixel_window(layer: QgsRasterLayer, extent: QgsRectangle) -> tuple[int, int, int, int]:
    """(col0, row0, cols, rows) of the layer's pixels covering ``extent`` (layer CRS), clipped to the
    raster; SourceError when they do not overlap."""
    full = layer.extent()
    width, height = layer.width(), layer.height()
    px, py = full.width() / width, full.height() / height
    col0 = max(0, math.floor((extent.xMinimum() - full.xMinimum()) / px + 1e-9))
    col1 = min(width, math.ceil((extent.xMaximum() - full.xMinimum()) / px - 1e-9))
    row0 = max(0, math.floor((full.yMaximum() - extent.yMaximum()) / py + 1e-9))
    row1 = min(height, math.ceil((full.yMaximum() - extent.yMinimum()) / py - 1e-9))
    if col1 <= col0 or row1 <= row0:
        raise SourceError(f"layer '{layer.name()}' is not in the visible map extent; pan or zoom to it first")
    return col0, row0, col1 - col0, row1 - row0


def write_window_vrt(layer: QgsRasterLayer, extent: QgsRectangle, target: Path) -> Path:
    """A GDAL VRT of the part of ``layer`` inside ``extent`` (layer CRS): no pixels are copied, the
    worker reads the window straight from the layer's file. Returns ``target``."""
    source = raster_path(layer)
    col0, row0, cols, rows = pixel_window(layer, extent)
    full = layer.extent()
    px, py = full.width() / layer.width(), full.height() / layer.height()
    provider = layer.dataProvider()
    root = ET.Element("VRTDataset", rasterXSize=str(cols), rasterYSize=str(rows))
    if layer.crs().isValid():
        ET.SubElement(root, "SRS").text = _wkt(layer.crs())
    origin_x = full.xMinimum() + col0 * px
    origin_y = full.yMaximum() - row0 * py
    ET.SubElement(root, "GeoTransform").text = ", ".join(
        repr(float(v)) for v in (origin_x, px, 0.0, origin_y, 0.0, -py))
    for band in range(1, layer.bandCount() + 1):
        element = ET.SubElement(root, "VRTRasterBand", dataType=_gdal_type(provider.dataType(band)), band=str(band))
        if provider.sourceHasNoDataValue(band):
            ET.SubElement(element, "NoDataValue").text = repr(float(provider.sourceNoDataValue(band)))
        simple = ET.SubElement(element, "SimpleSource")
        ET.SubElement(simple, "SourceFilename", relativeToVRT="0").text = source
        ET.SubElement(simple, "SourceBand").text = str(band)
        ET.SubElement(simple, "SrcRect", xOff=str(col0), yOff=str(row0), xSize=str(cols), ySize=str(rows))
        ET.SubElement(simple, "DstRect", xOff="0", yOff="0", xSize=str(cols), ySize=str(rows))
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    ET.ElementTree(root).write(tmp, encoding="utf-8", xml_declaration=False)
    tmp.replace(target)
    return target


def _gdal_type(data_type) -> str:
    for name in _GDAL_TYPES:
        value = getattr(type(data_type), name, None)
        if value is not None and value == data_type:
            return name
    raise SourceError(f"raster data type {data_type!r} cannot be read by the rs-vlm worker; "
                      "convert the layer to 8- or 16-bit integers or floats first")


def _wkt(crs: QgsCoordinateReferenceSystem) -> str:
    variant = enum("Qgis.CrsWktVariant.PreferredGdal", "QgsCoordinateReferenceSystem.WktVariant.WKT_PREFERRED_GDAL")
    return crs.toWkt(variant)
