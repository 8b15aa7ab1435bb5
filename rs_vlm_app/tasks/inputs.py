"""Input checks every task makes, and the one place a task's raster is opened.

A job opens its scene once: JobSpec.check only checks that the file exists (a stat, before any
model loads), JobSpec.run opens the raster (bad contents or bands fail there, still before the
model loads) and hands the open source to the task, which then does not open it again.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from rs_vlm_app.errors import UserError


def check_input_file(path: Path) -> Path:
    """``path`` exists and is a file (or a GDAL virtual path such as /vsicurl/...)."""
    path = Path(path)
    if str(path).startswith("/vsi") or "://" in str(path):
        return path
    if not path.exists():
        raise UserError("file not found", path=path)
    if path.is_dir():
        raise UserError("is a folder; give a raster file", path=path)
    return path


@contextlib.contextmanager
def scene_source(scene, bands: tuple[int, ...] | list[int] | None = None) -> Iterator:
    """An open rs_vlm_app.geo.raster.RasterSource: ``scene`` itself when it is one (left open for its
    owner to close), else the raster file opened here (and closed on exit)."""
    from rs_vlm_app.geo.raster import RasterSource, open_raster

    if isinstance(scene, RasterSource):
        yield scene
        return
    with open_raster(Path(scene), bands=tuple(bands) if bands else None) as source:
        yield source
