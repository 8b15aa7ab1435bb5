"""Model, device and precision choice: the catalogue's CLIP models and the user's own checkpoints,
remembered between sessions (QSettings)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from PyQt6.QtCore import QSettings, Qt, pyqtSignal
from PyQt6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QWidget,
)

DEVICES = [("Auto device", "auto"), ("CPU", "cpu"), ("CUDA GPU", "cuda"), ("Apple GPU", "mps")]
PRECISIONS = [("Auto precision", "auto"), ("fp32", "fp32"), ("fp16", "fp16"), ("bf16", "bf16")]
CUSTOM = "__custom__"
MAX_CUSTOM = 8


@dataclass(frozen=True)
class ModelChoice:
    """A catalogue ``name``, or a checkpoint file with its ``arch`` or ``model_config``."""

    name: str | None = None
    checkpoint: str | None = None
    arch: str | None = None
    model_config: str | None = None
    quick_gelu: bool = False

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        built = self.arch or (Path(self.model_config).stem if self.model_config else "?")
        return f"{Path(self.checkpoint or '').name} ({built})"

    def spec(self, device: str, precision: str) -> dict[str, Any]:
        """The ``model`` object of a job spec (rs_vlm_app.models.spec.ModelSpec), built by the shared client."""
        from rs_vlm_app.jobs.client import model_spec

        if self.name:
            return model_spec(name=self.name, device=device, precision=precision)
        return model_spec(checkpoint=self.checkpoint, arch=self.arch, model_config=self.model_config,
                          quick_gelu=self.quick_gelu, device=device, precision=precision)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelChoice | None:
        try:
            data = json.loads(text)
            return cls(**{k: data.get(k) for k in ("name", "checkpoint", "arch", "model_config")},
                       quick_gelu=bool(data.get("quick_gelu")))
        except (ValueError, TypeError, AttributeError):
            return None


def catalogue_models(family: str = "clip") -> list[tuple[str, str, bool]]:
    """(name, description, is_default) of the catalogue's models of ``family`` (empty if none)."""
    try:
        from rs_vlm_app.models.catalogue import load_catalogue

        entries = load_catalogue()
    except Exception:  # no catalogue in this install: custom checkpoints still work
        return []
    models = [(e.name, e.description, bool(e.default)) for e in entries.values() if e.family == family]
    return sorted(models, key=lambda m: (not m[2], m[0]))


