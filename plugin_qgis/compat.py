"""Names that moved between QGIS 3.x releases and QGIS 4 (Qt6), resolved once at import time.

QGIS 3.36+ moved many enums into ``Qgis`` (``Qgis.ProcessingSourceType.Raster`` instead of
``QgsProcessing.SourceType.TypeRaster``); QGIS 4 drops the old spellings and Qt6 drops unscoped
enum access. ``enum("new.spelling", "old.spelling")`` returns the first that exists, always fully
scoped, so the same code runs on QGIS 3.22 (Qt5) and QGIS 4 (Qt6).
"""

from __future__ import annotations

from functools import cache

from qgis import core, gui
from qgis.PyQt import QtCore, QtGui, QtWidgets

_MODULES = (core, gui, QtCore, QtGui, QtWidgets)


@cache
def enum(*paths: str):
    """The value at the first dotted path that exists, e.g. ``enum("Qgis.LayerType.Raster",
    "QgsMapLayerType.RasterLayer")``; AttributeError naming them all when none does."""
    for path in paths:
        head, *rest = path.split(".")
        for module in _MODULES:
            value = getattr(module, head, None)
            if value is None:
                continue
            try:
                for name in rest:
                    value = getattr(value, name)
            except AttributeError:
                break
            return value
    raise AttributeError(f"none of {', '.join(paths)} exists in this QGIS")
