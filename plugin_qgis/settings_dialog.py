"""rs-vlm settings: the app's Python (with a "Test connection" that shows the worker's hello),
default models, device and results folder. One widget, shown in a dialog and as a page of QGIS's
Settings > Options."""

from __future__ import annotations

import threading
from dataclasses import replace

from qgis.core import QgsApplication
from qgis.gui import QgsFileWidget, QgsOptionsPageWidget, QgsOptionsWidgetFactory
from qgis.PyQt.QtCore import QTimer
from qgis.PyQt.QtGui import QIcon
from qgis.PyQt.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from . import settings
from .compat import enum
from .settings import AppConfig, ModelChoice
from .shipped import icon_path
from .worker import WorkerError, probe

ORIGIN_TEXT = {
    "settings": "chosen here",
    "install": "recorded by `rsvlm qgis install`",
    "path": "found on PATH (the `rsvlm` command)",
    "setup": "the environment made by Raster > rs-vlm > Set up rs-vlm...",
    "": "not found: use Raster > rs-vlm > Set up rs-vlm..., run `rsvlm qgis install` in rs-vlm's environment, "
        "or choose its python here",
}


def describe_hello(hello) -> str:
    """One line of what a worker's hello says: versions and compute device."""
    versions = dict(hello.versions)
    parts = [f"rs-vlm {hello.app_version or versions.get('rs-vlm', '?')}"]
    for key, label in (("python", "Python"), ("torch", "torch"), ("open_clip_torch", "open_clip"),
                       ("transformers", "transformers")):
        if versions.get(key):
            parts.append(f"{label} {versions[key]}")
    device = dict(hello.device)
    where = str(device.get("default") or "unknown")
    if device.get("cuda"):
        where += " (" + ", ".join(map(str, device["cuda"])) + ")"
    elif device.get("threads"):
        where += f" ({device['threads']} threads)"
    parts.append(f"device: {where}")
    if device.get("error"):
        parts.append(str(device["error"]))
    return " · ".join(parts)


class _ModelRow(QWidget):
    def __init__(self, choice: ModelChoice, placeholder: str):
        super().__init__()
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.model = QLineEdit(choice.model)
        self.model.setPlaceholderText(placeholder)
        self.model.setToolTip("a catalogue name (see `rsvlm models list`) or a checkpoint file "
                              "(.pt, .safetensors); empty = the catalogue's default")
        self.arch = QLineEdit(choice.arch)
        self.arch.setPlaceholderText("architecture")
        self.arch.setToolTip("open_clip architecture of a checkpoint file, e.g. ViT-B-32 (if the catalogue does not know it)")
        self.arch.setMaximumWidth(120)
        self.config = QgsFileWidget()
        self.config.setFilter("open_clip model config (*.json)")
        self.config.setFilePath(choice.config)
        self.config.setToolTip("an open_clip model config (.json) for a custom architecture")
        self.config.lineEdit().setPlaceholderText("model config .json")
        layout.addWidget(self.model, 3)
        layout.addWidget(self.arch, 1)
        layout.addWidget(self.config, 2)

    def choice(self) -> ModelChoice:
        return ModelChoice(self.model.text().strip(), self.arch.text().strip(), self.config.filePath().strip())


