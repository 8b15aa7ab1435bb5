"""Dialogs of the tile jobs on the open scene: "Caption tiles" (a CoCa model) and "Classify tiles"
(a bundled class list or the user's own classes). They only collect choices; the main window
builds the job spec and runs it through the JobManager."""

from __future__ import annotations

from typing import Any

from PyQt6.QtCore import QSettings
from PyQt6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
)

from rs_vlm_app.gui.model_picker import CUSTOM, CustomModelDialog, ModelChoice, catalogue_models
from rs_vlm_app.jobs.client import bundled_class_lists
from rs_vlm_app.resources import resource
from rs_vlm_app.tasks.options import CaptionOptions, default_of

#: The class lists shipped with rs-vlm (resources/classes/): (menu label, key).
BUNDLED_CLASS_LISTS = [(info.label, info.key) for info in bundled_class_lists(resource("classes"))]
OWN_CLASSES = "__own__"
DEFAULT_GRID = default_of(CaptionOptions, "grid")  # caption and classify declare the same


def parse_class_text(text: str) -> list[str]:
    """The user's classes: one per line (or separated by commas on one line); blanks and # comments dropped."""
    lines = [line.strip() for line in text.splitlines()]
    lines = [line for line in lines if line and not line.startswith("#")]
    if len(lines) == 1 and "," in lines[0] and "=" not in lines[0]:
        lines = [part.strip() for part in lines[0].split(",") if part.strip()]
    return lines


def _grid_problem(text: str) -> str | None:
    from rs_vlm_app.errors import UserError
    from rs_vlm_app.geo.grid import GridSpec

    try:
        GridSpec.parse(text)
    except UserError as exc:
        return str(exc)
    return None


class _TileJobDialog(QDialog):
    def __init__(self, title: str, settings: QSettings, parent=None):
        super().__init__(parent)
        self.setWindowTitle(title)
        self.settings = settings
        self.form = QFormLayout(self)
        self.grid = QLineEdit(settings.value("tiles/grid", DEFAULT_GRID, type=str))
        self.grid.setToolTip("Tile windows in pixels: '256', '224,448' (two scales), '256@0.5' (50% overlap)")
        self.problem = QLabel()
        self.problem.setStyleSheet("color: #9b1c1c")
        self.problem.setWordWrap(True)

    def _finish_form(self) -> None:
        self.form.addRow("Tile grid", self.grid)
        self.form.addRow(self.problem)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self._accept)
        buttons.rejected.connect(self.reject)
        self.form.addRow(buttons)

    def _accept(self) -> None:
        problem = self.problem_text()
        if problem:
            self.problem.setText(problem)
            return
        self.settings.setValue("tiles/grid", self.grid.text().strip())
        self.accept()

    def problem_text(self) -> str | None:
        return _grid_problem(self.grid.text().strip())


class CaptionDialog(_TileJobDialog):
    """Choose the CoCa captioner (catalogue or a checkpoint), the grid and the decoding."""

    def __init__(self, settings: QSettings, parent=None):
        super().__init__("Caption tiles", settings, parent)
        self.model = QComboBox()
        for name, description, default in catalogue_models("coca"):
            self.model.addItem(name + ("  (default)" if default else ""), ModelChoice(name=name).to_json())
            self.model.setItemData(self.model.count() - 1, description)
        stored = ModelChoice.from_json(settings.value("caption/custom", "", type=str) or "")
        if stored is not None:
            self.model.addItem(stored.label, stored.to_json())
        self.model.addItem("Custom checkpoint…", CUSTOM)
        current = self.model.findData(settings.value("caption/model", "", type=str))
        self.model.setCurrentIndex(max(0, current))
        self.model.activated.connect(self._model_activated)
        self.form.addRow("Caption model", self.model)
        self.decoding = QComboBox()
        self.decoding.addItem("Beam search (better)", "beam")
        self.decoding.addItem("Greedy (faster)", "greedy")
        self.form.addRow("Decoding", self.decoding)
        self.clip_score = QCheckBox("Score each caption against its tile with the toolbar's CLIP model")
        self.form.addRow("", self.clip_score)
        self._finish_form()

    def _model_activated(self, index: int) -> None:
        if self.model.itemData(index) != CUSTOM:
            return
        dialog = CustomModelDialog(self)
        if dialog.exec() and dialog.choice is not None:
            self.set_custom(dialog.choice)
        else:
            self.model.setCurrentIndex(0)

    def set_custom(self, choice: ModelChoice) -> None:
        """Use (and remember) a CoCa checkpoint of the user's."""
        self.settings.setValue("caption/custom", choice.to_json())
        at = self.model.findData(CUSTOM)
        self.model.insertItem(at, choice.label, choice.to_json())
        self.model.setCurrentIndex(at)

    def choice(self) -> ModelChoice | None:
        data = self.model.currentData()
        return None if not data or data == CUSTOM else ModelChoice.from_json(data)

    def problem_text(self) -> str | None:
        if self.choice() is None:
            return "Choose a caption (CoCa) model, or a checkpoint of one."
        return super().problem_text()

    def values(self) -> dict[str, Any]:
        choice = self.choice()
        self.settings.setValue("caption/model", choice.to_json() if choice else "")
        return {"choice": choice, "grid": self.grid.text().strip(), "decoding": self.decoding.currentData(),
                "clip_score": self.clip_score.isChecked()}


class ClassifyDialog(_TileJobDialog):
    """Choose a bundled class list or type the classes; the toolbar's CLIP model classifies."""

    def __init__(self, settings: QSettings, parent=None):
        super().__init__("Classify tiles", settings, parent)
        self.class_list = QComboBox()
        for label, value in BUNDLED_CLASS_LISTS:
            self.class_list.addItem(label, value)
        self.class_list.addItem("My classes (below)", OWN_CLASSES)
        self.class_list.setCurrentIndex(max(0, self.class_list.findData(settings.value("classify/list", "aid",
                                                                                        type=str))))
        self.form.addRow("Classes", self.class_list)
        self.own = QPlainTextEdit(settings.value("classify/own", "", type=str))
        self.own.setPlaceholderText("One class per line, e.g.\nlake\nforest = a dense forest\nfarmland")
        self.own.textChanged.connect(lambda: self.class_list.setCurrentIndex(self.class_list.findData(OWN_CLASSES)))
        self.form.addRow("My classes", self.own)
        self._finish_form()

    def classes(self) -> str | list[str]:
        data = self.class_list.currentData()
        return parse_class_text(self.own.toPlainText()) if data == OWN_CLASSES else data

    def problem_text(self) -> str | None:
        classes = self.classes()
        if isinstance(classes, list) and len(classes) < 2:
            return "Type at least two classes, one per line."
        return super().problem_text()

    def values(self) -> dict[str, Any]:
        self.settings.setValue("classify/list", self.class_list.currentData())
        self.settings.setValue("classify/own", self.own.toPlainText())
        return {"classes": self.classes(), "grid": self.grid.text().strip()}
