"""Start the desktop app."""

from __future__ import annotations

import sys
from pathlib import Path

from PyQt6.QtCore import QSettings
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
    window.show()
    if paths:
        window.open_paths([str(p) for p in paths])
    return app.exec()
