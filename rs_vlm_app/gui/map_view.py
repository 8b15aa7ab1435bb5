"""The map: a scene drawn from screen-resolution tiles, overlays on top, pan and zoom.

Scene coordinates of the QGraphicsScene are the scene raster's pixel coordinates (x = column,
y = row); :class:`Frame` converts between them and map coordinates (the raster's CRS).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from affine import Affine
from PyQt6.QtCore import QPointF, QRectF, Qt, QTimer, pyqtSignal
from PyQt6.QtGui import QBrush, QColor, QPainter, QPixmap, QTransform
from PyQt6.QtWidgets import QGraphicsPixmapItem, QGraphicsScene, QGraphicsView

from rs_vlm_app.gui.tiles import TileKey, TileReader, level_for_scale, overview_level, tile_window, tiles_in

#: Tiles kept in memory (about 256 KiB each); the overview level is never evicted.
TILE_CACHE = 400
Z_SCENE, Z_HEATMAP, Z_VECTORS, Z_HIGHLIGHT = 0, 10, 20, 30


@dataclass
class Frame:
    """The scene raster's georeferencing: pixel (col, row) <-> map (x, y) in ``crs``."""

    transform: Affine
    crs: object  # rasterio CRS or None
    width: int
    height: int
    georeferenced: bool = True

    def to_map(self, col: float, row: float) -> tuple[float, float]:
        return self.transform @ (col, row)

    def qtransform_from(self, transform: Affine) -> QTransform:
        """Qt transform taking pixels of a raster with ``transform`` (same CRS) to scene pixels."""
        m = ~self.transform @ transform
        return QTransform(m.a, m.d, m.b, m.e, m.c, m.f)

    def crs_text(self) -> str:
        if self.crs is None:
            return "pixel coordinates (no georeferencing)"
        epsg = self.crs.to_epsg() if hasattr(self.crs, "to_epsg") else None
        return f"EPSG:{epsg}" if epsg else str(self.crs)[:40]


