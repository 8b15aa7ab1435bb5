"""The worker protocol and client (rs_vlm_app/jobs/protocol.py and client.py, standard library only)
as the plugin sees them.

A packaged plugin carries copies of those files as ``protocol.py`` and ``client.py`` beside this
module (`rsvlm qgis package` and `rsvlm qgis install` copy them at build time, so the zip is
self-contained). A plugin run straight from a source checkout (tests, `rsvlm qgis install --link`)
loads the checkout's ``rs_vlm_app/jobs/<name>.py`` by path instead. Nothing else of rs_vlm_app is
ever imported here: the rest of the app needs torch and rasterio, which must never load inside QGIS.

This is the only module of the plugin that knows where the protocol and the client come from;
everything else imports ``protocol`` and ``client`` from here.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

#: the app's standard-library modules the plugin carries (client imports protocol: load it first)
SHIPPED_MODULES = ("protocol", "client")


def _source_checkout(name: str) -> Path:
    return Path(__file__).resolve().parent.parent / "rs_vlm_app" / "jobs" / f"{name}.py"


def _load(name: str):
    packaged = Path(__file__).resolve().parent / f"{name}.py"
    if packaged.is_file():  # the copy a built plugin carries
        return importlib.import_module(f"{__package__}.{name}")
    source = _source_checkout(name)
    if not source.is_file():
        raise ImportError(
            f"the rs-vlm plugin is incomplete: neither {packaged} nor {source} exists; reinstall it with "
            "`rsvlm qgis install`"
        )
    full_name = f"{__package__}.{name}"
    spec = importlib.util.spec_from_file_location(full_name, source)
    module = importlib.util.module_from_spec(spec)
    sys.modules[full_name] = module  # dataclasses look their module up while the file executes
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(full_name, None)
        raise
    return module


protocol = _load("protocol")
client = _load("client")

#: events that end a job: exactly one of them closes every job
FINAL_EVENTS = tuple(protocol.FINAL_EVENTS)
