"""The main window's Tools menu: the dataset window, the training window, File › Open run…, and the
loop between them (a built dataset goes to training in one click; a finished run's model goes to
the toolbar's model picker, so the next question on the map uses it)."""

from __future__ import annotations

from pathlib import Path

from PyQt6.QtCore import QObject
from PyQt6.QtGui import QAction
from PyQt6.QtWidgets import QFileDialog, QMainWindow, QMenu

from rs_vlm_app.gui.model_picker import ModelChoice


class ToolWindows(QObject):
    """Owns the two tool windows of a main window (one of each, reused)."""

    def __init__(self, window: QMainWindow):
        super().__init__(window)
        self.main = window
        self._dataset = None
        self._training = None

    def dataset_window(self):
        """The dataset window (created on first use), shown and raised."""
        from rs_vlm_app.gui.dataset_window import DatasetWindow

        if self._dataset is None:
            self._dataset = DatasetWindow(self.main.jobs, self.main)
            self._dataset.train_requested.connect(self._train_on)
        _show(self._dataset)
        return self._dataset

    def training_window(self):
        """The training window (created on first use), shown and raised."""
        from rs_vlm_app.gui.training_window import TrainingWindow

        if self._training is None:
            self._training = TrainingWindow(self.main.jobs, self.main)
            self._training.use_model.connect(self.use_run_model)
        _show(self._training)
        return self._training

    def open_run(self, run_dir: Path) -> bool:
        return self.training_window().open_run(Path(run_dir))

    def _open_run_dialog(self) -> None:
        folder = QFileDialog.getExistingDirectory(self.main, "Open a training run folder")
        if folder:
            self.open_run(Path(folder))

    def _train_on(self, data: str) -> None:
        self.training_window().set_data(data)

    def use_run_model(self, info) -> ModelChoice:
        """Make a finished run's model the one that answers: CLIP runs go to the toolbar's model
        list (selected), CoCa runs become the Caption tiles dialog's captioner."""
        choice = ModelChoice(checkpoint=str(info.model),
                             model_config=str(info.model_config) if info.model_config else None,
                             arch=None if info.model_config else str(info.config.get("model") or "") or None)
        if info.task == "coca":
            self.main.settings.setValue("caption/custom", choice.to_json())
            self.main.settings.setValue("caption/model", choice.to_json())
            text = f"{choice.label} is now the captioner of Tiles › Caption tiles…"
        else:
            self.main.model_picker.add_custom(choice)
            text = f"{choice.label} now answers the questions on the map (toolbar › Model)."
        self.main.messages.show_message(text, "success")
        return choice


def install(window: QMainWindow) -> ToolWindows:
    """Add Tools › Build dataset…, Tools › Fine-tune… and File › Open run… to ``window``."""
    tools = ToolWindows(window)
    dataset = QAction("Build &dataset…", window)
    dataset.setToolTip("Caption images with MLLMs (MpGI): sources, backends, perspectives, live gallery")
    dataset.triggered.connect(lambda: tools.dataset_window())
    training = QAction("&Fine-tune…", window)
    training.setToolTip("Fine-tune a CLIP or CoCa model on captions, with live curves")
    training.triggered.connect(lambda: tools.training_window())
    open_run = QAction("Open &run…", window)
    open_run.setToolTip("Watch a training run folder (started here or with rsvlm train)")
    open_run.triggered.connect(tools._open_run_dialog)
    help_menu = next((a for a in window.menuBar().actions() if a.text() == "&Help"), None)
    menu = QMenu("T&ools", window)
    window.menuBar().insertMenu(help_menu, menu) if help_menu is not None else window.menuBar().addMenu(menu)
    menu.addAction(dataset)
    menu.addAction(training)
    file_menu = next((a.menu() for a in window.menuBar().actions() if a.menu() and a.text() == "&File"), None)
    if file_menu is not None:
        before = next((a for a in file_menu.actions() if a.isSeparator()), None)
        file_menu.insertAction(before, open_run) if before is not None else file_menu.addAction(open_run)
    tools.actions = {"dataset": dataset, "training": training, "open_run": open_run}
    return tools


def _show(window: QMainWindow) -> None:
    window.show()
    window.raise_()
    window.activateWindow()