class MapView(QGraphicsView):
    """Pan (drag), zoom (wheel, +/-), tiles of the scene read for what is visible."""

    mouse_moved = pyqtSignal(float, float)     # scene pixel coordinates
    clicked = pyqtSignal(float, float)
    read_failed = pyqtSignal(str)
    files_dropped = pyqtSignal(list)           # local paths dropped on the map

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setScene(QGraphicsScene(self))
        self.setBackgroundBrush(QBrush(QColor("#2b2d31")))
        self.setRenderHints(QPainter.RenderHint.Antialiasing | QPainter.RenderHint.SmoothPixmapTransform)
        self.setDragMode(QGraphicsView.DragMode.ScrollHandDrag)
        self.setTransformationAnchor(QGraphicsView.ViewportAnchor.AnchorUnderMouse)
        self.setResizeAnchor(QGraphicsView.ViewportAnchor.AnchorViewCenter)
        self.setViewportUpdateMode(QGraphicsView.ViewportUpdateMode.SmartViewportUpdate)
        self.setMouseTracking(True)
        self.setAcceptDrops(True)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setFrameShape(QGraphicsView.Shape.NoFrame)
        self._fitted = False  # showing the whole scene: stay so when the window is resized
        self.frame: Frame | None = None
        self.path: Path | None = None
        self.reader: TileReader | None = None
        self._tiles: OrderedDict[TileKey, QGraphicsPixmapItem] = OrderedDict()
        self._overview = 0
        self._press: QPointF | None = None
        self._refresh = QTimer(self)
        self._refresh.setSingleShot(True)
        self._refresh.setInterval(40)
        self._refresh.timeout.connect(self._request_tiles)
        self.tiles_read = 0  # tiles received from the reader (the tests count them)

    # -- the scene raster -----------------------------------------------------------------------------

    def open_scene(self, path: Path, bands: tuple[int, ...] | None = None) -> Frame:
        """Show ``path``; raises rs_vlm_app.errors.UserError when it is not a raster we can read."""
        reader = TileReader(path, bands)
        self.close_scene()
        self.reader = reader
        self.path = Path(path)
        source = reader.source
        self.frame = Frame(source.transform, source.crs, source.width, source.height,
                           getattr(source, "georeferenced", source.crs is not None))
        reader.tile_ready.connect(self._on_tile)
        reader.failed.connect(self.read_failed)
        self._overview = overview_level(source.width, source.height)
        margin = max(source.width, source.height) * 0.5
        self.scene().setSceneRect(QRectF(-margin, -margin, source.width + 2 * margin, source.height + 2 * margin))
        self.zoom_full()
        return self.frame

    def close_scene(self) -> None:
        if self.reader is not None:
            self.reader.tile_ready.disconnect(self._on_tile)
            self.reader.close()
            self.reader = None
        for item in self._tiles.values():
            self.scene().removeItem(item)
        self._tiles.clear()
        self.frame = None
        self.path = None

    def scene_rect(self) -> QRectF:
        if self.frame is None:
            return QRectF()
        return QRectF(0, 0, self.frame.width, self.frame.height)

    # -- zoom ---------------------------------------------------------------------------------------------

    def zoom_full(self) -> None:
        if self.frame is not None:
            self.fitInView(self.scene_rect(), Qt.AspectRatioMode.KeepAspectRatio)
            self._fitted = True
            self._changed()

    def zoom_to(self, rect: QRectF) -> None:
        if rect.isValid():
            self.fitInView(rect, Qt.AspectRatioMode.KeepAspectRatio)
            self._fitted = False
            self._changed()

    def zoom_by(self, factor: float) -> None:
        scale = self.scale_factor() * factor
        if 1e-4 <= scale <= 64:
            self.scale(factor, factor)
            self._fitted = False
            self._changed()

    def scale_factor(self) -> float:
        """Screen pixels per scene pixel."""
        return math.hypot(self.transform().m11(), self.transform().m12())

    def visible_rect(self) -> QRectF:
        return self.mapToScene(self.viewport().rect()).boundingRect()

    def wheelEvent(self, event) -> None:
        steps = event.angleDelta().y() / 120.0
        if steps:
            self.zoom_by(1.25 ** steps)

    def keyPressEvent(self, event) -> None:
        if event.key() in (Qt.Key.Key_Plus, Qt.Key.Key_Equal):
            self.zoom_by(1.25)
        elif event.key() == Qt.Key.Key_Minus:
            self.zoom_by(0.8)
        else:
            super().keyPressEvent(event)

    def scrollContentsBy(self, dx: int, dy: int) -> None:
        super().scrollContentsBy(dx, dy)
        self._changed()

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        if self._fitted and self.frame is not None:
            self.fitInView(self.scene_rect(), Qt.AspectRatioMode.KeepAspectRatio)
        self._changed()

    # -- mouse -------------------------------------------------------------------------------------------

    def mouseMoveEvent(self, event) -> None:
        super().mouseMoveEvent(event)
        point = self.mapToScene(event.position().toPoint())
        self.mouse_moved.emit(point.x(), point.y())

    def mousePressEvent(self, event) -> None:
        self._press = event.position()
        super().mousePressEvent(event)

    def mouseDoubleClickEvent(self, event) -> None:
        self.centerOn(self.mapToScene(event.position().toPoint()))
        self.zoom_by(2.0)

    def mouseReleaseEvent(self, event) -> None:
        super().mouseReleaseEvent(event)
        if self._press is not None and (event.position() - self._press).manhattanLength() < 4:
            point = self.mapToScene(event.position().toPoint())
            self.clicked.emit(point.x(), point.y())
        elif self._press is not None:
            self._fitted = False  # the user panned
        self._press = None

    def dragEnterEvent(self, event) -> None:
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dragMoveEvent(self, event) -> None:
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:
        paths = [u.toLocalFile() for u in event.mimeData().urls() if u.isLocalFile()]
        if paths:
            event.acceptProposedAction()
            self.files_dropped.emit(paths)

    # -- tiles ---------------------------------------------------------------------------------------------

    def _changed(self) -> None:
        if self.reader is not None:
            self._refresh.start()

    def wanted_tiles(self) -> list[TileKey]:
        """Tiles for the current view: the visible ones at screen resolution, then the overview."""
        if self.frame is None:
            return []
        w, h = self.frame.width, self.frame.height
        rect = self.visible_rect()
        level = level_for_scale(self.scale_factor(), w, h)
        keys = tiles_in(rect.left(), rect.top(), rect.right(), rect.bottom(), level, w, h)
        if level != self._overview:
            keys += tiles_in(0, 0, w, h, self._overview, w, h)
        for key in keys:
            if key in self._tiles:
                self._tiles.move_to_end(key)  # in view: least recently used goes first
        return [k for k in keys if k not in self._tiles]

    def _request_tiles(self) -> None:
        if self.reader is not None:
            self.reader.request(self.wanted_tiles())

    def _on_tile(self, key: TileKey, image) -> None:
        if self.reader is None or self.sender() is not self.reader or key in self._tiles:
            return
        self.tiles_read += 1
        win = tile_window(key, self.frame.width, self.frame.height)
        item = QGraphicsPixmapItem(QPixmap.fromImage(image))
        item.setTransform(QTransform.fromScale((win.col1 - win.col0) / win.out_w, (win.row1 - win.row0) / win.out_h))
        item.setPos(win.col0, win.row0)
        item.setZValue(Z_SCENE + (self._overview - key.level) * 0.01)  # finer levels above coarser
        item.setTransformationMode(Qt.TransformationMode.FastTransformation if key.level == 0
                                   else Qt.TransformationMode.SmoothTransformation)
        item.setShapeMode(QGraphicsPixmapItem.ShapeMode.BoundingRectShape)
        item.setAcceptedMouseButtons(Qt.MouseButton.NoButton)
        self.scene().addItem(item)
        self._tiles[key] = item
        self._evict()

    def _evict(self) -> None:
        while len(self._tiles) > TILE_CACHE:
            for key in self._tiles:
                if key.level != self._overview:
                    self.scene().removeItem(self._tiles.pop(key))
                    break
            else:
                return

    def drawForeground(self, painter: QPainter, rect: QRectF) -> None:
        super().drawForeground(painter, rect)
        if self.frame is not None:
            return
        painter.save()
        painter.resetTransform()
        painter.setPen(QColor("#b8bcc4"))
        font = painter.font()
        font.setPointSize(14)
        painter.setFont(font)
        painter.drawText(QRectF(self.viewport().rect()), Qt.AlignmentFlag.AlignCenter,
                         "Open a scene (Ctrl+O) or drop a raster here\n\n"
                         "then ask it a question in the box above")
        painter.restore()

    def loaded_tiles(self) -> list[TileKey]:
        return list(self._tiles)
