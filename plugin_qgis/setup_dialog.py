"""The "Set up rs-vlm" dialog: builds rs-vlm's own environment from inside QGIS (envsetup.py does
the work in a background thread; this module only shows it), and the offer to open it when the
plugin starts without an engine.

A successful set-up is recorded with settings.record_engine() on the main thread, after the new
worker answered; a failed or cancelled one changes nothing.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable
from pathlib import Path

from qgis.core import Qgis, QgsApplication
from qgis.gui import QgsFileWidget, QgsMessageBar
from qgis.PyQt.QtCore import QTimer
from qgis.PyQt.QtGui import QIcon
from qgis.PyQt.QtWidgets import (
    QAction,
    QButtonGroup,
    QComboBox,
    QDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QRadioButton,
    QVBoxLayout,
)

from . import envsetup, settings
from .compat import enum
from .envdetect import (
    CUDA_BUILDS,
    choose_torch_build,
    detect_gpu,
    find_base_python,
    find_uv,
    load_requirements,
    python_version,
    torch_build,
)
from .settings_dialog import describe_hello
from .shipped import icon_path

HERE = Path(__file__).resolve().parent
TITLE = "Set up rs-vlm"


class SetupDialog(QDialog):
    """Choose where rs-vlm comes from (internet or a wheelhouse folder), the torch build and the base
    Python; *Install* builds the environment with a progress bar, *Cancel* stops it.

    For scripts and tests: ``wait_detected()``, then set the widgets, ``start()``, ``wait_finished()``
    (the :class:`envsetup.SetupResult`, also in ``result``)."""

    def __init__(self, parent=None, on_engine_changed: Callable[[], None] | None = None,
                 qgis_prefix: str | None = None):
        super().__init__(parent)
        self.setWindowTitle(TITLE)
        self.setWindowIcon(QIcon(icon_path()))
        self.on_engine_changed = on_engine_changed
        self.qgis_prefix = QgsApplication.prefixPath() if qgis_prefix is None else qgis_prefix
        self.requirements = load_requirements(HERE)
        self.envs_root = envsetup.envs_root(settings.profile_dir())
        self.result: envsetup.SetupResult | None = None
        self.installer: envsetup.Installer | None = None
        self._thread: threading.Thread | None = None
        self._events: queue.Queue = queue.Queue()
        self._detected: dict | None = None
        self._close_when_done = False
        self._timer = QTimer(self)
        self._timer.setInterval(100)
        self._timer.timeout.connect(self._poll)

        version = self.requirements.app_version or "(latest)"
        intro = QLabel(
            f"rs-vlm's models run in a Python environment of their own, never inside QGIS. This makes one in "
            f"<code>{self.envs_root}</code> and installs rs-vlm {version} with PyTorch into it (about 3 GB, "
            f"9 GB with a CUDA build). The engine in use now stays until the new one answers.")
        intro.setWordWrap(True)
        self.current = QLabel()
        self.current.setWordWrap(True)
        self._show_current()

        form = QFormLayout()
        self.from_index = QRadioButton("the internet (PyPI, and PyTorch's index for torch)")
        self.from_wheelhouse = QRadioButton("a wheelhouse folder (offline):")
        self.from_index.setChecked(True)
        group = QButtonGroup(self)
        group.addButton(self.from_index)
        group.addButton(self.from_wheelhouse)
        self.wheelhouse = QgsFileWidget()
        self.wheelhouse.setStorageMode(enum("QgsFileWidget.StorageMode.GetDirectory"))
        self.wheelhouse.setToolTip("a folder with rs-vlm's wheel and every wheel it needs, torch included "
                                   "(made with `pip download` on a machine with internet; see docs/qgis.md)")
        self.wheelhouse.fileChanged.connect(lambda *_: self.from_wheelhouse.setChecked(True))
        form.addRow("Install from", self.from_index)
        row = QHBoxLayout()
        row.addWidget(self.from_wheelhouse)
        row.addWidget(self.wheelhouse, 1)
        form.addRow("", row)

        self.build = QComboBox()
        self.build.setToolTip("the PyTorch build: a CUDA build for an NVIDIA GPU, else the CPU build. "
                              "Offline, the wheelhouse's torch wheel decides")
        form.addRow("PyTorch", self.build)
        self.from_wheelhouse.toggled.connect(lambda offline: self.build.setEnabled(not offline and not self.running))
        self.python = QgsFileWidget()
        self.python.setDialogTitle("A Python 3.11+ to create the environment from")
        self.python.setToolTip("the Python the new environment is made from (3.11 or newer); "
                               "with uv, empty lets uv provide one")
        self.python.fileChanged.connect(self._python_changed)
        form.addRow("Base Python", self.python)
        self.python_note = QLabel()
        self.python_note.setWordWrap(True)
        form.addRow("", self.python_note)
        self.tool = QComboBox()
        self.tool.addItem("venv + pip", "pip")
        form.addRow("Installer", self.tool)

        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setValue(0)
        self.status = QLabel("detecting the GPU and Python...")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(enum("Qt.TextInteractionFlag.TextSelectableByMouse"))
        self.details = QPlainTextEdit()
        self.details.setReadOnly(True)
        self.details.setMaximumBlockCount(2000)
        self.details.setVisible(False)
        self.details_button = QPushButton("Details")
        self.details_button.setCheckable(True)
        self.details_button.toggled.connect(self.details.setVisible)

        self.install_button = QPushButton("Install")
        self.install_button.setEnabled(False)
        self.install_button.clicked.connect(self.start)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        self.close_button = QPushButton("Close")
        self.close_button.clicked.connect(self.reject)
        buttons = QHBoxLayout()
        buttons.addWidget(self.details_button)
        buttons.addStretch(1)
        buttons.addWidget(self.install_button)
        buttons.addWidget(self.cancel_button)
        buttons.addWidget(self.close_button)

        layout = QVBoxLayout(self)
        layout.addWidget(intro)
        layout.addWidget(self.current)
        layout.addLayout(form)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addWidget(self.details, 1)
        layout.addLayout(buttons)
        layout.setSizeConstraint(enum("QLayout.SizeConstraint.SetMinimumSize"))  # rows never overlap
        self.details.setMinimumHeight(140)
        self.resize(760, self.sizeHint().height())
        self._detect()

    # -- what this machine has ---------------------------------------------------------------------

    def _detect(self) -> None:
        """GPU, base Python and uv, found in a thread (nvidia-smi and Pythons take a moment)."""
        minimum = self.requirements.python_min

        def target():
            found = {"gpu": None, "python": ("", None), "uv": ""}
            try:
                found["gpu"] = detect_gpu()
                found["python"] = find_base_python(minimum)
                found["uv"] = find_uv()
            finally:
                self._detected = found

        threading.Thread(target=target, daemon=True, name="rsvlm-setup-detect").start()
        self._timer.start()

    def _apply_detected(self, found: dict) -> None:
        auto = choose_torch_build(found["gpu"])
        self.build.addItem(f"{auto.tag} ({auto.why})", auto.tag)
        for tag in ["cpu"] + [t for t, _ in CUDA_BUILDS]:
            if tag != auto.tag:
                self.build.addItem(tag if tag == "cpu" else f"{tag} (CUDA {'.'.join(map(str, dict(CUDA_BUILDS)[tag]))})",
                                   tag)
        python, _version = found["python"]
        if python and not self.python.filePath():
            self.python.setFilePath(python)
        if found["uv"]:
            self.tool.insertItem(0, f"uv ({found['uv']})", "uv")
            self.tool.setCurrentIndex(0)
            self.uv = found["uv"]
        else:
            self.uv = ""
        self._python_changed()
        self.install_button.setEnabled(True)
        self.status.setText("ready to install")

    def _python_changed(self, *_args) -> None:
        path = self.python.filePath().strip()
        if not path:
            self.python_note.setText("<small>none found: choose a Python 3.11+, or install uv</small>")
            return
        version = python_version(path)
        if version is None:
            self.python_note.setText("<small>this is not a Python that can create environments</small>")
        else:
            self.python_note.setText(f"<small>Python {version[0]}.{version[1]}</small>")

    def _show_current(self) -> None:
        config = settings.load_config()
        if config.python:
            self.current.setText(f"<small>Engine in use: {config.python}</small>")
        else:
            self.current.setText("<small>No engine is set up yet.</small>")

    # -- running -----------------------------------------------------------------------------------

    def plan(self) -> envsetup.SetupPlan:
        """The plan the widgets describe; SetupError (step "check") for an incomplete form."""
        offline = self.from_wheelhouse.isChecked()
        wheelhouse = self.wheelhouse.filePath().strip() if offline else ""
        if offline and not wheelhouse:
            raise envsetup.SetupError(envsetup.STEP_CHECK, "choose the wheelhouse folder (or install from the internet)")
        tag = self.build.currentData() or "cpu"
        auto = self.build.itemData(0)
        build = choose_torch_build(self._detected["gpu"]) if tag == auto and self._detected else torch_build(tag)
        tool = self.tool.currentData() or "pip"
        return envsetup.SetupPlan(
            envs_root=self.envs_root, requirements=self.requirements, torch=build, tool=tool,
            uv=getattr(self, "uv", "") if tool == "uv" else "", base_python=self.python.filePath().strip(),
            wheelhouse=wheelhouse, qgis_prefix=self.qgis_prefix)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Begin the set-up in a background thread."""
        if self.running:
            return
        try:
            plan = self.plan()
        except envsetup.SetupError as exc:
            self._show_error(str(exc))
            return
        self.result = None
        self.details.clear()
        self.progress.setValue(0)
        self.installer = envsetup.Installer(plan, self._events.put)
        installer = self.installer

        def target():
            try:
                outcome = installer.run()
            except Exception as exc:  # never let a plugin bug pass silently or crash QGIS
                outcome = envsetup.SetupResult("error", f"set-up failed: rs-vlm plugin error: {exc}")
            self._events.put(outcome)

        self._thread = threading.Thread(target=target, daemon=True, name="rsvlm-setup")
        self._set_running(True)
        self.status.setText("starting...")
        self._thread.start()
        self._timer.start()

    def cancel(self) -> None:
        if self.installer is not None and self.running:
            self.status.setText("cancelling...")
            self.installer.cancel()

    def reject(self) -> None:
        """Close; a running set-up is cancelled first and the dialog closes when it stopped."""
        if self.running:
            self._close_when_done = True
            self.cancel()
            return
        super().reject()

    def _set_running(self, running: bool) -> None:
        self.install_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)
        for widget in (self.from_index, self.from_wheelhouse, self.wheelhouse, self.python, self.tool):
            widget.setEnabled(not running)
        self.build.setEnabled(not running and not self.from_wheelhouse.isChecked())

    def _poll(self) -> None:
        if self._detected is not None and self.build.count() == 0:
            self._apply_detected(self._detected)
        while True:
            try:
                item = self._events.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, envsetup.SetupResult):
                self._finished(item)
            elif item.kind == "step":
                number = self.installer.steps.index(item.step) + 1 if self.installer else 0
                self.status.setText(f"step {number} of {len(self.installer.steps)}: {item.step}...")
                self.progress.setValue(int(1000 * item.fraction))
            elif item.kind == "progress":
                self.progress.setValue(max(self.progress.value(), int(1000 * item.fraction)))
            elif item.kind == "line":
                self.details.appendPlainText(item.text)
        if not self.running and self._detected is not None and self._events.empty():
            self._timer.stop()

    def _finished(self, result: envsetup.SetupResult) -> None:
        self.result = result
        self._set_running(False)
        if result.ok:
            summary = describe_hello(result.hello)
            settings.record_engine(result.python, result.env_dir, summary)
            self.progress.setValue(1000)
            text = f"✔ {result.message}<br><small>{summary}</small>"
            if result.warning:
                text += f"<br><span style='color:#9a6700'>⚠ {result.warning}</span>"
            self.status.setText(text)
            self._show_current()
            if self.on_engine_changed is not None:
                self.on_engine_changed()
            keep = [Path(result.env_dir)]
            threading.Thread(target=envsetup.prune_envs, args=(self.envs_root, keep), daemon=True,
                             name="rsvlm-setup-prune").start()
        elif result.status == "cancelled":
            self.progress.setValue(0)
            self.status.setText(f"{result.message}. {self._unchanged()}")
        else:
            self._show_error(result.message)
        if self._close_when_done:
            super().reject()

    def _show_error(self, message: str) -> None:
        self.status.setText(f"<span style='color:#b00020'>✖ {message}</span><br><small>{self._unchanged()}</small>")

    def _unchanged(self) -> str:
        python = settings.load_config().python
        return f"The engine in use is unchanged: {python}" if python else "No engine was recorded."

    # -- for scripts and tests ---------------------------------------------------------------------

    def wait_detected(self, timeout: float = 60.0) -> bool:
        return _process_until(lambda: self.build.count() > 0, timeout)

    def wait_finished(self, timeout: float = 1800.0) -> envsetup.SetupResult | None:
        _process_until(lambda: self.result is not None, timeout)
        return self.result

    def status_text(self) -> str:
        """The status line as plain text."""
        from qgis.PyQt.QtGui import QTextDocument

        doc = QTextDocument()
        doc.setHtml(self.status.text())
        return doc.toPlainText()


