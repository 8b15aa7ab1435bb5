"""File › Search archive…: the dialog asking for an archive folder (made by `rsvlm index`), a query
and how many tiles to return, and where the hits' scene comes from when no scene is open."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

from PyQt6.QtCore import QSettings
from PyQt6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QWidget,
)

from rs_vlm_app.tasks.options import SearchOptions, declared

TOP_K = declared(SearchOptions)["top_k"]  # the same number of hits as `rsvlm search` by default


class ArchiveSearchDialog(QDialog):
    """Archive folder, query and K; the folder and K are remembered in ``settings``."""

    def __init__(self, settings: QSettings, parent: QWidget | None = None, query: str = ""):
        super().__init__(parent)
        self.settings = settings
        self.setWindowTitle("Search archive")
        form = QFormLayout(self)
        self.folder = QLineEdit(self.settings.value("archive/folder", "", type=str))
        self.folder.setPlaceholderText("a folder made by `rsvlm index`")
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        row = QHBoxLayout()
        row.addWidget(self.folder, 1)
        row.addWidget(browse)
        form.addRow("Archive", row)
        self.query = QLineEdit(query)
        self.query.setPlaceholderText("e.g. “a marina with boats”")
        form.addRow("Query", self.query)
        self.top_k = QSpinBox()
        self.top_k.setRange(int(TOP_K.minimum), int(TOP_K.maximum))
        self.top_k.setValue(self.settings.value("archive/top_k", TOP_K.default, type=int))
        self.top_k.setToolTip("how many of the archive's tiles to return, best first")
        form.addRow("Best tiles", self.top_k)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Search")
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Archive folder", self.folder.text())
        if folder:
            self.folder.setText(folder)

    def values(self) -> dict:
        """{"archive": Path, "query": str, "top_k": int}; remembers the folder and K."""
        folder = self.folder.text().strip()
        self.settings.setValue("archive/folder", folder)
        self.settings.setValue("archive/top_k", self.top_k.value())
        return {"archive": Path(folder).expanduser() if folder else None,
                "query": " ".join(self.query.text().split()), "top_k": self.top_k.value()}


def best_hit_scene(gpkg: str | Path, layer: str = "results") -> Path | None:
    """The scene file of the best-ranked tile in an archive search's GeoPackage (None if unreadable)."""
    try:
        with closing(sqlite3.connect(f"file:{Path(gpkg).as_posix()}?mode=ro", uri=True)) as db:
            row = db.execute(f'SELECT scene_path FROM "{layer}" ORDER BY rank LIMIT 1').fetchone()
    except sqlite3.Error:
        return None
    return Path(row[0]) if row and row[0] else None
