"""Watch a training run folder: its logs become curves, its summary says when it finished.

Reads only the files a run writes (train_log.csv, eval_log.csv, run.json, summary.json), so a run
started from the GUI, from ``rsvlm train`` or on another machine sharing the folder is watched the
same way. Polls their modification times once a second; reads them only when one changed.
"""

from __future__ import annotations

from pathlib import Path

from PyQt6.QtCore import QObject, QTimer, pyqtSignal

from rs_vlm_app.errors import UserError
from rs_vlm_app.training.metrics_log import EVAL_CSV, TRAIN_CSV, read_curves
from rs_vlm_app.training.rundir import RUN_JSON, SUMMARY_JSON, RunInfo, describe_run

WATCHED = (TRAIN_CSV, EVAL_CSV, RUN_JSON, SUMMARY_JSON)


class RunWatch(QObject):
    curves_changed = pyqtSignal(object)   # dict: series name -> [(step, value)]
    info_changed = pyqtSignal(object)     # RunInfo, or None while the folder holds no run yet

    def __init__(self, parent: QObject | None = None, interval_ms: int = 1000):
        super().__init__(parent)
        self.run_dir: Path | None = None
        self.info: RunInfo | None = None
        self.curves: dict[str, list[tuple[int, float]]] = {}
        self._stamps: dict[str, tuple[float, int] | None] = {}
        self._timer = QTimer(self)
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self.refresh)

    def watch(self, run_dir: Path) -> None:
        """Follow ``run_dir`` from now on (read at once)."""
        self.run_dir = Path(run_dir)
        self._stamps = {}
        self.info = None
        self.curves = {}
        self.refresh()
        self._timer.start()

    def stop(self) -> None:
        self._timer.stop()

    def refresh(self) -> None:
        if self.run_dir is None:
            return
        stamps = {name: _stamp(self.run_dir / name) for name in WATCHED}
        if stamps == self._stamps:
            return
        changed = {name for name in WATCHED if stamps[name] != self._stamps.get(name)}
        self._stamps = stamps
        if changed & {RUN_JSON, SUMMARY_JSON}:
            try:
                self.info = describe_run(self.run_dir)
            except UserError:
                self.info = None
            self.info_changed.emit(self.info)
        if changed & {TRAIN_CSV, EVAL_CSV}:
            self.curves = read_curves(self.run_dir)
            self.curves_changed.emit(self.curves)


def _stamp(path: Path) -> tuple[float, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime, st.st_size
