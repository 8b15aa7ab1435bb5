"""Side panels of the main window: message bar, layer list with opacity and legend, identify."""

from __future__ import annotations

import html
import shutil
from pathlib import Path
from typing import Any

from PyQt6.QtCore import QRectF, Qt, QTimer, pyqtSignal
from PyQt6.QtGui import QBrush, QColor, QIcon, QLinearGradient, QPainter, QPen, QPixmap
from PyQt6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSizePolicy,
    QSlider,
    QTextBrowser,
    QToolButton,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from rs_vlm_app.errors import UserError
from rs_vlm_app.gui.layers import HeatmapLayer, Layer, VectorLayer, heat_ramp

LEVEL_STYLE = {
    "info": ("#e8f1fb", "#1d4f91", "ℹ"),
    "success": ("#e8f6ec", "#1f6b35", "✓"),
    "warning": ("#fff6e0", "#7a5200", "⚠"),
    "error": ("#fdecec", "#9b1c1c", "✖"),
}


class MessageBar(QFrame):
    """A dismissible one-line message above the map (never a modal dialog: work goes on)."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.history: list[tuple[str, str]] = []
        self.setObjectName("messageBar")
        layout = QHBoxLayout(self)
        layout.setContentsMargins(10, 6, 6, 6)
        self.icon = QLabel()
        self.text = QLabel()
        self.text.setWordWrap(True)
        self.text.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.text.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        close = QToolButton()
        close.setText("✕")
        close.setAutoRaise(True)
        close.clicked.connect(self.hide)
        layout.addWidget(self.icon)
        layout.addWidget(self.text, 1)
        layout.addWidget(close)
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self.hide)
        self.hide()

    def show_message(self, text: str, level: str = "info", timeout_ms: int | None = None) -> None:
        background, colour, icon = LEVEL_STYLE.get(level, LEVEL_STYLE["info"])
        self.history.append((level, text))
        self.setStyleSheet(f"#messageBar {{ background: {background}; border: 1px solid {colour}; "
                           f"border-radius: 4px; }} QLabel {{ color: {colour}; }}")
        self.icon.setText(icon)
        self.text.setText(text)
        self.show()
        if timeout_ms is None:
            timeout_ms = 0 if level in ("error", "warning") else 8000
        if timeout_ms:
            self._timer.start(timeout_ms)
        else:
            self._timer.stop()

    def last(self) -> tuple[str, str] | None:
        return self.history[-1] if self.history else None


class LegendWidget(QWidget):
    """Colour bar of the heat-map ramp (over a checkerboard: low values are see-through)."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setMinimumHeight(46)
        self.cosine_range: tuple[float, float] | None = None
        self.title = ""

    def set_layer(self, layer: HeatmapLayer | None) -> None:
        self.cosine_range = layer.cosine_range if layer is not None else None
        self.title = layer.query if layer is not None else ""
        self.update()

    def paintEvent(self, event) -> None:
        painter = QPainter(self)
        rect = QRectF(self.rect()).adjusted(4, 4, -4, -22)
        cell = 6
        for i in range(int(rect.width() // cell) + 1):
            for j in range(int(rect.height() // cell) + 1):
                colour = QColor("#d9d9d9") if (i + j) % 2 else QColor("#ffffff")
                painter.fillRect(QRectF(rect.left() + i * cell, rect.top() + j * cell, cell, cell).intersected(rect),
                                 colour)
        gradient = QLinearGradient(rect.topLeft(), rect.topRight())
        lut = heat_ramp()
        for k in range(0, 256, 16):
            r, g, b, a = (int(v) for v in lut[k])
            gradient.setColorAt(k / 255, QColor(r, g, b, max(a, 40)))
        r, g, b, a = (int(v) for v in lut[255])
        gradient.setColorAt(1.0, QColor(r, g, b, a))
        painter.fillRect(rect, QBrush(gradient))
        painter.setPen(QPen(QColor("#888888")))
        painter.drawRect(rect)
        painter.setPen(self.palette().text().color())
        low, high = "low", "high"
        if self.cosine_range is not None:
            low, high = f"low ({self.cosine_range[0]:.3f})", f"high ({self.cosine_range[1]:.3f})"
        text_rect = QRectF(rect.left(), rect.bottom() + 2, rect.width(), 18)
        painter.drawText(text_rect, Qt.AlignmentFlag.AlignLeft, low)
        painter.drawText(text_rect, Qt.AlignmentFlag.AlignRight, high)
        painter.drawText(text_rect, Qt.AlignmentFlag.AlignHCenter, "similarity")
        painter.end()


class LayerPanel(QWidget):
    """Queries answered so far, each with its heat map, hot spots and tiles: toggle, opacity,
    remove, export. The scene is the bottom entry."""

    layers_changed = pyqtSignal()
    zoom_requested = pyqtSignal(object)   # QRectF in scene pixels
    export_requested = pyqtSignal(str)    # group name
    problem = pyqtSignal(str)             # a layer could not be shown (its file is gone, ...)

    def __init__(self, scene, parent=None):
        super().__init__(parent)
        self.scene = scene
        self.layers: list[Layer] = []
        self._items: dict[int, QTreeWidgetItem] = {}
        self._groups: dict[str, QTreeWidgetItem] = {}
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        self.tree = QTreeWidget()
        self.tree.setHeaderHidden(True)
        self.tree.setRootIsDecorated(True)
        self.tree.itemChanged.connect(self._item_changed)
        self.tree.currentItemChanged.connect(lambda *_: self._selection_changed())
        self.tree.itemDoubleClicked.connect(lambda item, _col: self._zoom_item(item))
        layout.addWidget(self.tree, 1)
        opacity_row = QHBoxLayout()
        opacity_row.addWidget(QLabel("Opacity"))
        self.opacity = QSlider(Qt.Orientation.Horizontal)
        self.opacity.setRange(0, 100)
        self.opacity.setValue(75)
        self.opacity.valueChanged.connect(self._opacity_changed)
        opacity_row.addWidget(self.opacity, 1)
        self.opacity_label = QLabel("75%")
        self.opacity_label.setMinimumWidth(34)
        opacity_row.addWidget(self.opacity_label)
        layout.addLayout(opacity_row)
        self.legend = LegendWidget()
        layout.addWidget(self.legend)
        buttons = QHBoxLayout()
        self.zoom_button = QPushButton("Zoom to")
        self.zoom_button.clicked.connect(lambda: self._zoom_item(self.tree.currentItem()))
        self.remove_button = QPushButton("Remove")
        self.remove_button.clicked.connect(self.remove_selected)
        self.export_button = QPushButton("Export…")
        self.export_button.clicked.connect(self._export_clicked)
        for button in (self.zoom_button, self.remove_button, self.export_button):
            buttons.addWidget(button)
        layout.addLayout(buttons)
        self.scene_item = QTreeWidgetItem(["(no scene)"])
        self.scene_item.setFlags(Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable)
        self.tree.addTopLevelItem(self.scene_item)
        self._selection_changed()

    # -- contents -----------------------------------------------------------------------------------

    def set_scene_name(self, name: str) -> None:
        self.scene_item.setText(0, name)
        self.scene_item.setToolTip(0, "the scene (double-click: zoom to it)")

    def add_layer(self, layer: Layer, visible: bool = True) -> None:
        """Add ``layer`` under its group (a query); a layer from the same file replaces the old one."""
        for old in [x for x in self.layers if x.path == layer.path and x.kind == layer.kind
                    and getattr(x, "layer", None) == getattr(layer, "layer", None)]:
            self.remove_layer(old)
        layer.visible = visible
        if isinstance(layer, HeatmapLayer):
            layer.opacity = self.opacity.value() / 100
        layer.add_to(self.scene)
        self.layers.append(layer)
        group = self._groups.get(layer.group)
        self.tree.blockSignals(True)
        if group is None:
            group = QTreeWidgetItem([layer.group])
            group.setFlags(group.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            group.setCheckState(0, Qt.CheckState.Checked)
            group.setToolTip(0, layer.group)
            self.tree.insertTopLevelItem(0, group)
            self._groups[layer.group] = group
        elif visible:
            group.setCheckState(0, Qt.CheckState.Checked)  # a new visible answer shows its group
        item = QTreeWidgetItem([self._label(layer)])
        item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
        item.setCheckState(0, Qt.CheckState.Checked if visible else Qt.CheckState.Unchecked)
        item.setToolTip(0, str(layer.path) + (f" (layer {layer.layer})" if getattr(layer, "layer", None) else ""))
        item.setData(0, Qt.ItemDataRole.UserRole, id(layer))
        group.addChild(item)
        group.setExpanded(True)
        self._items[id(layer)] = item
        self._fill_legend(layer, item)
        self.tree.blockSignals(False)
        self.tree.setCurrentItem(group)
        self.layers_changed.emit()

    def _label(self, layer: Layer) -> str:
        if isinstance(layer, HeatmapLayer):
            return "heat map"
        if isinstance(layer, VectorLayer) and layer.kind == "hotspots":
            return f"hot spots ({len(layer.features.records)})"
        if isinstance(layer, VectorLayer) and not layer.loaded:
            return layer.layer or layer.name
        if isinstance(layer, VectorLayer):
            what = [f for f in (layer.caption_field, layer.class_field) if f]
            return f"{layer.layer or layer.name}" + (f" ({', '.join(what)})" if what else "")
        return layer.name

    def remove_layer(self, layer: Layer) -> None:
        layer.remove_from(self.scene)
        if layer in self.layers:
            self.layers.remove(layer)
        item = self._items.pop(id(layer), None)
        if item is not None and item.parent() is not None:
            group = item.parent()
            group.removeChild(item)
            if group.childCount() == 0:
                self.tree.takeTopLevelItem(self.tree.indexOfTopLevelItem(group))
                self._groups.pop(layer.group, None)
        self.layers_changed.emit()

    def remove_group(self, group: str) -> None:
        for layer in [x for x in self.layers if x.group == group]:
            self.remove_layer(layer)

    def remove_selected(self) -> None:
        item = self.tree.currentItem()
        if item is None or item is self.scene_item:
            return
        while item.parent() is not None and self._layer_of(item) is None:
            item = item.parent()  # a legend entry stands for its layer
        layer = self._layer_of(item)
        if layer is not None:
            self.remove_layer(layer)
        else:
            self.remove_group(item.text(0))
        self._selection_changed()

    def clear(self) -> None:
        for layer in list(self.layers):
            self.remove_layer(layer)

    def groups(self) -> list[str]:
        return list(self._groups)

    def layers_in(self, group: str) -> list[Layer]:
        return [x for x in self.layers if x.group == group]

    def export_group(self, group: str, folder: Path) -> list[Path]:
        """Copy the files of every layer of ``group`` into ``folder``; returns the copies."""
        folder = Path(folder)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            copies = []
            for path in dict.fromkeys(p for layer in self.layers_in(group) for p in layer.files()):
                target = folder / path.name
                if target.resolve() != path.resolve():
                    shutil.copy2(path, target)
                copies.append(target)
            return copies
        except OSError as exc:
            raise UserError(f"cannot export to this folder ({exc.strerror or exc})", path=folder) from None

    def selected_group(self) -> str | None:
        item = self.tree.currentItem()
        if item is None or item is self.scene_item:
            return None
        while item.parent() is not None:
            item = item.parent()
        return item.text(0)

    def heatmap_of(self, group: str | None) -> HeatmapLayer | None:
        return next((x for x in self.layers if x.group == group and isinstance(x, HeatmapLayer)), None)

    # -- interaction -------------------------------------------------------------------------------------

    def _layer_of(self, item: QTreeWidgetItem | None) -> Layer | None:
        if item is None:
            return None
        key = item.data(0, Qt.ItemDataRole.UserRole)
        return next((x for x in self.layers if id(x) == key), None)

    def _item_changed(self, item: QTreeWidgetItem, _column: int) -> None:
        checked = item.checkState(0) == Qt.CheckState.Checked
        layer = self._layer_of(item)
        if layer is not None:
            self._show(layer, checked and (item.parent() is None or
                                           item.parent().checkState(0) == Qt.CheckState.Checked))
            return
        if item in self._groups.values():
            for i in range(item.childCount()):
                child = self._layer_of(item.child(i))
                if child is not None:
                    self._show(child, checked and item.child(i).checkState(0) == Qt.CheckState.Checked)

    def _show(self, layer: Layer, visible: bool) -> None:
        try:
            layer.set_visible(visible)
        except UserError as exc:
            self.problem.emit(str(exc))
            return
        item = self._items.get(id(layer))
        if item is not None and item.text(0) != self._label(layer):
            self.tree.blockSignals(True)
            item.setText(0, self._label(layer))  # a lazy layer knows its fields once read
            self._fill_legend(layer, item)
            self.tree.blockSignals(False)

    def _fill_legend(self, layer: Layer, item: QTreeWidgetItem) -> None:
        """Class colours of a tile layer, as swatches under its entry."""
        legend = getattr(layer, "legend", [])
        item.takeChildren()
        for name, colour in legend[:40]:
            swatch = QPixmap(12, 12)
            swatch.fill(colour)
            child = QTreeWidgetItem([name])
            child.setIcon(0, QIcon(swatch))
            child.setFlags(Qt.ItemFlag.ItemIsEnabled)
            item.addChild(child)
        if len(legend) > 40:
            more = QTreeWidgetItem([f"… {len(legend) - 40} more classes"])
            more.setFlags(Qt.ItemFlag.ItemIsEnabled)
            item.addChild(more)

    def set_group_visible(self, group: str, visible: bool) -> None:
        item = self._groups.get(group)
        if item is not None:
            self.tree.blockSignals(True)
            item.setCheckState(0, Qt.CheckState.Checked if visible else Qt.CheckState.Unchecked)
            self.tree.blockSignals(False)
            self._item_changed(item, 0)

    def select_group(self, group: str) -> None:
        item = self._groups.get(group)
        if item is not None:
            self.tree.setCurrentItem(item)

    def _selection_changed(self) -> None:
        group = self.selected_group()
        heat = self.heatmap_of(group) or next(
            (x for x in reversed(self.layers) if isinstance(x, HeatmapLayer)), None)
        self.legend.set_layer(heat)
        self.opacity.setEnabled(heat is not None)
        if heat is not None:
            self.opacity.blockSignals(True)
            self.opacity.setValue(round(heat.opacity * 100))
            self.opacity_label.setText(f"{self.opacity.value()}%")
            self.opacity.blockSignals(False)
        has = group is not None
        for button in (self.remove_button, self.export_button):
            button.setEnabled(has)

    def _opacity_changed(self, value: int) -> None:
        self.opacity_label.setText(f"{value}%")
        group = self.selected_group()
        heat = self.heatmap_of(group) or next(
            (x for x in reversed(self.layers) if isinstance(x, HeatmapLayer)), None)
        if heat is not None:
            heat.set_opacity(value / 100)

    def _zoom_item(self, item: QTreeWidgetItem | None) -> None:
        if item is None:
            return
        if item is self.scene_item:
            self.zoom_requested.emit(None)
            return
        while item.parent() is not None and self._layer_of(item) is None:
            item = item.parent()
        layer = self._layer_of(item)
        layers = [layer] if layer is not None else self.layers_in(item.text(0))
        rect = QRectF()
        for x in layers:
            extent = x.extent() if not isinstance(x, HeatmapLayer) or len(layers) == 1 else QRectF()
            rect = rect.united(extent)
        if rect.isEmpty():
            rect = next((x.extent() for x in layers), QRectF())
        self.zoom_requested.emit(rect)

    def _export_clicked(self) -> None:
        group = self.selected_group()
        if group is not None:
            self.export_requested.emit(group)


class InfoPanel(QTextBrowser):
    """What lies under the cursor: tile captions, classes and scores, hot-spot attributes."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setOpenExternalLinks(False)
        self.pinned = False
        self.shown: list[tuple[str, dict[str, Any]]] = []
        self.show_features([], None)

    def show_features(self, hits: list[tuple[str, dict[str, Any]]], where: str | None, pinned: bool = False) -> None:
        if self.pinned and not pinned:
            return
        if hits and hits == self.shown and (pinned and bool(hits)) == self.pinned:
            return  # the mouse moved within the same tile: nothing to redraw
        self.pinned = pinned and bool(hits)
        self.shown = hits
        if not hits:
            self.setHtml("<p style='color:#777'>Hover over a tile or hot spot to read its caption, "
                         "classes and scores. Click to pin.</p>" + (f"<p style='color:#777'>{where}</p>" if where else ""))
            return
        parts = []
        if where:
            parts.append(f"<p style='color:#777;margin:0'>{html.escape(where)}{' · pinned' if pinned else ''}</p>")
        for title, record in hits[:6]:
            parts.append(f"<h4 style='margin:6px 0 2px 0'>{html.escape(title)}</h4>")
            caption = next((record[k] for k in record if k.lower() in ("caption", "text", "description")
                            and record[k]), None)
            if caption:
                parts.append(f"<p style='font-size:12pt;margin:2px 0 4px 0'>“{html.escape(str(caption))}”</p>")
            rows = "".join(
                f"<tr><td style='color:#666;padding-right:8px'>{html.escape(k)}</td><td>{html.escape(_fmt(v))}</td></tr>"
                for k, v in record.items() if k.lower() not in ("caption", "text", "description"))
            parts.append(f"<table cellspacing=0>{rows}</table>")
        self.setHtml("".join(parts))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if abs(value) >= 1e4:
            return f"{value:,.0f}"
        return f"{value:.4g}"
    return str(value)
