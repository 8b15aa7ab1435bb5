"""Fixtures for the desktop app: a main window with its own settings file, the tiny model."""

from __future__ import annotations

import pytest

pytest.importorskip("PyQt6.QtWidgets")

from PyQt6.QtCore import QSettings  # noqa: E402

from rs_vlm_app.gui.main_window import MainWindow  # noqa: E402
from rs_vlm_app.gui.model_picker import ModelChoice  # noqa: E402


@pytest.fixture
def settings(tmp_path):
    ini = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    ini.setValue("results/folder", str(tmp_path / "results"))
    ini.setValue("worker/start_early", False)  # tests without queries start no worker
    return ini


@pytest.fixture
def window(qtbot, settings):
    win = MainWindow(settings)
    qtbot.addWidget(win)
    win.resize(1200, 800)
    win.show()
    yield win
    win.jobs.shutdown()
    win.map.close_scene()


@pytest.fixture
def tiny_choice(tiny_clip) -> ModelChoice:
    return ModelChoice(checkpoint=str(tiny_clip["checkpoint"]), model_config=str(tiny_clip["config"]))