class CustomModelDialog(QDialog):
    """Choose a checkpoint file and how open_clip builds it (architecture name or config JSON)."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Custom checkpoint")
        form = QFormLayout(self)
        self.checkpoint = QLineEdit()
        self.checkpoint.setPlaceholderText(".pt / .bin / .safetensors")
        form.addRow("Checkpoint", _with_browse(self.checkpoint, "Checkpoint", "Weights (*.pt *.pth *.bin *.safetensors);;All files (*)"))
        self.arch = QLineEdit()
        self.arch.setPlaceholderText("open_clip architecture, e.g. ViT-B-32")
        form.addRow("Architecture", self.arch)
        self.config = QLineEdit()
        self.config.setPlaceholderText("or an open_clip model config .json")
        form.addRow("Model config", _with_browse(self.config, "Model config", "JSON (*.json);;All files (*)"))
        self.quick_gelu = QCheckBox("QuickGELU (fine-tunes of OpenAI CLIP weights)")
        form.addRow("", self.quick_gelu)
        self.problem = QLabel()
        self.problem.setStyleSheet("color: #9b1c1c")
        form.addRow(self.problem)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self._accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)
        self.choice: ModelChoice | None = None

    def _accept(self) -> None:
        checkpoint, arch, config = (self.checkpoint.text().strip(), self.arch.text().strip(),
                                    self.config.text().strip())
        if not checkpoint or not Path(checkpoint).is_file():
            self.problem.setText("Choose an existing checkpoint file.")
            return
        if not arch and not config:
            self.problem.setText("Give the architecture or a model config file.")
            return
        if config and not Path(config).is_file():
            self.problem.setText("The model config file does not exist.")
            return
        self.choice = ModelChoice(checkpoint=checkpoint, arch=arch or None, model_config=config or None,
                                  quick_gelu=self.quick_gelu.isChecked())
        self.accept()


def _with_browse(edit: QLineEdit, title: str, filters: str) -> QWidget:
    box = QWidget()
    row = QHBoxLayout(box)
    row.setContentsMargins(0, 0, 0, 0)
    row.addWidget(edit, 1)
    button = QPushButton("Browse…")
    button.clicked.connect(lambda: _browse(edit, title, filters))
    row.addWidget(button)
    return box


def _browse(edit: QLineEdit, title: str, filters: str) -> None:
    path, _ = QFileDialog.getOpenFileName(edit, title, edit.text(), filters)
    if path:
        edit.setText(path)


class ModelPicker(QWidget):
    """Three combo boxes for a toolbar: model, device, precision. ``changed`` fires on any edit."""

    changed = pyqtSignal()

    def __init__(self, settings: QSettings, parent=None):
        super().__init__(parent)
        self.settings = settings
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.setSpacing(4)
        self.model = QComboBox()
        self.model.setMinimumContentsLength(18)
        self.model.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.model.setToolTip("Model that answers the queries")
        self.device = QComboBox()
        self.device.setToolTip("Where the model computes")
        self.precision = QComboBox()
        self.precision.setToolTip("Numeric precision (Auto: fp16/bf16 on a GPU, fp32 on the CPU)")
        for label, value in DEVICES:
            self.device.addItem(label, value)
        for label, value in PRECISIONS:
            self.precision.addItem(label, value)
        row.addWidget(QLabel("Model"))
        row.addWidget(self.model)
        row.addWidget(self.device)
        row.addWidget(self.precision)
        self._custom: list[ModelChoice] = []
        self._fill()
        self._restore()
        self._last_index = self.model.currentIndex()
        self.model.activated.connect(self._model_activated)
        self.device.currentIndexChanged.connect(self._save)
        self.precision.currentIndexChanged.connect(self._save)

    def _fill(self) -> None:
        self.model.blockSignals(True)
        self.model.clear()
        for name, description, default in catalogue_models("clip"):
            self.model.addItem(name + ("  (default)" if default else ""), ModelChoice(name=name).to_json())
            self.model.setItemData(self.model.count() - 1, description, Qt.ItemDataRole.ToolTipRole)
        stored = self.settings.value("model/custom", [], type=list) or []
        self._custom = [c for c in (ModelChoice.from_json(s) for s in stored) if c is not None]
        if self._custom:
            self.model.insertSeparator(self.model.count())
        for choice in self._custom:
            self.model.addItem(choice.label, choice.to_json())
            self.model.setItemData(self.model.count() - 1, choice.checkpoint, Qt.ItemDataRole.ToolTipRole)
        self.model.insertSeparator(self.model.count())
        self.model.addItem("Custom checkpoint…", CUSTOM)
        self.model.blockSignals(False)

    def _restore(self) -> None:
        current = self.settings.value("model/current", "", type=str)
        index = self.model.findData(current) if current else -1
        self.model.setCurrentIndex(index if index >= 0 else 0 if self.model.itemData(0) != CUSTOM else -1)
        for combo, key in ((self.device, "model/device"), (self.precision, "model/precision")):
            index = combo.findData(self.settings.value(key, "auto", type=str))
            combo.setCurrentIndex(max(0, index))

    def _model_activated(self, index: int) -> None:
        if self.model.itemData(index) == CUSTOM:
            dialog = CustomModelDialog(self)
            if dialog.exec() and dialog.choice is not None:
                self.add_custom(dialog.choice)
            else:
                self.model.setCurrentIndex(self._last_index)
            return
        self._last_index = index
        self._save()

    def add_custom(self, choice: ModelChoice) -> None:
        """Remember a custom checkpoint and select it."""
        self._custom = [choice] + [c for c in self._custom if c != choice][:MAX_CUSTOM - 1]
        self.settings.setValue("model/custom", [c.to_json() for c in self._custom])
        self._fill()
        self.model.setCurrentIndex(self.model.findData(choice.to_json()))
        self._last_index = self.model.currentIndex()
        self._save()

    def _save(self) -> None:
        data = self.model.currentData()
        if data and data != CUSTOM:
            self.settings.setValue("model/current", data)
        self.settings.setValue("model/device", self.device.currentData())
        self.settings.setValue("model/precision", self.precision.currentData())
        self.settings.sync()
        self.changed.emit()

    def choice(self) -> ModelChoice | None:
        data = self.model.currentData()
        if not data or data == CUSTOM:
            return None
        return ModelChoice.from_json(data)

    def model_spec(self) -> dict[str, Any] | None:
        """The ``model`` object for a job spec; None when no model is chosen."""
        choice = self.choice()
        if choice is None:
            return None
        return choice.spec(self.device.currentData(), self.precision.currentData())
