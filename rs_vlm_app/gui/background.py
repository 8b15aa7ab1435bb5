"""Run a short blocking check (a backend's start-up check, counting a source's images, a job spec's
cheap checks) off the UI thread and get its answer back on it.

Only for work of seconds that touches no model; models run in worker processes (gui/jobs.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PyQt6.QtCore import QObject, QRunnable, QThreadPool, pyqtSignal


class _Signals(QObject):
    done = pyqtSignal(object)
    failed = pyqtSignal(object)


class _Task(QRunnable):
    def __init__(self, fn: Callable[[], Any], signals: _Signals):
        super().__init__()
        self.fn = fn
        self.signals = signals

    def run(self) -> None:
        try:
            result = self.fn()
        except Exception as exc:  # handed to the UI thread, which shows it
            self.signals.failed.emit(exc)
            return
        self.signals.done.emit(result)


_alive: set[_Signals] = set()


def run_in_background(fn: Callable[[], Any], done: Callable[[Any], None], failed: Callable[[Exception], None]) -> None:
    """Call ``fn()`` in a thread of the global pool; ``done(result)`` or ``failed(exception)`` follow
    on the UI thread (call this from it). A callback whose window was closed meanwhile is skipped."""
    signals = _Signals()  # no parent: it outlives a window closed while the check runs
    _alive.add(signals)

    def finish(callback, value) -> None:
        _alive.discard(signals)
        try:
            callback(value)
        except RuntimeError as exc:  # "wrapped C/C++ object ... has been deleted": the window is gone
            if "deleted" not in str(exc):
                raise

    signals.done.connect(lambda value: finish(done, value))
    signals.failed.connect(lambda exc: finish(failed, exc))
    QThreadPool.globalInstance().start(_Task(fn, signals))


def problem_text(exc: Exception) -> str:
    """A failed check in one line: a UserError as it is, anything else with its type."""
    from rs_vlm_app.errors import UserError

    if isinstance(exc, UserError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"
