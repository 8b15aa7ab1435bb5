"""The desktop app's area of interest: a polygon vector file (and one of its layers) that the next
Ask / Caption tiles / Classify tiles jobs carry as their spec's ``aoi`` until it is cleared."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PyQt6.QtCore import QObject, pyqtSignal
from PyQt6.QtGui import QAction
from PyQt6.QtWidgets import QFileDialog, QInputDialog, QLabel, QWidget

from rs_vlm_app.errors import UserError

VECTOR_FILTER = ("Polygon files (*.gpkg *.shp *.geojson *.json *.fgb *.parquet *.kml *.gml);;All files (*)")


def vector_layers(path: str | Path) -> list[str]:
    """The layer names of a vector file (one clear line for a file OGR cannot read)."""
    import pyogrio

    try:
        return [str(row[0]) for row in pyogrio.list_layers(str(path))]
    except Exception as exc:  # pyogrio raises its own DataSourceError and OSError subclasses
        raise UserError(f"cannot read it as a vector file ({' '.join(str(exc).split())})", path=path) from None


class AreaOfInterest(QObject):
    """The chosen area (``FILE[:LAYER]``), its actions and its status-bar indicator."""

    changed = pyqtSignal(object)  # the aoi text, or None when cleared

    def __init__(self, parent: QWidget, show_message: Callable[[str, str], None]):
        super().__init__(parent)
        self._parent = parent
        self._show = show_message
        self.aoi: str | None = None
        self.choose_action = QAction("Choose &area…", parent)
        self.choose_action.setToolTip("Limit Ask, Caption tiles and Classify tiles to the polygons of a vector "
                                      "file (any CRS): only tiles overlapping them are encoded")
        self.choose_action.triggered.connect(self._dialog)
        self.clear_action = QAction("C&lear area", parent)
        self.clear_action.setToolTip("Work on the whole scene again")
        self.clear_action.triggered.connect(self.clear)
        self.label = QLabel()
        self.label.setToolTip("The area of interest of the next jobs (Area › Clear area to drop it)")
        self._refresh()

    def choose(self, path: str | Path, layer: str | None = None) -> bool:
        """Use the polygons of ``path`` (its ``layer``; the only one when it has one) for the next jobs;
        False, with a message naming the file and the problem, when they cannot serve as an area."""
        from rs_vlm_app.geo.aoi import read_aoi

        text = str(path) if layer is None else f"{path}:{layer}"
        try:
            area = read_aoi(text)
        except UserError as exc:
            self._show(f"Area not changed: {exc}", "error")
            return False
        self.aoi = text
        self._refresh()
        polygons = f"{area.features} polygon{'s' if area.features != 1 else ''}"
        self._show(f"Area of interest: {self.describe()} ({polygons}); Ask, Caption tiles and Classify tiles "
                   "read only the tiles that overlap it until you clear it.", "info")
        self.changed.emit(self.aoi)
        return True

    def clear(self) -> None:
        if self.aoi is None:
            return
        self.aoi = None
        self._refresh()
        self._show("Area of interest cleared: the next jobs work on the whole scene.", "info")
        self.changed.emit(None)

    def describe(self) -> str:
        if self.aoi is None:
            return "whole scene"
        from rs_vlm_app.geo.aoi import split_spec

        path, layer = split_spec(self.aoi)
        return f"{Path(path).name}:{layer}" if layer else Path(path).name

    def _refresh(self) -> None:
        self.label.setText(f"Area: {self.describe()}")
        self.label.setStyleSheet("" if self.aoi is None else "QLabel { font-weight: 600; color: #b35900; }")
        self.clear_action.setEnabled(self.aoi is not None)

    def _dialog(self) -> None:
        path, _filter = QFileDialog.getOpenFileName(self._parent, "Area of interest (polygons)", "", VECTOR_FILTER)
        if not path:
            return
        try:
            layers = vector_layers(path)
        except UserError as exc:
            self._show(f"Area not changed: {exc}", "error")
            return
        layer = None
        if len(layers) > 1:
            layer, ok = QInputDialog.getItem(self._parent, "Area of interest", f"Layer of {Path(path).name}:",
                                             layers, 0, False)
            if not ok:
                return
        self.choose(path, layer)
