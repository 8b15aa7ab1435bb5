"""The worker protocol (rs_vlm_app/jobs/protocol.py, standard library only) as the plugin sees it.

A packaged plugin carries a copy of that file as ``protocol.py`` beside this module (`rsvlm qgis
package` and `rsvlm qgis install` copy it at build time, so the zip is self-contained). A plugin run
straight from a source checkout (tests, `rsvlm qgis install --link`) loads the checkout's
``rs_vlm_app/jobs/protocol.py`` by path instead. Nothing else of rs_vlm_app is ever imported here:
the rest of the app needs torch and rasterio, which must never load inside QGIS.

This is the only module of the plugin that knows where the protocol comes from; everything else
imports ``protocol`` from here.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path


def _source_checkout_protocol() -> Path:
    return Path(__file__).resolve().parent.parent / "rs_vlm_app" / "jobs" / "protocol.py"


def _load():
    try:
        from . import protocol as packaged  # the copy a built plugin carries
    except ImportError:
        pass
    else:
        return packaged
    source = _source_checkout_protocol()
    if not source.is_file():
        raise ImportError(
            f"the rs-vlm plugin is incomplete: neither {Path(__file__).parent / 'protocol.py'} nor {source} "
            "exists; reinstall it with `rsvlm qgis install`"
        )
    name = f"{__package__}.protocol"
    spec = importlib.util.spec_from_file_location(name, source)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the file executes
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


protocol = _load()

#: events that end a job: exactly one of them closes every job
FINAL_EVENTS = tuple(protocol.FINAL_EVENTS)
