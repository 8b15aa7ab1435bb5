"""rs-vlm for QGIS: ask remote-sensing imagery questions in plain language.

Runs inside QGIS's own Python and imports only qgis.*, qgis.PyQt, the standard library and the
worker protocol and client (jobproto.py). All model work happens in the rs-vlm worker, a separate process in
the app's own environment: torch, open_clip and rasterio are never imported here.
"""

from __future__ import annotations

import sys


def classFactory(iface):  # noqa: N802 - the name QGIS looks for
    if sys.version_info < (3, 10):  # noqa: UP036 - older QGIS builds do load plugins
        return _TooOldPython(iface)
    from .plugin import RsVlmPlugin

    return RsVlmPlugin(iface)


class _TooOldPython:
    """Stands in for the plugin on a QGIS whose Python is older than 3.10: says so, does nothing."""

    def __init__(self, iface):
        self.iface = iface

    def initGui(self):  # noqa: N802
        version = ".".join(map(str, sys.version_info[:3]))
        self.iface.messageBar().pushCritical(
            "rs-vlm", f"this QGIS runs Python {version}; the rs-vlm plugin needs Python 3.10 or newer (QGIS 3.28+)")

    def initProcessing(self):  # noqa: N802
        pass

    def unload(self):
        pass
