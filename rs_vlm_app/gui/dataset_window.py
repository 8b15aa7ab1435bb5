"""Tools › Build dataset…: configure an MpGI build, run it as a job, watch what it produces.

A front end over the job kinds "dataset-build" and "dataset-export" (a worker process of their own,
through the JobManager): the window writes the form's configuration as the YAML ``rsvlm dataset
build`` reads (``DATASET/build.yaml``), runs it, and reads the build's manifest once a second for the
progress, the latest captions and the failures (rs_vlm_app.mpgi.browse, rs_vlm_app.mpgi.status).
Stop leaves a resumable build; Start again resumes it.
"""

from __future__ import annotations

import html
import time
from pathlib import Path
from typing import Any

from PyQt6.QtCore import QSize, Qt, QTimer, pyqtSignal
from PyQt6.QtGui import QFontDatabase, QIcon, QPixmap
from PyQt6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMainWindow,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSplitter,
    QTabWidget,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from rs_vlm_app.errors import UserError
from rs_vlm_app.gui.background import problem_text, run_in_background
from rs_vlm_app.gui.dataset_form import DatasetForm, source_label, source_object
from rs_vlm_app.gui.jobs import DONE, FAILED, Job, JobManager
from rs_vlm_app.gui.panels import MessageBar

CONFIG_NAME = "build.yaml"
GALLERY_SIZE = 12
THUMB = 150
VERDICT_COLOURS = {"keep": "#1b5e20", "flag": "#8a6d00", "drop": "#9b1c1c"}


