"""The jobs panel: every running and finished job with progress, ETA, log, cancel, open result."""

from __future__ import annotations

import time

from PyQt6.QtCore import Qt, QTimer, pyqtSignal
from PyQt6.QtGui import QColor
from PyQt6.QtWidgets import (
    QHBoxLayout,
    QHeaderView,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSplitter,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from rs_vlm_app.gui.jobs import CANCELLED, CANCELLING, DONE, FAILED, QUEUED, RUNNING, Job, JobManager
from rs_vlm_app.reporting import format_duration

STATE_COLOURS = {DONE: "#1f6b35", FAILED: "#9b1c1c", CANCELLED: "#7a5200", CANCELLING: "#7a5200",
                 RUNNING: "#1d4f91", QUEUED: "#666666"}
COLUMNS = ["Job", "State", "Progress", "ETA", "Time"]


class JobsPanel(QWidget):
    open_result = pyqtSignal(object)   # Job

    def __init__(self, manager: JobManager, parent=None):
        super().__init__(parent)
        self.manager = manager
        self._items: dict[str, QTreeWidgetItem] = {}
        self._bars: dict[str, QProgressBar] = {}
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        splitter = QSplitter(Qt.Orientation.Horizontal)
        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(0, 0, 0, 0)
        self.tree = QTreeWidget()
        self.tree.setColumnCount(len(COLUMNS))
        self.tree.setHeaderLabels(COLUMNS)
        self.tree.setRootIsDecorated(False)
        self.tree.setUniformRowHeights(True)
        header = self.tree.header()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for column, width in ((1, 90), (2, 220), (3, 70), (4, 60)):
            header.setSectionResizeMode(column, QHeaderView.ResizeMode.Interactive)
            header.resizeSection(column, width)
        header.setStretchLastSection(False)
        self.tree.currentItemChanged.connect(lambda *_: self._selection_changed())
        self.tree.itemDoubleClicked.connect(lambda *_: self._open_clicked())
        left_layout.addWidget(self.tree, 1)
        buttons = QHBoxLayout()
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self._cancel_clicked)
        self.open_button = QPushButton("Open result")
        self.open_button.clicked.connect(self._open_clicked)
        self.clear_button = QPushButton("Clear finished")
        self.clear_button.clicked.connect(self.clear_finished)
        buttons.addWidget(self.cancel_button)
        buttons.addWidget(self.open_button)
        buttons.addStretch(1)
        buttons.addWidget(self.clear_button)
        left_layout.addLayout(buttons)
        splitter.addWidget(left)
        self.log = QPlainTextEdit()
        self.log.setReadOnly(True)
        self.log.setPlaceholderText("The log of the selected job")
        self.log.setMaximumBlockCount(5000)
        splitter.addWidget(self.log)
        splitter.setStretchFactor(0, 3)
        splitter.setStretchFactor(1, 2)
        layout.addWidget(splitter)
        manager.job_added.connect(self._add)
        manager.job_changed.connect(self._update)
        self._clock = QTimer(self)
        self._clock.setInterval(1000)
        self._clock.timeout.connect(self._tick)
        self._clock.start()
        self._selection_changed()

    def _add(self, job: Job) -> None:
        item = QTreeWidgetItem([job.title, "", "", "", ""])
        item.setToolTip(0, f"{job.kind}: {job.title}")
        item.setData(0, Qt.ItemDataRole.UserRole, job.id)
        self.tree.insertTopLevelItem(0, item)
        bar = QProgressBar()
        bar.setTextVisible(True)
        bar.setMaximumHeight(18)
        self.tree.setItemWidget(item, 2, bar)
        self._items[job.id] = item
        self._bars[job.id] = bar
        self._update(job)
        self.tree.setCurrentItem(item)

    def _update(self, job: Job) -> None:
        item = self._items.get(job.id)
        if item is None:
            return
        item.setText(1, job.state)
        item.setForeground(1, QColor(STATE_COLOURS.get(job.state, "#333333")))
        item.setToolTip(1, job.status_text())
        bar = self._bars[job.id]
        fraction = job.fraction
        if fraction is None and job.state in (RUNNING, CANCELLING):
            bar.setRange(0, 0)  # busy
        else:
            bar.setRange(0, 1000)
            bar.setValue(int(round((fraction or 0.0) * 1000)))
        if job.state == FAILED:
            bar.setFormat("failed")
        elif job.state == CANCELLED:
            bar.setFormat("cancelled")
        elif job.state == DONE:
            bar.setFormat("done")
        else:
            bar.setFormat(f"{job.stage} %p%" if job.stage else "%p%")
        bar.setToolTip(job.status_text())
        item.setText(3, format_duration(job.eta) if job.eta is not None and job.state == RUNNING else "")
        self._tick_item(job, item)
        if self.current_job() is job:
            self._show_log(job)
            self._selection_changed()

    def _tick(self) -> None:
        for job in self.manager.jobs:
            item = self._items.get(job.id)
            if item is not None and not job.finished_state:
                self._tick_item(job, item)

    def _tick_item(self, job: Job, item: QTreeWidgetItem) -> None:
        if job.started is None:
            item.setText(4, "")
            return
        end = job.finished or time.time()
        item.setText(4, format_duration(end - job.started))

    def current_job(self) -> Job | None:
        item = self.tree.currentItem()
        if item is None:
            return None
        return self.manager.job(item.data(0, Qt.ItemDataRole.UserRole))

    def select(self, job: Job) -> None:
        item = self._items.get(job.id)
        if item is not None:
            self.tree.setCurrentItem(item)

    def _selection_changed(self) -> None:
        job = self.current_job()
        self.cancel_button.setEnabled(job is not None and not job.finished_state and job.state != CANCELLING)
        self.open_button.setEnabled(job is not None and job.state == DONE and job.result is not None)
        self._show_log(job)

    def _show_log(self, job: Job | None) -> None:
        if job is None:
            self.log.setPlainText("")
            return
        header = [f"{job.kind}: {job.title}", f"state: {job.status_text()}"]
        if job.result is not None:
            header += [f"wrote: {f.path}" for f in job.result.files]
        text = "\n".join(header + [""] + job.log)
        if text != self.log.toPlainText():
            self.log.setPlainText(text)
            self.log.verticalScrollBar().setValue(self.log.verticalScrollBar().maximum())

    def _cancel_clicked(self) -> None:
        job = self.current_job()
        if job is not None:
            self.manager.cancel(job)

    def _open_clicked(self) -> None:
        job = self.current_job()
        if job is not None and job.state == DONE:
            self.open_result.emit(job)

    def clear_finished(self) -> None:
        for job in list(self.manager.jobs):
            if job.finished_state and job.id in self._items:
                item = self._items.pop(job.id)
                self._bars.pop(job.id, None)
                self.tree.takeTopLevelItem(self.tree.indexOfTopLevelItem(item))
        self._selection_changed()

    def row_texts(self, job: Job) -> list[str]:
        """The texts shown in ``job``'s row (for tests and screen readers)."""
        item = self._items[job.id]
        return [item.text(c) for c in range(len(COLUMNS))]

