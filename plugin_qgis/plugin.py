"""The plugin object QGIS creates: menu and toolbar entries, the dock, the Processing provider,
the options page and the persistent worker they share."""

from __future__ import annotations

from qgis.core import Qgis, QgsApplication, QgsMessageLog
from qgis.PyQt.QtGui import QIcon
from qgis.PyQt.QtWidgets import QAction

from . import settings
from .compat import enum
from .processing_provider.base import set_shared_service
from .processing_provider.provider import RsVlmProvider
from .shipped import icon_path
from .worker import WorkerService

MENU = "&rs-vlm"
LOG_TAG = "rs-vlm"


class RsVlmPlugin:
    def __init__(self, iface):
        self.iface = iface
        self.provider: RsVlmProvider | None = None
        self.service: WorkerService | None = None
        self.panel = None
        self.actions: list[QAction] = []
        self.options_factory = None
        self.setup = None

    # -- Processing only (qgis_process calls just this) --------------------------------------------

    def initProcessing(self) -> None:  # noqa: N802 - QGIS's name
        if self.provider is None:
            self.provider = RsVlmProvider()
            QgsApplication.processingRegistry().addProvider(self.provider)

    # -- desktop -----------------------------------------------------------------------------------

    def initGui(self) -> None:  # noqa: N802 - QGIS's name
        from .panel import RsVlmPanel
        from .settings_dialog import OptionsFactory
        from .setup_dialog import SetupEntry

        self.service = WorkerService(settings.load_config, qgis_prefix=QgsApplication.prefixPath(),
                                     on_stderr=_log_worker_line)
        set_shared_service(self.service)
        self.initProcessing()

        self.panel = RsVlmPanel(self.iface, self.service, self.iface.mainWindow())
        self.iface.addDockWidget(enum("Qt.DockWidgetArea.RightDockWidgetArea"), self.panel)
        self.panel.hide()

        icon = QIcon(icon_path())
        show = QAction(icon, "rs-vlm panel", self.iface.mainWindow())
        show.setToolTip("rs-vlm: ask the imagery a question (heat maps, captions, classes)")
        show.setCheckable(True)
        show.toggled.connect(self.panel.setUserVisible if hasattr(self.panel, "setUserVisible") else self.panel.setVisible)
        self.panel.visibilityChanged.connect(show.setChecked)
        self.iface.addRasterToolBarIcon(show)
        self.iface.addPluginToRasterMenu(MENU, show)
        prefs = QAction(QgsApplication.getThemeIcon("/mActionOptions.svg"), "rs-vlm settings...",
                        self.iface.mainWindow())
        prefs.triggered.connect(self.panel.open_settings)
        self.iface.addPluginToRasterMenu(MENU, prefs)
        self.actions = [show, prefs]
        self.setup = SetupEntry(self.iface, on_engine_changed=self._engine_changed)
        self.iface.addPluginToRasterMenu(MENU, self.setup.action)
        self.actions.append(self.setup.action)

        self.options_factory = OptionsFactory(on_saved=self.panel.refresh_worker_label)
        self.iface.registerOptionsWidgetFactory(self.options_factory)
        self.setup.offer_if_needed()

    def _engine_changed(self) -> None:
        """The set-up dialog recorded a new engine: the next job starts a worker there."""
        if self.service is not None:
            self.service.stop()
        if self.panel is not None:
            self.panel.refresh_worker_label()

    def unload(self) -> None:
        if self.setup is not None:
            self.setup.unload()
            self.setup = None
        for action in self.actions:
            self.iface.removePluginRasterMenu(MENU, action)
            self.iface.removeRasterToolBarIcon(action)
        self.actions = []
        if self.options_factory is not None:
            self.iface.unregisterOptionsWidgetFactory(self.options_factory)
            self.options_factory = None
        if self.panel is not None:
            self.panel.shut_down()
            self.iface.removeDockWidget(self.panel)
            self.panel.deleteLater()
            self.panel = None
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
        set_shared_service(None)
        if self.service is not None:
            self.service.stop()
            self.service = None


def _log_worker_line(line: str) -> None:
    QgsMessageLog.logMessage(line, LOG_TAG, Qgis.MessageLevel.Info)
