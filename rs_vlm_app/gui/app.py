"""Start the desktop app."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

from PyQt6.QtCore import QSettings, QTimer
from PyQt6.QtWidgets import QApplication

from rs_vlm_app.gui.main_window import MainWindow

STYLE = """
QToolBar { spacing: 6px; padding: 4px; }
QDockWidget::title { padding: 4px 6px; font-weight: 600; }
QTreeWidget { font-size: 10pt; }
QStatusBar QLabel { padding: 0 6px; }
"""


def run(paths: list[Path], settings_file: Path | None = None) -> int:
    """Show the main window, open ``paths`` (scene, layers), run until it is closed."""
    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setOrganizationName("rs-vlm")
    app.setApplicationName("rs-vlm")
    app.setStyle("Fusion")
    app.setStyleSheet(STYLE)
    settings = QSettings(str(settings_file), QSettings.Format.IniFormat) if settings_file else QSettings()
    window = MainWindow(settings)
    _close_on_signals(window, app)
    window.show()
    if paths:
        window.open_paths([str(p) for p in paths])
    return app.exec()


def _close_on_signals(window: MainWindow, app: QApplication) -> None:
    """Ctrl-C or SIGTERM close the window properly (workers stopped, settings saved)."""
    def close(*_args) -> None:
        window.close()
        app.quit()

    for name in ("SIGINT", "SIGTERM"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), close)
    timer = QTimer(window)  # Python runs signal handlers only between bytecodes: wake up now and then
    timer.timeout.connect(lambda: None)
    timer.start(300)