class DatasetWindow(QMainWindow):
    """The dataset build's form, its progress, its gallery of captions, its failures, its exports."""

    train_requested = pyqtSignal(str)   # a caption CSV (or WebDataset folder) to fine-tune on

    def __init__(self, jobs: JobManager, parent=None):
        super().__init__(parent)
        self.jobs = jobs
        self.setWindowTitle("Build a dataset — rs-vlm")
        self.resize(1200, 860)
        self.job: Job | None = None
        self.export_job: Job | None = None
        self.config_path: Path | None = None
        self.manifest_path: Path | None = None
        self.last_export: Path | None = None
        self._train_after_export = False
        self._history: list[tuple[float, int]] = []
        self._thumbs: dict[str, QIcon] = {}
        self._checking = False
        self._reading = self._reread = False
        self.reads = 0  # manifest reads shown so far
        self._build()
        self.jobs.job_changed.connect(self._job_changed)
        self.jobs.job_finished.connect(self._job_finished)
        self.timer = QTimer(self)
        self.timer.setInterval(1000)
        self.timer.timeout.connect(self.refresh)

    # -- layout ------------------------------------------------------------------------------------------
    def _build(self) -> None:
        central = QWidget()
        column = QVBoxLayout(central)
        self.messages = MessageBar()
        column.addWidget(self.messages)
        buttons = QHBoxLayout()
        self.load_button = QPushButton("Load…")
        self.load_button.clicked.connect(self._load_dialog)
        self.save_button = QPushButton("Save…")
        self.save_button.clicked.connect(self._save_dialog)
        self.start_button = QPushButton("Start")
        self.start_button.setStyleSheet("QPushButton { font-weight: 600; padding: 4px 14px; }")
        self.start_button.clicked.connect(self.start)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setToolTip("Stop at the next image; finished work is kept and Start resumes")
        self.stop_button.clicked.connect(self.stop)
        self.export_format = QComboBox()
        for label, value in (("open_clip CSV", "csv"), ("WebDataset shards", "wds"), ("JSON Lines (everything)", "jsonl")):
            self.export_format.addItem(label, value)
        self.export_button = QPushButton("Export")
        self.export_button.clicked.connect(lambda: self.export(self.export_format.currentData()))
        self.train_button = QPushButton("Fine-tune on it…")
        self.train_button.setToolTip("Open the training window with this dataset's captions (exported as CSV first)")
        self.train_button.clicked.connect(self.train_on_it)
        for widget in (self.load_button, self.save_button, self.start_button, self.stop_button):
            buttons.addWidget(widget)
        buttons.addStretch(1)
        for widget in (self.export_format, self.export_button, self.train_button):
            buttons.addWidget(widget)
        column.addLayout(buttons)

        self.tabs = QTabWidget()
        self.form = DatasetForm()
        self.form.problem.connect(lambda text: self.messages.show_message(text, "error"))
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(self.form)
        self.tabs.addTab(scroll, "Configuration")
        self.tabs.addTab(self._progress_tab(), "Progress")
        column.addWidget(self.tabs, 1)
        self.setCentralWidget(central)
        self._update_buttons()

    def _progress_tab(self) -> QWidget:
        tab = QWidget()
        column = QVBoxLayout(tab)
        self.summary = QLabel("Not started.")
        self.summary.setWordWrap(True)
        self.summary.setStyleSheet("font-size: 11pt;")
        column.addWidget(self.summary)
        self.bar = QProgressBar()
        column.addWidget(self.bar)
        split = QSplitter(Qt.Orientation.Horizontal)
        self.gallery = QListWidget()
        self.gallery.setViewMode(QListWidget.ViewMode.IconMode)
        self.gallery.setIconSize(QSize(THUMB, THUMB))
        self.gallery.setGridSize(QSize(THUMB + 70, THUMB + 92))
        self.gallery.setWordWrap(True)
        self.gallery.setResizeMode(QListWidget.ResizeMode.Adjust)
        self.gallery.setMovement(QListWidget.Movement.Static)
        self.gallery.setUniformItemSizes(True)
        self.gallery.currentItemChanged.connect(lambda item, _old: self.show_image(item.data(Qt.ItemDataRole.UserRole))
                                                if item is not None else None)
        split.addWidget(self.gallery)
        self.detail = QTextBrowser()
        self.detail.setPlaceholderText("Click an image to read every perspective and the integrated captions.")
        split.addWidget(self.detail)
        split.setSizes([640, 460])
        vertical = QSplitter(Qt.Orientation.Vertical)
        vertical.addWidget(split)
        self.failures = QPlainTextEdit()
        self.failures.setReadOnly(True)
        self.failures.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.failures.setPlaceholderText("Failures and input problems (what `rsvlm dataset status` prints)")
        vertical.addWidget(self.failures)
        vertical.setSizes([560, 160])
        column.addWidget(vertical, 1)
        return tab

    def _update_buttons(self) -> None:
        running = self.job is not None and not self.job.finished_state
        exporting = self.export_job is not None and not self.export_job.finished_state
        has_manifest = self.manifest_path is not None and self.manifest_path.is_file()
        self.start_button.setEnabled(not running and not self._checking)
        self.start_button.setText("Resume" if has_manifest and not running else "Start")
        self.stop_button.setEnabled(running)
        self.load_button.setEnabled(not running)
        self.export_button.setEnabled(has_manifest and not running and not exporting)
        self.train_button.setEnabled(has_manifest and not running and not exporting)

    # -- configuration files -------------------------------------------------------------------------------
    def load_file(self, path: Path) -> bool:
        """Fill the form from a build YAML; a mistake in it is one message, the form unchanged."""
        from rs_vlm_app.mpgi.config import load_config

        try:
            config = load_config(Path(path))
        except UserError as exc:
            self.messages.show_message(f"{exc}. Nothing was loaded.", "error")
            return False
        self.form.load_dict(config.to_dict())
        self.config_path = Path(path)
        self.manifest_path = config.manifest_path
        self.messages.show_message(f"Loaded {path}.", "info")
        self.timer.start()  # a build of it running elsewhere (`rsvlm dataset build`) is watched too
        self.refresh()
        self._update_buttons()
        return True

    def save_file(self, path: Path) -> bool:
        """Write the form as a build YAML (checked first; a mistake is one message, nothing written)."""
        import yaml

        from rs_vlm_app.atomic import write_text_atomic

        config = self._checked_config(Path(path))
        if config is None:
            return False
        write_text_atomic(path, yaml.safe_dump(self.form.config_dict(), sort_keys=False, allow_unicode=True))
        self.config_path = Path(path)
        self.messages.show_message(f"Saved {path}. Run it with: rsvlm dataset build {path}", "success")
        return True

    def _checked_config(self, origin: Path | str = "the form"):
        from rs_vlm_app.mpgi.config import BuildConfig
        from rs_vlm_app.mpgi.plan import load_plan

        data = self.form.config_dict()
        if not data.get("output"):
            self.messages.show_message("Choose the dataset folder first.", "error")
            return None
        try:
            config = BuildConfig.from_dict(data, origin=origin)
            load_plan(config)
        except UserError as exc:
            self.messages.show_message(f"{exc}. Nothing was started.", "error")
            return None
        return config

    def _load_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Load a build configuration", "", "YAML (*.yaml *.yml);;All files (*)")
        if path:
            self.load_file(Path(path))

    def _save_dialog(self) -> None:
        start = str(self.config_path or Path(self.form.output.text() or ".") / CONFIG_NAME)
        path, _ = QFileDialog.getSaveFileName(self, "Save the build configuration", start, "YAML (*.yaml *.yml)")
        if path:
            self.save_file(Path(path))

    # -- running --------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Check the configuration, the sources and the backends (in the background), then run the
        build as a job. Any problem is one message, and nothing starts."""
        config = self._checked_config()
        if config is None:
            return
        for data, count in self.form.source_counts():
            if count == 0:
                self.messages.show_message(f"{source_label(data)}: no images found in this source. Nothing was started.",
                                           "error")
                return
        self._checking = True
        self._update_buttons()
        self.summary.setText("Checking the sources and the backends…")
        sources = [dict(d) for d in self.form.source_dicts()]

        def preflight():
            from rs_vlm_app.mpgi.backends.probe import probe_backend
            from rs_vlm_app.mpgi.browse import count_images

            for data in sources:
                if count_images(source_object(data), cap=1)[0] == 0:
                    raise UserError(f"{source_label(data)}: no images found in this source")
            for name in sorted(set(config.stage_backends().values())):
                probe_backend(name, config.backends[name])
            return config

        run_in_background(preflight, self._submit, self._preflight_failed)

    def _preflight_failed(self, exc: Exception) -> None:
        self._checking = False
        self.summary.setText("Not started.")
        self.messages.show_message(f"{problem_text(exc)}. Nothing was started.", "error")
        self._update_buttons()

    def _submit(self, config) -> None:
        import yaml

        from rs_vlm_app.atomic import write_text_atomic

        self._checking = False
        path = config.output / CONFIG_NAME
        try:
            config.output.mkdir(parents=True, exist_ok=True)
            write_text_atomic(path, yaml.safe_dump(self.form.config_dict(), sort_keys=False, allow_unicode=True))
        except OSError as exc:
            self._preflight_failed(UserError(f"cannot write the configuration ({exc.strerror})", path=path))
            return
        self.config_path = path
        self.manifest_path = config.manifest_path
        resuming = self.manifest_path.is_file()
        self.job = self.jobs.submit({"kind": "dataset-build", "config": str(path)},
                                    title=f"dataset build {config.output.name}", interactive=False)
        self._history = []
        self.tabs.setCurrentIndex(1)
        self.messages.show_message(f"{'Resuming' if resuming else 'Building'} {config.output} "
                                   f"(configuration: {path}).", "info")
        self.timer.start()
        self.refresh()
        self._update_buttons()

    def stop(self) -> None:
        if self.job is not None and not self.job.finished_state:
            self.jobs.cancel(self.job)
            self.messages.show_message("Stopping at the next image; finished work is kept. Resume continues.", "info")

    def export(self, fmt: str) -> Job | None:
        """Export the built captions (a job of its own); the file's path is shown when done."""
        if self.manifest_path is None or not self.manifest_path.is_file():
            self.messages.show_message("Nothing to export yet: build the dataset first.", "warning")
            return None
        self.export_job = self.jobs.submit({"kind": "dataset-export", "dataset": str(self.manifest_path.parent),
                                            "format": fmt}, title=f"export {self.manifest_path.parent.name} ({fmt})",
                                           interactive=False)
        self._update_buttons()
        return self.export_job

    def train_on_it(self) -> None:
        """Send the latest CSV or WebDataset export to the training window (exporting a CSV first if none)."""
        if self.last_export is not None and self.last_export.exists() and not str(self.last_export).endswith(".jsonl"):
            self.train_requested.emit(str(self.last_export))
            return
        self._train_after_export = True
        self.export("csv")

    def _job_changed(self, job: Job) -> None:
        if job is self.job or job is self.export_job:
            self._update_buttons()

    def _job_finished(self, job: Job) -> None:
        if job is self.export_job:
            self._export_finished(job)
        if job is not self.job:
            return
        self.timer.stop()
        self.refresh()
        if job.state == DONE and job.result is not None:
            summary = job.result.summary
            level = "success" if summary.get("status") == "completed" else "warning"
            self.messages.show_message(
                f"Build {summary.get('status', 'done')}: {summary.get('complete_images', '?')} of "
                f"{summary.get('images', '?')} images have all their captions"
                + (f"; {summary['failed_units']} units failed (listed below; Resume retries them)"
                   if summary.get("failed_units") else "") + ". Export it, or fine-tune on it.", level)
        elif job.state == FAILED:
            self.messages.show_message(f"The build stopped: {job.error}. Finished work is kept.", "error")
        else:
            self.messages.show_message("Stopped. Finished work is kept; Resume continues where it stopped.", "info")
        self._update_buttons()

    def _export_finished(self, job: Job) -> None:
        after, self._train_after_export = self._train_after_export, False
        if job.state != DONE or job.result is None:
            self.messages.show_message(f"Export failed: {job.error or job.state}.", "error")
        else:
            summary = job.result.summary
            self.last_export = Path(summary["output"])
            self.messages.show_message(f"Exported {summary.get('captions', '?')} captions of {summary.get('images', '?')} "
                                       f"images to {self.last_export}", "success")
            if after and summary.get("format") != "jsonl":
                self.train_requested.emit(str(self.last_export))
        self._update_buttons()

    # -- watching --------------------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Read the manifest in the background (a big one takes a while; the window never waits):
        counts, rate, ETA, the gallery's latest images, the failures."""
        from rs_vlm_app.mpgi.browse import build_progress, latest_images
        from rs_vlm_app.mpgi.status import manifest_status

        path = self.manifest_path
        if path is None or not path.is_file():
            return
        if self._reading:
            self._reread = True  # once this read is back, read again (the build moved on meanwhile)
            return
        self._reading, self._reread = True, False

        def read():
            return build_progress(path), latest_images(path, GALLERY_SIZE), manifest_status(path, limit=50)

        run_in_background(read, self._show_read, self._read_failed)

    def _read_failed(self, exc: Exception) -> None:
        self._reading = False
        self.summary.setText(problem_text(exc))
        if self._reread:
            self.refresh()

    def _show_read(self, read) -> None:
        from rs_vlm_app.mpgi.status import format_status
        from rs_vlm_app.reporting import format_duration

        self._reading = False
        progress, latest, status = read
        now = time.monotonic()
        self._history = [(t, n) for t, n in self._history if now - t <= 60] + [(now, progress.complete)]
        eta = None
        (t0, n0), (t1, n1) = self._history[0], self._history[-1]
        left = max(0, progress.images - progress.complete - progress.failed)
        if n1 > n0 and t1 > t0:
            eta = left / ((n1 - n0) / (t1 - t0))
        running = self.job is not None and not self.job.finished_state
        if not running and progress.run_status != "running":
            self.timer.stop()  # nothing is building it: no more reads until Start
        parts = [f"{progress.complete:,} of {progress.images:,} images done", f"{progress.failed:,} failed",
                 f"{progress.requests_per_s:.1f} requests/s"]
        if running or progress.run_status == "running":
            parts.append(f"ETA {format_duration(eta)}" if eta is not None else "ETA: measuring…")
            if running and self.job.stage:
                parts.append(f"stage: {self.job.stage}")
        elif progress.run_status:
            parts.append(f"last run: {progress.run_status}")
        self.summary.setText(" · ".join(parts))
        self.bar.setRange(0, max(1, progress.images))
        self.bar.setValue(progress.complete)
        self._fill_gallery(latest)
        self.failures.setPlainText(format_status({"manifests": [status]}))
        self._update_buttons()
        self.reads += 1
        if self._reread:
            self.refresh()

    def _fill_gallery(self, images) -> None:
        keys = [image.key + "|" + "|".join(c.verdict_text for c in image.captions) for image in images]
        if keys == getattr(self, "_gallery_keys", None):
            return
        self._gallery_keys = keys
        selected = self.gallery.currentItem().data(Qt.ItemDataRole.UserRole) if self.gallery.currentItem() else None
        self.gallery.blockSignals(True)
        self.gallery.clear()
        for image in images:
            first = image.captions[0] if image.captions else None
            text = image.key if first is None else f"{first.text[:90]}{'…' if len(first.text) > 90 else ''}"
            text += "\n" + verdict_summary(image.captions)
            item = QListWidgetItem(self._thumb(image.path), text)
            item.setData(Qt.ItemDataRole.UserRole, image.key)
            verdicts = ", ".join(f"{c.slot}: {c.verdict_text}" for c in image.captions)
            item.setToolTip(f"{image.key}\n{verdicts}")
            self.gallery.addItem(item)
            if image.key == selected:
                self.gallery.setCurrentItem(item)
        self.gallery.blockSignals(False)

    def _thumb(self, path: Path) -> QIcon:
        key = str(path)
        if key not in self._thumbs:
            pixmap = QPixmap(key)
            if pixmap.isNull():
                pixmap = QPixmap(THUMB, THUMB)
                pixmap.fill(Qt.GlobalColor.lightGray)
            self._thumbs[key] = QIcon(pixmap.scaled(THUMB, THUMB, Qt.AspectRatioMode.KeepAspectRatio,
                                                    Qt.TransformationMode.SmoothTransformation))
        return self._thumbs[key]

    def gallery_captions(self) -> dict[str, str]:
        """Image key -> the caption shown under it (what a person sees in the gallery)."""
        return {self.gallery.item(i).data(Qt.ItemDataRole.UserRole): self.gallery.item(i).text()
                for i in range(self.gallery.count())}

    def show_image(self, key: str) -> None:
        """Every perspective's text and the integration result of one image, in the detail pane."""
        from rs_vlm_app.mpgi.browse import image_outputs

        if self.manifest_path is None or not key:
            return
        image = image_outputs(self.manifest_path, key)
        if image is None:
            return
        self.detail.setHtml(image_html(image))


