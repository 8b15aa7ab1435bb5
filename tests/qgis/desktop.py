"""A stand-in for the QGIS desktop's ``iface`` made of real QGIS widgets.

It offers the QgisInterface methods the plugin calls (main window, map canvas, message bar, dock
widgets, Raster menu and toolbar, options pages), implemented with a real QMainWindow,
QgsMapCanvas (bridged to the project's layer tree), QgsMessageBar and QgsLayerTreeView, so tests
see exactly what a user would: the messages pushed, the layers drawn, the dock's widgets.
"""

from __future__ import annotations

from qgis.core import QgsLayerTreeModel, QgsProject
from qgis.gui import (
    QgsLayerTreeMapCanvasBridge,
    QgsLayerTreeView,
    QgsMapCanvas,
    QgsMessageBar,
)
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtWidgets import QDockWidget, QMainWindow, QVBoxLayout, QWidget


class DesktopInterface:
    def __init__(self, width: int = 1400, height: int = 860):
        self.window = QMainWindow()
        self.window.setWindowTitle("QGIS · rs-vlm")
        self.window.resize(width, height)
        central = QWidget()
        layout = QVBoxLayout(central)
        layout.setContentsMargins(0, 0, 0, 0)
        self.bar = QgsMessageBar()
        self.canvas = QgsMapCanvas()
        self.canvas.setCanvasColor(Qt.GlobalColor.white)
        layout.addWidget(self.bar)
        layout.addWidget(self.canvas, 1)
        self.window.setCentralWidget(central)
        root = QgsProject.instance().layerTreeRoot()
        self.bridge = QgsLayerTreeMapCanvasBridge(root, self.canvas)
        self.model = QgsLayerTreeModel(root)
        self.model.setFlag(QgsLayerTreeModel.Flag.AllowNodeChangeVisibility)
        self.model.setFlag(QgsLayerTreeModel.Flag.ShowLegend)
        self.tree = QgsLayerTreeView()
        self.tree.setModel(self.model)
        layers_dock = QDockWidget("Layers")
        layers_dock.setObjectName("Layers")
        layers_dock.setWidget(self.tree)
        self.window.addDockWidget(Qt.DockWidgetArea.LeftDockWidgetArea, layers_dock)
        self.raster_menu = self.window.menuBar().addMenu("&Raster")
        self.raster_toolbar = self.window.addToolBar("Raster")
        self.plugin_menus: dict[str, object] = {}
        self.options_factories: list = []

    # -- QgisInterface methods the plugin uses ----------------------------------------------------

    def mainWindow(self):  # noqa: N802
        return self.window

    def messageBar(self):  # noqa: N802
        return self.bar

    def mapCanvas(self):  # noqa: N802
        return self.canvas

    def addDockWidget(self, area, dock):  # noqa: N802
        self.window.addDockWidget(area, dock)

    def removeDockWidget(self, dock):  # noqa: N802
        self.window.removeDockWidget(dock)

    def addRasterToolBarIcon(self, action):  # noqa: N802
        self.raster_toolbar.addAction(action)

    def removeRasterToolBarIcon(self, action):  # noqa: N802
        self.raster_toolbar.removeAction(action)

    def addPluginToRasterMenu(self, name, action):  # noqa: N802
        menu = self.plugin_menus.get(name)
        if menu is None:
            menu = self.plugin_menus[name] = self.raster_menu.addMenu(name)
        menu.addAction(action)

    def removePluginRasterMenu(self, name, action):  # noqa: N802
        menu = self.plugin_menus.get(name)
        if menu is not None:
            menu.removeAction(action)

    def registerOptionsWidgetFactory(self, factory):  # noqa: N802
        self.options_factories.append(factory)

    def unregisterOptionsWidgetFactory(self, factory):  # noqa: N802
        self.options_factories.remove(factory)

    # -- helpers for tests ------------------------------------------------------------------------

    def messages(self) -> list[str]:
        """Texts of the message-bar items currently shown (title and text)."""
        out = []
        for item in self.bar.items():
            out.append(f"{item.title()}: {item.text()}")
        return out
