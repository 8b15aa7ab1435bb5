"""Tools › Fine-tune…: choose data, recipe, model and options, run the "fine-tune" job, watch its curves.

The curves come from the run folder's own logs (gui/run_watch.py), so File › Open run… watches a
run started from ``rsvlm train`` exactly as one started here, and Resume continues it with its own
settings (run.json). Stop is resumable: the run writes a checkpoint and the next start continues.
When a run has finished, "Use this model" hands its model to the main window's model picker.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PyQt6.QtCore import pyqtSignal
from PyQt6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMainWindow,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from rs_vlm_app.errors import UserError
from rs_vlm_app.gui.background import problem_text, run_in_background
from rs_vlm_app.gui.curves import CurvesWidget
from rs_vlm_app.gui.jobs import DONE, FAILED, Job, JobManager
from rs_vlm_app.gui.panels import MessageBar
from rs_vlm_app.gui.run_watch import RunWatch

ARCHITECTURES = ["ViT-B-32", "ViT-B-16", "ViT-L-14", "RN50", "coca_ViT-B-32", "coca_ViT-L-14"]
INITS = ["none", "openai", "laion2b_s34b_b79k", "laion2b_s13b_b90k"]
RECIPES_DEFAULT = ""  # "(recipe's or default)" entries carry this value


class TrainingWindow(QMainWindow):
    """The fine-tuning form, Start / Stop / Resume, live curves, and "Use this model"."""

    use_model = pyqtSignal(object)   # rs_vlm_app.training.rundir.RunInfo of a finished run

    def __init__(self, jobs: JobManager, parent=None):
        super().__init__(parent)
        self.jobs = jobs
        self.setWindowTitle("Fine-tune — rs-vlm")
        self.resize(1250, 860)
        self.job: Job | None = None
        self.base_spec: dict[str, Any] = {}   # an opened run's own settings (the form goes over them)
        #: further fine-tune spec fields (log_every, warmup, workers, ...) for runs started here
        self.extra: dict[str, Any] = {}
        self._checking = False
        self.watch = RunWatch(self)
        self.watch.curves_changed.connect(self._curves_changed)
        self.watch.info_changed.connect(lambda _info: self._update_buttons())
        self._build()
        self.jobs.job_changed.connect(self._job_changed)
        self.jobs.job_finished.connect(self._job_finished)

    # -- layout ----------------------------------------------------------------------------------------------
    def _build(self) -> None:
        central = QWidget()
        column = QVBoxLayout(central)
        self.messages = MessageBar()
        column.addWidget(self.messages)
        split = QSplitter()
        form_box = QWidget()
        form = QFormLayout(form_box)
        self.task = QComboBox()
        self.task.addItem("CLIP (contrastive)", "clip")
        self.task.addItem("CoCa (captions + contrastive)", "coca")
        form.addRow("Model type", self.task)
        self.data = QLineEdit()
        self.data.setPlaceholderText("caption CSV (filepath,caption) or WebDataset shards")
        form.addRow("Training data", _path_row(self.data, [("CSV…", "file", "Caption CSV (*.csv *.tsv)"),
                                                         ("Shards…", "folder", "")]))
        self.recipe = QComboBox()
        self.recipe.addItem("(none: defaults)", RECIPES_DEFAULT)
        try:
            from rs_vlm_app.training.recipes import list_recipes

            for name, description in list_recipes().items():
                self.recipe.addItem(name, name)
                self.recipe.setItemData(self.recipe.count() - 1, description, 3)  # tooltip role
        except (OSError, UserError):
            pass
        form.addRow("Recipe", self.recipe)
        self.arch = QComboBox()
        self.arch.setEditable(True)
        self.arch.addItems(["", *ARCHITECTURES])
        self.arch.lineEdit().setPlaceholderText("recipe's or ViT-B-32")
        form.addRow("Architecture", self.arch)
        self.model_config = QLineEdit()
        self.model_config.setPlaceholderText("or your own open_clip model config (.json)")
        form.addRow("Model config", _path_row(self.model_config, [("Browse…", "file", "JSON (*.json)")]))
        self.init = QComboBox()
        self.init.setEditable(True)
        self.init.addItems(["", *INITS])
        self.init.lineEdit().setPlaceholderText("recipe's: none, openai, a pretrained tag or a checkpoint file")
        form.addRow("Initial weights", _path_row(self.init.lineEdit(), [("File…", "file",
                                                                        "Weights (*.safetensors *.pt *.pth *.bin)")],
                                                 widget=self.init))
        self.epochs = _optional_spin(1, 1000)
        form.addRow("Epochs", self.epochs)
        self.batch_size = _optional_spin(1, 65536)
        form.addRow("Batch size", self.batch_size)
        self.lora = _optional_spin(1, 1024, "off")
        form.addRow("LoRA rank", self.lora)
        self.lock_image = QCheckBox("Lock the image tower (train the text side only)")
        form.addRow("", self.lock_image)
        validation = QGroupBox("Validation (after every epoch)")
        vform = QFormLayout(validation)
        self.val_data = QLineEdit()
        self.val_data.setPlaceholderText("caption CSV: retrieval recall, validation loss")
        vform.addRow("Retrieval", _path_row(self.val_data, [("CSV…", "file", "CSV (*.csv *.tsv)")]))
        self.val_zeroshot = QLineEdit()
        self.val_zeroshot.setPlaceholderText("filepath,label CSV: zero-shot accuracy")
        vform.addRow("Zero-shot", _path_row(self.val_zeroshot, [("CSV…", "file", "CSV (*.csv)")]))
        self.val_selo = QLineEdit()
        self.val_selo.setPlaceholderText("AIR-SLT folder (imgs/, annotations/anno.json): SeLo Rsu, Ras, Rda, Rmi")
        vform.addRow("SeLo", _path_row(self.val_selo, [("Folder…", "folder", "")]))
        form.addRow(validation)
        self.device = QComboBox()
        for label, value in (("Auto", "auto"), ("CPU", "cpu"), ("CUDA GPU", "cuda")):
            self.device.addItem(label, value)
        form.addRow("Device", self.device)
        self.out = QLineEdit()
        self.out.setPlaceholderText("the run folder (new or empty; or a run to continue)")
        form.addRow("Run folder", _path_row(self.out, [("Browse…", "folder", "")]))
        buttons = QHBoxLayout()
        self.start_button = QPushButton("Start")
        self.start_button.setStyleSheet("QPushButton { font-weight: 600; padding: 4px 14px; }")
        self.start_button.clicked.connect(lambda: self.start())
        self.stop_button = QPushButton("Stop")
        self.stop_button.setToolTip("Stop after the current step; a checkpoint is written and Resume continues")
        self.stop_button.clicked.connect(self.stop)
        self.resume_button = QPushButton("Resume")
        self.resume_button.clicked.connect(lambda: self.start(resume=True))
        self.open_button = QPushButton("Open run…")
        self.open_button.clicked.connect(self._open_dialog)
        self.use_button = QPushButton("Use this model")
        self.use_button.setToolTip("Put the finished run's model in the main window's model list")
        self.use_button.clicked.connect(self._use_model)
        for widget in (self.start_button, self.stop_button, self.resume_button, self.open_button, self.use_button):
            buttons.addWidget(widget)
        form.addRow(buttons)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(form_box)
        split.addWidget(scroll)
        right = QWidget()
        rcol = QVBoxLayout(right)
        rcol.setContentsMargins(0, 0, 0, 0)
        self.status = QLabel("No run yet.")
        self.status.setWordWrap(True)
        self.bar = QProgressBar()
        self.curves = CurvesWidget()
        rcol.addWidget(self.status)
        rcol.addWidget(self.bar)
        rcol.addWidget(self.curves, 1)
        split.addWidget(right)
        split.setSizes([480, 770])
        column.addWidget(split, 1)
        self.setCentralWidget(central)
        self._update_buttons()

    def _update_buttons(self) -> None:
        running = self.job is not None and not self.job.finished_state
        info = self.watch.info
        self.start_button.setEnabled(not running and not self._checking)
        self.stop_button.setEnabled(running)
        self.resume_button.setEnabled(not running and not self._checking and info is not None and not info.finished)
        self.use_button.setEnabled(info is not None and info.finished and info.model is not None)
        self.open_button.setEnabled(not running)

    # -- the form --------------------------------------------------------------------------------------------
    def set_data(self, path: str) -> None:
        """Train on ``path`` (a caption CSV or shards), e.g. what the dataset window just exported."""
        self.data.setText(str(path))
        if not self.out.text().strip():
            self.out.setText(str(Path(path).parent.parent / "runs" / "run1" if Path(path).parent.name == "export"
                                 else Path(path).parent / "run1"))
        self.messages.show_message(f"Training data: {path}", "info")

    def spec(self, resume: bool = False) -> dict[str, Any]:
        """The fine-tune job spec of the form (fields left at "recipe's" are not set)."""
        spec: dict[str, Any] = {**self.base_spec, **self.extra, "kind": "fine-tune", "task": self.task.currentData(),
                                "data": self.data.text().strip(), "out": self.out.text().strip()}
        recipe = self.recipe.currentData()
        texts = {"recipe": recipe or None, "arch": self.arch.currentText().strip() or None,
                 "model_config": self.model_config.text().strip() or None,
                 "init": self.init.currentText().strip() or None,
                 "val_data": self.val_data.text().strip() or None,
                 "val_zeroshot": self.val_zeroshot.text().strip() or None,
                 "val_selo": self.val_selo.text().strip() or None}
        for key, value in texts.items():
            if value is not None:
                spec[key] = value
            elif key not in self.base_spec or key in ("val_data", "val_zeroshot", "val_selo"):
                spec.pop(key, None)
        for key, spin in (("epochs", self.epochs), ("batch_size", self.batch_size)):
            if spin.value() > spin.minimum():
                spec[key] = spin.value()
        if self.lora.value() > self.lora.minimum():
            spec["lora_rank"] = self.lora.value()
        elif "lora_rank" in spec or self.base_spec:
            spec["lora_rank"] = 0
        if self.lock_image.isChecked() or "lock_image" in spec:
            spec["lock_image"] = self.lock_image.isChecked()
        spec["device"] = self.device.currentData()
        if resume:
            spec["resume"] = True
        else:
            spec.pop("resume", None)
        return spec

    def fill_from_config(self, config: dict[str, Any]) -> None:
        """Show a run's TrainConfig settings (run.json) in the form."""
        self.task.setCurrentIndex(max(0, self.task.findData(config.get("task"))))
        self.data.setText(str(config.get("data") or ""))
        self.out.setText(str(config.get("output_dir") or ""))
        self.recipe.setCurrentIndex(max(0, self.recipe.findData(config.get("recipe") or RECIPES_DEFAULT)))
        self.arch.setCurrentText("" if config.get("model_config") else str(config.get("model") or ""))
        self.model_config.setText(str(config.get("model_config") or ""))
        self.init.setCurrentText(str(config.get("init") or ""))
        self.epochs.setValue(int(config.get("epochs") or 0))
        self.batch_size.setValue(int(config.get("batch_size") or 0))
        self.lora.setValue(int(config.get("lora_rank") or 0))
        self.lock_image.setChecked(bool(config.get("lock_image")))
        for edit, key in ((self.val_data, "val_data"), (self.val_zeroshot, "val_zeroshot"), (self.val_selo, "val_selo")):
            edit.setText(str(config.get(key) or ""))
        self.device.setCurrentIndex(max(0, self.device.findData(config.get("device") or "auto")))

    # -- running ------------------------------------------------------------------------------------------------
    def start(self, resume: bool = False) -> None:
        """Check the spec (data, weights, the run folder) in the background, then run it; a problem is
        one message and nothing starts."""
        spec = self.spec(resume)
        if not spec["data"]:
            self.messages.show_message("Choose the training data (a caption CSV or shards).", "error")
            return
        if not spec["out"]:
            self.messages.show_message("Choose the run folder.", "error")
            return

        def check():
            from rs_vlm_app.jobs.specs import spec_from_dict

            spec_from_dict(spec).check()
            return spec

        self._checking = True
        self._update_buttons()
        self.status.setText("Checking the data, the weights and the run folder…")
        run_in_background(check, self._submit, self._check_failed)

    def _check_failed(self, exc: Exception) -> None:
        self._checking = False
        self.status.setText("Not started.")
        self.messages.show_message(f"{problem_text(exc)}. Nothing was started.", "error")
        self._update_buttons()

    def _submit(self, spec: dict[str, Any]) -> None:
        self._checking = False
        self.job = self.jobs.submit(spec, title=f"fine-tune {Path(spec['out']).name}", interactive=False)
        self.curves.clear()
        self.watch.watch(Path(spec["out"]))
        self.status.setText("Starting the worker…")
        self.messages.show_message(f"{'Resuming' if spec.get('resume') else 'Training'} into {spec['out']}.", "info")
        self._update_buttons()

    def stop(self) -> None:
        if self.job is not None and not self.job.finished_state:
            self.jobs.cancel(self.job)
            self.messages.show_message("Stopping after the current step; a checkpoint is written. Resume continues.",
                                       "info")

    def open_run(self, run_dir: Path) -> bool:
        """Watch a run folder (started here or by ``rsvlm train``): its settings fill the form."""
        from rs_vlm_app.jobs.kinds.fine_tune import FineTuneSpec
        from rs_vlm_app.training.config import TrainConfig
        from rs_vlm_app.training.rundir import describe_run

        try:
            info = describe_run(Path(run_dir))
            self.base_spec = FineTuneSpec.from_train_config(TrainConfig.from_dict(info.config)).to_dict()
        except (UserError, TypeError, ValueError) as exc:
            self.messages.show_message(f"{problem_text(exc) if isinstance(exc, UserError) else f'{run_dir}: {exc}'}. "
                                       "Nothing was opened.", "error")
            return False
        self.fill_from_config(info.config)
        self.curves.clear()
        self.watch.watch(Path(run_dir))
        state = "finished" if info.finished else "not finished (Resume continues it)"
        self.messages.show_message(f"Opened the {info.task.upper()} run {run_dir}: {state}.", "info")
        self._show_info()
        self._update_buttons()
        return True

    def _open_dialog(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open a run folder", self.out.text())
        if folder:
            self.open_run(Path(folder))

    def _use_model(self) -> None:
        info = self.watch.info
        if info is not None and info.finished and info.model is not None:
            self.use_model.emit(info)

    def _curves_changed(self, curves: dict) -> None:
        self.curves.set_curves(curves)
        self._show_info()

    def _show_info(self) -> None:
        from rs_vlm_app.reporting import format_duration

        job, info = self.job, self.watch.info
        steps = max((p[-1][0] for p in self.watch.curves.values() if p), default=0)
        if job is not None and not job.finished_state and job.total:
            self.bar.setRange(0, job.total)
            self.bar.setValue(job.done)
            eta = f" · {format_duration(job.eta)} left" if job.eta else ""
            self.status.setText(f"{job.stage or 'training'}: step {job.done} of {job.total}{eta}")
        elif info is not None and info.finished:
            self.bar.setRange(0, 1)
            self.bar.setValue(1)
            self.status.setText(f"Finished: {info.steps} steps; model {info.model}")
        elif info is not None:
            self.status.setText(f"Run {info.run_dir}: logged up to step {steps}")

    def _job_changed(self, job: Job) -> None:
        if job is self.job:
            self._show_info()
            self._update_buttons()

    def _job_finished(self, job: Job) -> None:
        if job is not self.job:
            return
        self.watch.refresh()
        if job.state == DONE and job.result is not None:
            summary = job.result.summary
            if summary.get("finished"):
                self.messages.show_message(f"Finished {summary.get('steps')} steps. “Use this model” puts it in the "
                                           "main window's model list.", "success")
            else:
                self.messages.show_message(f"Stopped at step {summary.get('steps')} of {summary.get('total_steps')}; "
                                           "Resume continues.", "info")
        elif job.state == FAILED:
            self.messages.show_message(f"Training failed: {job.error}", "error")
        else:
            self.messages.show_message("Stopped; the last checkpoint is kept. Resume continues from it.", "info")
        self._show_info()
        self._update_buttons()


def _optional_spin(minimum: int, maximum: int, unset: str = "recipe's") -> QSpinBox:
    """A spin box whose lowest value means "not set" (the recipe's, or the default)."""
    spin = QSpinBox()
    spin.setRange(minimum - 1, maximum)
    spin.setSpecialValueText(unset)
    spin.setValue(minimum - 1)
    return spin


def _path_row(edit: QLineEdit, browsers: list[tuple[str, str, str]], widget: QWidget | None = None) -> QWidget:
    box = QWidget()
    row = QHBoxLayout(box)
    row.setContentsMargins(0, 0, 0, 0)
    row.addWidget(widget or edit, 1)
    for label, kind, filters in browsers:
        button = QPushButton(label)
        button.clicked.connect(lambda _c=False, k=kind, f=filters, t=label: _browse(edit, k, f, t))
        row.addWidget(button)
    return box


def _browse(edit: QLineEdit, kind: str, filters: str, title: str) -> None:
    if kind == "folder":
        path = QFileDialog.getExistingDirectory(edit, title, edit.text())
    else:
        path, _ = QFileDialog.getOpenFileName(edit, title, edit.text(), filters + ";;All files (*)")
    if path:
        edit.setText(path)
