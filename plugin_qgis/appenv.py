"""The command line and the environment of the worker process the plugin starts.

QGIS runs with its own PYTHONPATH, PYTHONHOME, GDAL/PROJ data paths, library paths and Qt plugin
paths. Handed to the app's Python, they would make it import QGIS's packages or load QGIS's older
GDAL; so the worker gets the user's environment without them.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

from .jobproto import client

#: variables removed from the worker's environment, by exact name
STRIPPED_NAMES = frozenset({
    "PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONEXECUTABLE", "PYTHONUSERBASE", "PYTHONSAFEPATH",
    "LD_LIBRARY_PATH", "LD_PRELOAD", "DYLD_LIBRARY_PATH", "DYLD_FALLBACK_LIBRARY_PATH",
    "DYLD_FRAMEWORK_PATH", "DYLD_INSERT_LIBRARIES",
    "QT_PLUGIN_PATH", "QT_QPA_PLATFORM_PLUGIN_PATH", "QML2_IMPORT_PATH", "QML_IMPORT_PATH",
    "VIRTUAL_ENV", "CONDA_PREFIX", "__PYVENV_LAUNCHER__",
})
#: variables removed from the worker's environment, by prefix (GDAL, PROJ and QGIS configuration)
STRIPPED_PREFIXES = ("GDAL_", "PROJ_", "CPL_", "OGR_", "QGIS_", "PYQGIS_", "OSGEO4W_")


def worker_environment(
    base: Mapping[str, str] | None = None,
    pythonpath: str = "",
    qgis_prefix: str = "",
    platform: str = sys.platform,
) -> dict[str, str]:
    """``base`` (default: this process's environment) cleaned of QGIS's Python, GDAL, PROJ, library
    and Qt variables, plus ``pythonpath`` (an rs-vlm source checkout, when the app is not installed
    into its interpreter). On Windows, PATH entries inside QGIS's install folder are dropped too
    (they hold QGIS's own python3.dll, GDAL and PROJ DLLs)."""
    base = dict(os.environ if base is None else base)
    env = {k: v for k, v in base.items() if k not in STRIPPED_NAMES and not k.startswith(STRIPPED_PREFIXES)}
    if platform.startswith("win") and qgis_prefix:
        path_key = next((k for k in env if k.upper() == "PATH"), "PATH")
        prefix = os.path.normcase(os.path.normpath(qgis_prefix))
        kept = [p for p in env.get(path_key, "").split(";")
                if p and not os.path.normcase(os.path.normpath(p)).startswith(prefix)]
        env[path_key] = ";".join(kept)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONIOENCODING"] = "utf-8"
    return env


def worker_command(python: str, serve: bool) -> list[str]:
    """argv of a worker: one job read from stdin, or the persistent ``--serve`` mode."""
    return [python, *client.worker_args(serve)]
