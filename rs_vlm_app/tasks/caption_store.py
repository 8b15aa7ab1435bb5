"""Finished tile captions of one scene x model x grid x decoding, checkpointed in SQLite.

One file per key under ``<rs-vlm cache>/captions/``. Every batch of captions is committed in the
same transaction as the reader position that follows it, so a run killed at any moment resumes
right after its last committed batch and no tile is captioned twice or lost. A finished store is
kept: captioning the same scene the same way again (to another output) decodes nothing.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rs_vlm_app.paths import cache_dir

SCHEMA_VERSION = 1


def captions_cache_dir() -> Path:
    return cache_dir() / "captions"


@dataclass(frozen=True)
class StoredCaptions:
    """The captions of a store, ordered by window index."""

    windows: np.ndarray       # int64 (n,) indexes into the scene's windows array
    texts: list[str]
    mean_logprob: np.ndarray  # float64 (n,)
    tokens: np.ndarray        # int64 (n,)
    ended: np.ndarray         # bool (n,)


class CaptionStore:
    """A resumable record of captioned windows (see the module docstring)."""

    def __init__(self, path: Path, meta: dict, total: int):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=60)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        with self._db:
            self._db.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS captions (window INTEGER PRIMARY KEY, caption TEXT NOT NULL, "
                "mean_logprob REAL NOT NULL, tokens INTEGER NOT NULL, ended INTEGER NOT NULL)")
            stored = self._meta("meta")
            wanted = json.dumps({"schema": SCHEMA_VERSION, "total": total, **meta}, sort_keys=True)
            if stored != wanted:  # a new store, or one written by another version: start afresh
                self._db.execute("DELETE FROM captions")
                self._db.execute("DELETE FROM meta")
                self._set("meta", wanted)
                self._set("next_start", "0")
                self._set("complete", "0")
        self.total = total

    def _meta(self, name: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return None if row is None else row[0]

    def _set(self, name: str, value: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta (name, value) VALUES (?, ?)", (name, value))

    @property
    def next_start(self) -> int:
        """Position in the reader's order where captioning continues."""
        return int(self._meta("next_start") or 0)

    @property
    def complete(self) -> bool:
        return self._meta("complete") == "1"

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM captions").fetchone()[0])

    def record(self, windows: Sequence[int], captions: Sequence, next_start: int) -> None:
        """Store one batch (captions: objects with text, mean_logprob, tokens, ended) and the position after it."""
        rows = [(int(w), c.text, float(c.mean_logprob), int(c.tokens), int(bool(c.ended)))
                for w, c in zip(windows, captions, strict=True)]
        with self._db:
            self._db.executemany("INSERT OR REPLACE INTO captions VALUES (?, ?, ?, ?, ?)", rows)
            self._set("next_start", str(int(next_start)))

    def mark_complete(self) -> None:
        with self._db:
            self._set("next_start", str(self.total))
            self._set("complete", "1")

    def captions(self) -> StoredCaptions:
        rows = self._db.execute("SELECT window, caption, mean_logprob, tokens, ended FROM captions "
                                "ORDER BY window").fetchall()
        return StoredCaptions(
            windows=np.array([r[0] for r in rows], dtype=np.int64),
            texts=[r[1] for r in rows],
            mean_logprob=np.array([r[2] for r in rows], dtype=np.float64),
            tokens=np.array([r[3] for r in rows], dtype=np.int64),
            ended=np.array([bool(r[4]) for r in rows], dtype=bool),
        )

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> CaptionStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
