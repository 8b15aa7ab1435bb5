"""A worker job as a QgsTask: progress in QGIS's task manager, cancellable from there or the panel.

``run()`` (a background thread) sends the spec to the persistent worker and waits, turning
progress events into ``setProgress``; ``finished()`` (the main thread) hands the outcome to the
callback that adds layers or shows the error. The task never touches layers or widgets itself.
"""

from __future__ import annotations

from collections.abc import Callable

from qgis.core import Qgis, QgsMessageLog, QgsTask
from qgis.PyQt.QtCore import pyqtSignal

from .compat import enum
from .jobproto import client
from .worker import JobOutcome, WorkerService

LOG_TAG = "rs-vlm"


class WorkerJobTask(QgsTask):
    """Runs one job spec on ``service``; ``on_done(outcome)`` runs on the main thread when it ends."""

    #: stage text and percentage, for the panel (emitted from the task's thread, delivered queued)
    stageChanged = pyqtSignal(str, float)

    def __init__(self, description: str, service: WorkerService, spec: dict,
                 on_done: Callable[[JobOutcome], None]):
        super().__init__(description, enum("QgsTask.Flag.CanCancel"))
        self.service = service
        self.spec = spec
        self.on_done = on_done
        self.outcome: JobOutcome | None = None

    def run(self) -> bool:
        try:
            self.outcome = self.service.run(self.spec, self._on_event, self.isCanceled)
        except Exception as exc:  # never let an exception escape into QGIS's task manager
            self.outcome = client.Job.ended("error", f"rs-vlm plugin error: {exc}", "internal", self.spec)
        return self.outcome.ok

    def _on_event(self, event) -> None:
        if event.type == "progress":
            fraction = event.fraction
            if fraction is not None:
                self.setProgress(100.0 * fraction)
            self.stageChanged.emit(_stage_text(event), -1.0 if fraction is None else 100.0 * fraction)
        elif event.type == "started":
            self.stageChanged.emit("started", 0.0)
        elif event.type == "log" and event.level in ("warning", "error"):
            # the worker's warnings (a window size skipped, a fallback device) belong in QGIS's log
            # panel as they happen; QgsMessageLog is safe to call from this thread
            level = Qgis.MessageLevel.Warning if event.level == "warning" else Qgis.MessageLevel.Critical
            QgsMessageLog.logMessage(f"{self.description()}: {event.message}", LOG_TAG, level)

    def finished(self, result: bool) -> None:  # noqa: ARG002 - QgsTask's signature
        outcome = self.outcome
        if outcome is None:  # cancelled before run() started
            outcome = client.Job.ended("cancelled", "cancelled before it started", spec=self.spec)
        self.on_done(outcome)


def _stage_text(event) -> str:
    text = event.stage or "working"
    if event.total:
        text += f" {event.done}/{event.total}"
    if event.eta:
        text += f", about {int(event.eta) + 1} s left"
    return text
