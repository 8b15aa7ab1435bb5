"""The SQLite manifest of a dataset build: every image x stage x attempt, and the accepted outputs.

One file per build (``manifest.sqlite``, or one per shard). Each model reply is committed as soon
as it arrives (WAL journal), and an accepted output is on disk (fsynced) before the build counts it:
:meth:`Manifest.write_attempts` commits a group of replies with ``synchronous = FULL``, which also
flushes every earlier commit, while bookkeeping (attempts starting or failing) commits without a
flush of its own. During the model stages these writes are made by one thread of their own, in
groups (:class:`rs_vlm_app.mpgi.writer.ManifestWriter`). So a build killed at any instant, or a
power cut, loses no finished work, and ``outputs`` has at most one row per image and stage: a
finished unit is never generated again.

Tables
  meta      key/value: schema version, config, prompt hashes, ingest state, source class lists
  runs      one row per ``build`` invocation: status and the error that stopped it
  images    ingested images: path, size, scene class, objects, metadata, footprint, rule facts
  issues    bad input met at ingest (missing or unreadable images, boxes outside the image)
  attempts  every model call: image, stage, attempt number, backend, model, prompt hash, status,
            output or error, timing
  outputs   the accepted output per image and stage (PRIMARY KEY image_id, stage); captions also
            carry their quality verdict
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rs_vlm_app.atomic import fsync_dir
from rs_vlm_app.errors import UserError
from rs_vlm_app.mpgi.records import Box, ImageRecord

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY, started_at REAL NOT NULL, finished_at REAL, status TEXT NOT NULL,
    error TEXT, info TEXT);
CREATE TABLE IF NOT EXISTS images (
    id INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE, source TEXT NOT NULL, path TEXT NOT NULL,
    width INTEGER NOT NULL, height INTEGER NOT NULL, scene_class TEXT, objects TEXT,
    metadata TEXT NOT NULL, footprint TEXT, facts TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS images_source ON images(source);
CREATE TABLE IF NOT EXISTS issues (
    id INTEGER PRIMARY KEY, source TEXT NOT NULL, item TEXT NOT NULL, stage TEXT NOT NULL,
    severity TEXT NOT NULL, message TEXT NOT NULL, UNIQUE (source, item, message));
CREATE TABLE IF NOT EXISTS attempts (
    id INTEGER PRIMARY KEY, image_id INTEGER NOT NULL REFERENCES images(id), stage TEXT NOT NULL,
    attempt INTEGER NOT NULL, run_id INTEGER, backend TEXT, model TEXT, prompt_hash TEXT,
    status TEXT NOT NULL, output TEXT, error TEXT, started_at REAL, finished_at REAL, latency_s REAL);
CREATE INDEX IF NOT EXISTS attempts_unit ON attempts(image_id, stage);
CREATE INDEX IF NOT EXISTS attempts_status ON attempts(status);
CREATE TABLE IF NOT EXISTS outputs (
    image_id INTEGER NOT NULL REFERENCES images(id), stage TEXT NOT NULL,
    attempt_id INTEGER NOT NULL REFERENCES attempts(id), text TEXT NOT NULL,
    verdict TEXT, reasons TEXT, clip_score REAL, norm TEXT,
    PRIMARY KEY (image_id, stage));
CREATE INDEX IF NOT EXISTS outputs_stage ON outputs(stage);
CREATE INDEX IF NOT EXISTS outputs_norm ON outputs(norm);
"""

#: attempt states
RUNNING, OK, ERROR, INTERRUPTED, CANCELLED = "running", "ok", "error", "interrupted", "cancelled"


@dataclass(frozen=True)
class ImageRow:
    """An image as the manifest holds it."""

    id: int
    record: ImageRecord
    facts: list[str]

    @property
    def key(self) -> str:
        return self.record.key