class SettingsWidget(QWidget):
    """The settings form; ``save()`` stores it. ``on_saved`` runs after every save."""

    def __init__(self, parent=None, on_saved=None):
        super().__init__(parent)
        self.on_saved = on_saved
        self.config = settings.load_config()
        self._probe_result = None
        self._probe_thread: threading.Thread | None = None
        self._timer = QTimer(self)
        self._timer.setInterval(100)
        self._timer.timeout.connect(self._poll_probe)

        app = QGroupBox("rs-vlm application")
        form = QFormLayout(app)
        self.python = QgsFileWidget()
        self.python.setFilePath(self.config.python)
        self.python.setDialogTitle("The Python interpreter of rs-vlm's environment")
        self.python.fileChanged.connect(self._python_edited)
        self.python.setToolTip("the python(.exe) of the virtual environment where rs-vlm is installed; "
                               "the worker runs there, never inside QGIS")
        form.addRow("Python", self.python)
        self.origin = QLabel()
        self.origin.setWordWrap(True)
        form.addRow("", self.origin)
        self.pythonpath = QgsFileWidget()
        self.pythonpath.setStorageMode(enum("QgsFileWidget.StorageMode.GetDirectory"))
        self.pythonpath.setFilePath(self.config.pythonpath)
        self.pythonpath.setToolTip("only for an rs-vlm source checkout that is not installed into that Python")
        self.pythonpath.fileChanged.connect(self._python_edited)
        form.addRow("Source checkout", self.pythonpath)
        buttons = QHBoxLayout()
        self.test_button = QPushButton("Test connection")
        self.test_button.clicked.connect(self.test_connection)
        self.reset_button = QPushButton("Use detected")
        self.reset_button.setToolTip("forget the Python chosen here and use the one `rsvlm qgis install` recorded")
        self.reset_button.clicked.connect(self._reset_python)
        buttons.addWidget(self.test_button)
        buttons.addWidget(self.reset_button)
        buttons.addStretch(1)
        form.addRow("", buttons)
        self.connection = QLabel("not tested")
        self.connection.setWordWrap(True)
        self.connection.setTextInteractionFlags(enum("Qt.TextInteractionFlag.TextSelectableByMouse"))
        form.addRow("Worker", self.connection)

        models = QGroupBox("Models and device")
        mform = QFormLayout(models)
        self.clip = _ModelRow(self.config.clip, "CLIP model (localize, classify, search)")
        mform.addRow("CLIP", self.clip)
        self.captioner = _ModelRow(self.config.captioner, "captioning model (CoCa)")
        mform.addRow("Captioner", self.captioner)
        self.device = QComboBox()
        self.device.addItems(list(settings.DEVICES))
        self.device.setCurrentText(self.config.device)
        self.device.setToolTip("auto = the first GPU (CUDA or Apple MPS) the worker finds, else the CPU")
        mform.addRow("Device", self.device)
        self.grid = QLineEdit(self.config.grid)
        self.grid.setPlaceholderText("SeLo grid: windows 256, 512, 768 px with half-window shifts")
        self.grid.setToolTip("tile windows in pixels and their overlap for panel runs, e.g. 256,512@0.25")
        mform.addRow("Tile grid", self.grid)
        self.output = QgsFileWidget()
        self.output.setStorageMode(enum("QgsFileWidget.StorageMode.GetDirectory"))
        self.output.setFilePath(self.config.output_dir)
        self.output.lineEdit().setPlaceholderText("default: rs-vlm-results beside the project, else in your home folder")
        mform.addRow("Results folder", self.output)

        layout = QVBoxLayout(self)
        layout.addWidget(app)
        layout.addWidget(models)
        layout.addStretch(1)
        self._origin = self.config.python_origin
        self._show_origin()

    # -- interpreter -------------------------------------------------------------------------------

    def _python_edited(self, *_args) -> None:
        self._origin = "settings" if self.python.filePath().strip() else ""
        self._show_origin()

    def _reset_python(self) -> None:
        python, pythonpath, origin = settings.detected_python()
        self.python.blockSignals(True)
        self.pythonpath.blockSignals(True)
        self.python.setFilePath(python)
        self.pythonpath.setFilePath(pythonpath)
        self.python.blockSignals(False)
        self.pythonpath.blockSignals(False)
        self._origin = origin
        self._show_origin()

    def _show_origin(self) -> None:
        self.origin.setText(f"<small>{ORIGIN_TEXT.get(self._origin, '')}</small>")

    def current(self) -> AppConfig:
        return replace(
            self.config,
            python=self.python.filePath().strip(),
            pythonpath=self.pythonpath.filePath().strip(),
            python_origin=self._origin,
            clip=self.clip.choice(),
            captioner=self.captioner.choice(),
            device=self.device.currentText(),
            grid=self.grid.text().strip(),
            output_dir=self.output.filePath().strip(),
        )

    def save(self) -> None:
        settings.save_config(self.current())
        if self.on_saved is not None:
            self.on_saved()

    # -- test connection ---------------------------------------------------------------------------

    def test_connection(self) -> None:
        """Start a worker with the interpreter shown (saved or not) and show its hello."""
        if self._probe_thread is not None and self._probe_thread.is_alive():
            return
        config = self.current()
        self.connection.setText("starting the worker (the first start imports torch: a few seconds)...")
        self.test_button.setEnabled(False)
        self._probe_result = None

        def target():
            try:
                self._probe_result = ("ok", probe(config.python, config.pythonpath,
                                                  qgis_prefix=QgsApplication.prefixPath()))
            except WorkerError as exc:
                self._probe_result = ("error", str(exc))
            except Exception as exc:  # never crash QGIS from a settings button
                self._probe_result = ("error", f"rs-vlm plugin error: {exc}")

        self._probe_thread = threading.Thread(target=target, daemon=True, name="rsvlm-probe")
        self._probe_thread.start()
        self._timer.start()

    def _poll_probe(self) -> None:
        if self._probe_result is None:
            return
        self._timer.stop()
        self.test_button.setEnabled(True)
        status, value = self._probe_result
        if status == "ok":
            self.connection.setText("✔ " + describe_hello(value))
        else:
            self.connection.setText(f"<span style='color:#b00020'>✖ {value}</span>")

    def wait_for_test(self, timeout: float) -> str:
        """Block until a running test connection finished (for scripts and tests); the label text."""
        if self._probe_thread is not None:
            self._probe_thread.join(timeout)
        self._poll_probe()
        return self.connection.text()


class SettingsDialog(QDialog):
    def __init__(self, parent=None, on_saved=None):
        super().__init__(parent)
        self.setWindowTitle("rs-vlm settings")
        self.setWindowIcon(QIcon(icon_path()))
        self.widget = SettingsWidget(self, on_saved)
        buttons = QDialogButtonBox(enum("QDialogButtonBox.StandardButton.Ok")
                                   | enum("QDialogButtonBox.StandardButton.Cancel"))
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(self.widget)
        layout.addWidget(buttons)
        self.resize(640, self.sizeHint().height())

    def accept(self) -> None:
        self.widget.save()
        super().accept()


class _OptionsPage(QgsOptionsPageWidget):
    def __init__(self, parent=None, on_saved=None):
        super().__init__(parent)
        self.widget = SettingsWidget(self, on_saved)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.widget)

    def apply(self) -> None:
        self.widget.save()


class OptionsFactory(QgsOptionsWidgetFactory):
    """Adds an "rs-vlm" page to QGIS's Settings > Options."""

    def __init__(self, on_saved=None):
        super().__init__()
        self.on_saved = on_saved
        self.setTitle("rs-vlm")

    def icon(self) -> QIcon:
        return QIcon(icon_path())

    def createWidget(self, parent) -> QgsOptionsPageWidget:  # noqa: N802 - Qt's name
        return _OptionsPage(parent, self.on_saved)
