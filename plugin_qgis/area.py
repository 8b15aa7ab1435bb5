"""Areas of interest from QGIS vector layers: written to a GeoPackage by QGIS (in the layer's own CRS) and
handed to the worker as a job spec's ``aoi`` field (``FILE[:LAYER]``), which reprojects it to the scene."""

from __future__ import annotations

import uuid
from pathlib import Path

from qgis.core import QgsProject, QgsVectorFileWriter, QgsVectorLayer, QgsWkbTypes

#: the layer name inside the written GeoPackage
AREA_LAYER = "area"


class AreaError(Exception):
    """A layer that cannot serve as an area of interest; the message names the layer and the problem."""


def is_polygon_layer(layer) -> bool:
    """A valid vector layer of polygons (an area can only be polygons)."""
    return (isinstance(layer, QgsVectorLayer) and layer.isValid()
            and layer.geometryType() == QgsWkbTypes.GeometryType.PolygonGeometry)


def polygon_layers(project: QgsProject | None = None) -> list[QgsVectorLayer]:
    """The project's polygon layers, in the layer tree's order of names."""
    project = project or QgsProject.instance()
    return sorted((layer for layer in project.mapLayers().values() if is_polygon_layer(layer)),
                  key=lambda layer: layer.name().lower())


def write_area(layer: QgsVectorLayer, folder: str | Path, selected_only: bool = False) -> str:
    """Write the polygons of ``layer`` (only its selected features when ``selected_only``) to a new
    GeoPackage in ``folder``, in the layer's CRS; the ``FILE:LAYER`` text for a spec's ``aoi``."""
    if not is_polygon_layer(layer):
        raise AreaError(f"area {getattr(layer, 'name', lambda: '?')()!r}: not a polygon layer")
    if selected_only and layer.selectedFeatureCount() == 0:
        raise AreaError(f"area {layer.name()!r}: no features are selected; select the polygons of the area "
                        "or use the whole layer")
    if not selected_only and layer.featureCount() == 0:
        raise AreaError(f"area {layer.name()!r}: the layer has no polygons")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"area-{uuid.uuid4().hex[:8]}.gpkg"
    options = QgsVectorFileWriter.SaveVectorOptions()
    options.driverName = "GPKG"
    options.layerName = AREA_LAYER
    options.onlySelectedFeatures = selected_only
    outcome = QgsVectorFileWriter.writeAsVectorFormatV3(layer, str(target), QgsProject.instance().transformContext(),
                                                        options)
    error, message = outcome[0], outcome[1]
    if error != QgsVectorFileWriter.WriterError.NoError or not target.is_file():
        raise AreaError(f"area {layer.name()!r}: cannot write it to {target} ({message or error})")
    return f"{target}:{AREA_LAYER}"


def source_spec(path: str, layer_name: str) -> str:
    """The ``aoi`` text of a vector file and (optionally) one of its layers, as Processing gives them."""
    return f"{path}:{layer_name}" if layer_name else path