def _process_until(predicate: Callable[[], bool], timeout: float) -> bool:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        QgsApplication.processEvents()
        if predicate():
            return True
        time.sleep(0.05)
    QgsApplication.processEvents()
    return bool(predicate())


class SetupEntry:
    """The plugin's way into the dialog: a "Set up rs-vlm..." action, and a message-bar offer at
    start-up when no engine is configured."""

    def __init__(self, iface, on_engine_changed: Callable[[], None] | None = None):
        self.iface = iface
        self.on_engine_changed = on_engine_changed
        self.dialog: SetupDialog | None = None
        self.offer = None
        self.action = QAction(QIcon(icon_path()), "Set up rs-vlm...", iface.mainWindow())
        self.action.setToolTip("create rs-vlm's own Python environment and install it (no terminal needed)")
        self.action.triggered.connect(self.open)

    def offer_if_needed(self) -> bool:
        """Show the offer when no engine is configured; True when it was shown."""
        if settings.load_config().python:
            return False
        bar = self.iface.messageBar()
        item = QgsMessageBar.createMessage(
            "rs-vlm", "no rs-vlm engine is set up yet: its models run in a Python environment of their own")
        button = QPushButton("Set up rs-vlm...")
        button.clicked.connect(self.open)
        item.layout().addWidget(button)
        self.offer = bar.pushWidget(item, Qgis.MessageLevel.Warning)
        return True

    def open(self) -> SetupDialog:
        """Show the dialog (one at a time) and return it."""
        if self.offer is not None:
            with contextlib.suppress(RuntimeError):  # already closed by the user
                self.iface.messageBar().popWidget(self.offer)
            self.offer = None
        if self.dialog is None:
            self.dialog = SetupDialog(self.iface.mainWindow(), on_engine_changed=self._changed)
            self.dialog.finished.connect(self._closed)
        self.dialog.show()
        self.dialog.raise_()
        return self.dialog

    def _changed(self) -> None:
        if self.on_engine_changed is not None:
            self.on_engine_changed()

    def _closed(self, *_args) -> None:
        dialog, self.dialog = self.dialog, None
        if dialog is not None:
            dialog.deleteLater()

    def unload(self) -> None:
        if self.dialog is not None:
            if self.dialog.running:
                self.dialog.cancel()
            self.dialog.close()
            self.dialog = None
