"""Per-image metadata (sensor, gsd, date, place, or any other field) from CSV, JSON or JSON Lines.

Each row names its image in an ``image`` column: the path relative to the source, the file name or
the file stem. Known fields feed the rule sentences; every field is offered to the prompts.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from rs_vlm_app.errors import UserError

KEY_COLUMNS = ("image", "file_name", "filename", "filepath", "path")


class MetadataTable:
    """Look up one image's metadata by relative path, file name or stem."""

    def __init__(self, rows: dict[str, dict[str, Any]], path: Path | None = None):
        self.rows = rows
        self.path = path
        self.used: set[str] = set()

    @classmethod
    def empty(cls) -> MetadataTable:
        return cls({})

    def lookup(self, relpath: str) -> dict[str, Any]:
        name = relpath.rsplit("/", 1)[-1]
        for key in (relpath, name, name.rsplit(".", 1)[0]):
            if key in self.rows:
                self.used.add(key)
                return dict(self.rows[key])
        return {}

    def unused(self) -> int:
        return len(self.rows) - len(self.used)


def load_metadata(path: Path | None) -> MetadataTable:
    if path is None:
        return MetadataTable.empty()
    if not path.is_file():
        raise UserError("metadata file not found (sources: metadata)", path=path)
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            with path.open(newline="", encoding="utf-8-sig") as f:
                records = list(csv.DictReader(f))
        elif suffix == ".jsonl":
            with path.open(encoding="utf-8") as f:
                records = [json.loads(line) for line in f if line.strip()]
        elif suffix == ".json":
            data = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(data, dict):
                records = [{"image": k, **(v if isinstance(v, dict) else {"value": v})} for k, v in data.items()]
            else:
                records = data
        else:
            raise UserError("metadata must be a .csv, .json or .jsonl file", path=path)
    except (json.JSONDecodeError, UnicodeDecodeError, csv.Error) as exc:
        raise UserError(f"cannot read metadata ({exc})", path=path) from None
    rows: dict[str, dict[str, Any]] = {}
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            raise UserError(f"row {i + 1} is not a record of fields", path=path)
        column = next((c for c in KEY_COLUMNS if record.get(c) not in (None, "")), None)
        if column is None:
            raise UserError(f"row {i + 1} has no 'image' column naming its image", path=path)
        key = str(record[column]).replace("\\", "/")
        rows[key] = {k: v for k, v in record.items() if k not in KEY_COLUMNS and v not in (None, "")}
    return MetadataTable(rows, path)