class Manifest:
    """One build's SQLite manifest. Not thread-safe: use it from one thread."""

    def __init__(self, path: str | Path, *, create: bool = False, readonly: bool = False):
        self.path = Path(path)
        if not create and not self.path.is_file():
            raise UserError("no dataset manifest here; run `rsvlm dataset build CONFIG.yaml` first", path=self.path)
        new = create and not self.path.exists()
        if create:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        uri = f"file:{self.path}?mode=ro" if readonly else f"file:{self.path}"
        try:
            self.db = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=30.0)
            self.db.execute("PRAGMA foreign_keys = ON")
            if not readonly:
                self.db.execute("PRAGMA journal_mode = WAL")
                self.db.execute("PRAGMA synchronous = NORMAL")
                self.db.executescript(_SCHEMA)
                if new:
                    fsync_dir(self.path.parent)  # the new file's name, too, survives a power cut
            version = self.get_meta("schema_version")
        except sqlite3.DatabaseError as exc:
            raise UserError(f"not a readable dataset manifest ({exc})", path=self.path) from None
        if version is None and not readonly:
            self.set_meta("schema_version", SCHEMA_VERSION)
        elif version is not None and int(version) != SCHEMA_VERSION:
            raise UserError(f"manifest schema {version} is not the {SCHEMA_VERSION} this rs-vlm writes", path=self.path)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Manifest:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------------------------ meta
    def get_meta(self, key: str, default: Any = None) -> Any:
        try:
            row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        except sqlite3.OperationalError:  # a read-only file without the table
            return default
        return json.loads(row[0]) if row else default

    def set_meta(self, key: str, value: Any) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, json.dumps(value)))

    # ------------------------------------------------------------------------------------ runs
    def start_run(self, info: dict[str, Any]) -> int:
        """Open a run; attempts and runs a killed build left 'running' become 'interrupted'."""
        with self.transaction():
            self.db.execute(
                "UPDATE attempts SET status = ?, error = 'the build stopped before the reply arrived' "
                "WHERE status = ?", (INTERRUPTED, RUNNING))
            self.db.execute("UPDATE runs SET status = 'interrupted', error = COALESCE(error, 'the build was killed') "
                            "WHERE status = 'running'")
            cur = self.db.execute("INSERT INTO runs (started_at, status, info) VALUES (?, 'running', ?)",
                                  (time.time(), json.dumps(info)))
        return int(cur.lastrowid)

    def finish_run(self, run_id: int, status: str, error: str | None = None) -> None:
        self.db.execute("UPDATE runs SET finished_at = ?, status = ?, error = ? WHERE id = ?",
                        (time.time(), status, error, run_id))

    def runs(self) -> list[dict[str, Any]]:
        rows = self.db.execute("SELECT id, started_at, finished_at, status, error FROM runs ORDER BY id").fetchall()
        return [dict(zip(("id", "started_at", "finished_at", "status", "error"), r, strict=True)) for r in rows]

    # ---------------------------------------------------------------------------------- images
    def transaction(self):
        return _Transaction(self.db)

    def has_image(self, key: str) -> bool:
        return self.db.execute("SELECT 1 FROM images WHERE key = ?", (key,)).fetchone() is not None

    def add_image(self, record: ImageRecord, facts: list[str]) -> int:
        """Insert an ingested image with its rule facts (also recorded as the 'rules' stage)."""
        objects = None if record.objects is None else json.dumps([b.to_json() for b in record.objects])
        cur = self.db.execute(
            "INSERT INTO images (key, source, path, width, height, scene_class, objects, metadata, footprint, facts) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (record.key, record.source, str(record.path), record.width, record.height, record.scene_class, objects,
             json.dumps(record.metadata, default=str), json.dumps(record.footprint) if record.footprint else None,
             json.dumps(facts)))
        image_id = int(cur.lastrowid)
        text = "\n".join(facts)
        now = time.time()
        cur = self.db.execute(
            "INSERT INTO attempts (image_id, stage, attempt, backend, model, status, output, started_at, finished_at, "
            "latency_s) VALUES (?, 'rules', 1, 'rules', 'rules', ?, ?, ?, ?, 0)", (image_id, OK, text, now, now))
        self.db.execute("INSERT INTO outputs (image_id, stage, attempt_id, text) VALUES (?, 'rules', ?, ?)",
                        (image_id, cur.lastrowid, text))
        return image_id

    def image_count(self, sources: Iterable[str] | None = None) -> int:
        sql, args = _source_filter("SELECT COUNT(*) FROM images", sources)
        return int(self.db.execute(sql, args).fetchone()[0])

    def iter_images(self, sources: Iterable[str] | None = None, page: int = 500) -> Iterator[ImageRow]:
        """All images in id order, read a page at a time (memory stays flat)."""
        last = 0
        while True:
            sql, args = _source_filter(
                "SELECT id, key, source, path, width, height, scene_class, objects, metadata, footprint, facts "
                "FROM images WHERE id > ?", sources, [last], joiner=" AND ")
            rows = self.db.execute(sql + " ORDER BY id LIMIT ?", (*args, page)).fetchall()
            if not rows:
                return
            for row in rows:
                yield _image_row(row)
            last = rows[-1][0]

    def image(self, image_id: int) -> ImageRow:
        row = self.db.execute(
            "SELECT id, key, source, path, width, height, scene_class, objects, metadata, footprint, facts "
            "FROM images WHERE id = ?", (image_id,)).fetchone()
        return _image_row(row)

    # ---------------------------------------------------------------------------------- issues
    def add_issue(self, source: str, item: str, message: str, severity: str = "error", stage: str = "ingest") -> bool:
        """Record bad input once; True if it was new."""
        cur = self.db.execute(
            "INSERT OR IGNORE INTO issues (source, item, stage, severity, message) VALUES (?, ?, ?, ?, ?)",
            (source, item, stage, severity, message))
        return cur.rowcount > 0

    def issues(self, severity: str | None = None) -> list[dict[str, str]]:
        sql = "SELECT source, item, stage, severity, message FROM issues"
        args: tuple = ()
        if severity:
            sql += " WHERE severity = ?"
            args = (severity,)
        rows = self.db.execute(sql + " ORDER BY id", args).fetchall()
        return [dict(zip(("source", "item", "stage", "severity", "message"), r, strict=True)) for r in rows]

    # -------------------------------------------------------------------------------- attempts
    def next_attempt_id(self) -> int:
        """The first free attempt row id (the build holds the manifest's lock, so ids can be handed out
        ahead of the inserts)."""
        return int(self.db.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM attempts").fetchone()[0])

    def attempt_numbers(self, image_ids: Iterable[int]) -> dict[int, dict[str, int]]:
        """The number of the last attempt of each unit of some images: {image id: {stage: number}}."""
        ids = list(image_ids)
        result: dict[int, dict[str, int]] = {i: {} for i in ids}
        query = "SELECT image_id, stage, MAX(attempt) FROM attempts WHERE image_id IN ({}) GROUP BY image_id, stage"
        for image_id, stage, number in self._rows_of_images(query, ids):
            result[image_id][stage] = int(number)
        return result

    def _rows_of_images(self, query: str, ids: list[int]) -> Iterator[tuple]:
        """The rows of ``query`` (its ``{}`` is filled with placeholders) for ``ids``, 500 at a time."""
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            yield from self.db.execute(query.format(",".join("?" * len(chunk))), chunk)

    def write_attempts(self, attempts: list[tuple], updates: list[tuple], outputs: list[tuple]) -> None:
        """Record model calls in one transaction.

        ``attempts``: new rows, (id, image id, stage, attempt number, run id, backend, model, prompt
        hash, status, output, error, started_at, finished_at, latency_s): a call still running, or one
        that ended before it was recorded; ``updates``: calls recorded as running that ended, (status,
        error, output, finished_at, latency_s, id); ``outputs``: accepted replies, (image id, stage,
        attempt id, text). With outputs the transaction is on disk (``synchronous = FULL``, which also
        flushes every earlier commit) when this returns; bookkeeping alone commits without a flush.
        Rows go in with one statement per few hundred (few round trips through the sqlite3 module).
        """
        if outputs:
            self.db.execute("PRAGMA synchronous = FULL")
        try:
            with self.transaction():
                _insert_rows(self.db, "attempts (id, image_id, stage, attempt, run_id, backend, model, prompt_hash, "
                             "status, output, error, started_at, finished_at, latency_s)", 14, attempts)
                if updates:
                    self.db.executemany("UPDATE attempts SET status = ?, error = ?, output = ?, finished_at = ?, "
                                        "latency_s = ? WHERE id = ?", updates)
                _insert_rows(self.db, "outputs (image_id, stage, attempt_id, text)", 4, outputs)
        finally:
            if outputs:
                self.db.execute("PRAGMA synchronous = NORMAL")

    def outputs_for(self, image_ids: Iterable[int]) -> dict[int, dict[str, str]]:
        """The accepted outputs of some images: {image id: {stage: text}}."""
        ids = list(image_ids)
        result: dict[int, dict[str, str]] = {i: {} for i in ids}
        for image_id, stage, text in self._rows_of_images(
                "SELECT image_id, stage, text FROM outputs WHERE image_id IN ({})", ids):
            result[image_id][stage] = text
        return result

    def stage_counts(self) -> dict[str, int]:
        return dict(self.db.execute("SELECT stage, COUNT(*) FROM outputs GROUP BY stage").fetchall())

    def failed_units(self, limit: int | None = None) -> list[dict[str, Any]]:
        """Units that were tried and have no output: image, stage, attempts made, last error."""
        sql = (
            "SELECT i.key, a.stage, COUNT(*), MAX(a.id) FROM attempts a JOIN images i ON i.id = a.image_id "
            "LEFT JOIN outputs o ON o.image_id = a.image_id AND o.stage = a.stage "
            "WHERE o.image_id IS NULL GROUP BY a.image_id, a.stage ORDER BY a.image_id, a.stage")
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        out = []
        for key, stage, tries, last_id in self.db.execute(sql).fetchall():
            status, error = self.db.execute("SELECT status, error FROM attempts WHERE id = ?", (last_id,)).fetchone()
            out.append({"image": key, "stage": stage, "attempts": tries, "status": status, "error": error})
        return out

    def attempt_counts(self) -> dict[str, int]:
        return dict(self.db.execute("SELECT status, COUNT(*) FROM attempts WHERE stage != 'rules' GROUP BY status"))


class _Transaction:
    def __init__(self, db: sqlite3.Connection):
        self.db = db
        self.outer = False

    def __enter__(self):
        self.outer = not self.db.in_transaction
        if self.outer:
            self.db.execute("BEGIN IMMEDIATE")
        return self

    def __exit__(self, exc_type, exc, tb):
        if not self.outer:
            return
        if exc_type is None:
            self.db.execute("COMMIT")
        else:
            self.db.execute("ROLLBACK")


def _insert_rows(db: sqlite3.Connection, into: str, width: int, rows: list[tuple], chunk: int = 256) -> None:
    """INSERT many rows with a few multi-row statements."""
    for start in range(0, len(rows), chunk):
        part = rows[start:start + chunk]
        values = ",".join([f"({','.join('?' * width)})"] * len(part))
        db.execute(f"INSERT INTO {into} VALUES {values}", [v for row in part for v in row])


def _source_filter(sql: str, sources: Iterable[str] | None, args: list | None = None, joiner: str = " WHERE "):
    args = list(args or [])
    if sources is None:
        return sql, args
    names = list(sources)
    return sql + f"{joiner}source IN ({','.join('?' * len(names))})", args + names


def _image_row(row) -> ImageRow:
    (image_id, key, source, path, width, height, scene_class, objects, metadata, footprint, facts) = row
    boxes = None if objects is None else [Box.from_json(b) for b in json.loads(objects)]
    record = ImageRecord(key, source, Path(path), width, height, scene_class, boxes, json.loads(metadata),
                         json.loads(footprint) if footprint else None)
    return ImageRow(image_id, record, json.loads(facts))

