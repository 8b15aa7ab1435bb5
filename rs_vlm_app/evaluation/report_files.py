"""Evaluation outputs: JSON and CSV files (written atomically) and plain-text tables for the terminal."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from pathlib import Path

from rs_vlm_app.atomic import write_text_atomic


def write_json(path: Path, data: object) -> Path:
    """Pretty JSON; NaN becomes null (strict JSON readers reject NaN)."""
    return write_text_atomic(path, json.dumps(_nan_to_none(data), indent=1, ensure_ascii=False) + "\n")


def write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[object]]) -> Path:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow(["" if _is_nan(v) else (f"{v:.6g}" if isinstance(v, float) else v) for v in row])
    return write_text_atomic(path, buffer.getvalue())


def format_table(header: Sequence[str], rows: Sequence[Sequence[object]], digits: int = 4) -> str:
    """Columns padded to their widest cell; floats with ``digits`` decimals; text left, numbers right."""
    def cell(v: object) -> str:
        if _is_nan(v):
            return "-"
        if isinstance(v, float):
            return f"{v:.{digits}f}"
        return str(v)

    cells = [[cell(v) for v in row] for row in rows]
    numeric = [all(isinstance(row[i], int | float) for row in rows) if rows else False
               for i in range(len(header))]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(header)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w)
                         for v, w, num in zip(values, widths, numeric, strict=True)).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(r) for r in cells)])


def _is_nan(v: object) -> bool:
    return isinstance(v, float) and math.isnan(v)


def _nan_to_none(data: object) -> object:
    if isinstance(data, dict):
        return {k: _nan_to_none(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [_nan_to_none(v) for v in data]
    if _is_nan(data):
        return None
    return data