def verdict_summary(captions) -> str:
    """"2 keep · 1 flag", or "not checked yet" while the quality stage has not run."""
    counts: dict[str, int] = {}
    for caption in captions:
        counts[caption.verdict or "not checked yet"] = counts.get(caption.verdict or "not checked yet", 0) + 1
    return " · ".join(f"{n} {verdict}" if verdict != "not checked yet" else verdict for verdict, n in counts.items())


def image_html(image: Any) -> str:
    """One image's outputs as HTML: facts, relay and perspective descriptions, captions with verdicts."""
    esc = html.escape
    parts = [f"<h3>{esc(image.key)}</h3>"]
    if image.scene_class:
        parts.append(f"<p>Scene class: <b>{esc(image.scene_class)}</b></p>")
    if image.facts:
        parts.append("<h4>Rule facts</h4><ul>" + "".join(f"<li>{esc(f)}</li>" for f in image.facts) + "</ul>")
    for stage, text in image.descriptions:
        title = "Relay (grounded description)" if stage == "relay" else stage.replace("perspective:", "Perspective: ")
        parts.append(f"<h4>{esc(title)}</h4><p>{esc(text)}</p>")
    if image.captions:
        parts.append("<h4>Integrated captions</h4>")
        for caption in image.captions:
            colour = VERDICT_COLOURS.get(caption.verdict or "", "#555")
            score = f", CLIP {caption.clip_score:.3f}" if caption.clip_score is not None else ""
            parts.append(f"<p><b>{esc(caption.slot)}</b> <span style='color:{colour}'>[{esc(caption.verdict_text)}"
                         f"{score}]</span><br>{esc(caption.text)}</p>")
    for stage, error in image.failures:
        parts.append(f"<p style='color:#9b1c1c'><b>{esc(stage)} failed:</b> {esc(error)}</p>")
    return "".join(parts)
