"""Losses and evaluation metrics to CSV files (always) and TensorBoard (when installed).

RUNDIR/train_log.csv: one row per logged step (step, epoch, lr, losses, samples/s, ...).
RUNDIR/eval_log.csv:  one row per metric and evaluation (step, epoch, metric, value).
RUNDIR/tensorboard/:  the same scalars as TensorBoard events.
Each CSV is rewritten atomically from memory; on resume the rows after the checkpoint's step are
dropped, so the files always agree with the model that a resume continues.
"""

from __future__ import annotations

import csv
import io
import logging
import math
from pathlib import Path
from typing import Any

from rs_vlm_app.atomic import write_text_atomic

log = logging.getLogger(__name__)

TRAIN_CSV = "train_log.csv"
EVAL_CSV = "eval_log.csv"
EVAL_COLUMNS = ("step", "epoch", "metric", "value")


class MetricsLog:
    """Writes metrics in the main process; a silent no-op elsewhere (``enabled=False``)."""

    def __init__(self, run_dir: Path, *, enabled: bool, tensorboard: bool, resume_step: int = 0):
        self.run_dir = run_dir
        self.enabled = enabled
        self.train_rows: list[dict[str, Any]] = []
        self.eval_rows: list[dict[str, Any]] = []
        self.writer = None
        if not enabled:
            return
        if resume_step:
            self.train_rows = [r for r in read_csv(run_dir / TRAIN_CSV) if int(r["step"]) <= resume_step]
            self.eval_rows = [r for r in read_csv(run_dir / EVAL_CSV) if int(r["step"]) <= resume_step]
        if tensorboard:
            self.writer = _tensorboard_writer(run_dir / "tensorboard", purge_step=resume_step + 1 if resume_step else None)

    def train(self, step: int, values: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self.train_rows.append({"step": step, **values})
        _write_csv(self.run_dir / TRAIN_CSV, self.train_rows)
        if self.writer is not None:
            for key, value in values.items():
                if key not in ("step", "epoch") and _is_number(value):
                    self.writer.add_scalar(f"train/{key}", value, step)
            self.writer.flush()

    def evaluation(self, step: int, epoch: int, metrics: dict[str, float]) -> None:
        if not self.enabled or not metrics:
            return
        for name, value in metrics.items():
            self.eval_rows.append({"step": step, "epoch": epoch, "metric": name, "value": value})
            if self.writer is not None and _is_number(value):
                self.writer.add_scalar(name, value, step)
        _write_csv(self.run_dir / EVAL_CSV, self.eval_rows, columns=EVAL_COLUMNS)
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def read_curves(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every numeric series of a run's logs against the optimizer step, for live plots: the columns
    of train_log.csv (``loss``, ``lr``, ``contrastive_loss``, ...) and each metric of eval_log.csv
    under ``eval/NAME``. Empty before the first row; a row being rewritten is never half-read
    (both files are replaced atomically)."""
    curves: dict[str, list[tuple[int, float]]] = {}
    for row in read_csv(Path(run_dir) / TRAIN_CSV):
        step = _step(row.get("step"))
        for key, value in row.items():
            if step is not None and key not in ("step", "epoch") and _is_number(value):
                curves.setdefault(key, []).append((step, float(value)))
    for row in read_csv(Path(run_dir) / EVAL_CSV):
        step = _step(row.get("step"))
        if step is not None and row.get("metric") and _is_number(row.get("value")):
            curves.setdefault(f"eval/{row['metric']}", []).append((step, float(row["value"])))
    return curves


def _step(text: Any) -> int | None:
    try:
        return int(text)
    except (TypeError, ValueError):
        return None


def read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _write_csv(path: Path, rows: list[dict[str, Any]], columns: tuple[str, ...] | None = None) -> None:
    if columns is None:
        seen: dict[str, None] = {}
        for row in rows:
            seen.update(dict.fromkeys(row))
        columns = tuple(seen)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _format(v) for k, v in row.items()})
    write_text_atomic(path, buffer.getvalue())


def _format(value: Any) -> Any:
    if isinstance(value, float):
        return f"{value:.8g}"
    return value


def _is_number(value: Any) -> bool:
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return False
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _tensorboard_writer(folder: Path, purge_step: int | None):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log.info("TensorBoard is not installed (pip install 'rs-vlm[train]'); metrics go to CSV files only")
        return None
    return SummaryWriter(log_dir=str(folder), purge_step=purge_step)
