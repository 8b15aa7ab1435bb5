"""Merge the manifests of a sharded build (``--shard i/n`` on n machines) into one manifest.

The shards must come from the same configuration (same prompts and caption slots), hold disjoint
images, and, unless allowed otherwise, all n must be present. The merged manifest is written
atomically as ``manifest.sqlite`` beside them; duplicates are then checked across shards.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rs_vlm_app.atomic import atomic_path
from rs_vlm_app.errors import UserError
from rs_vlm_app.mpgi.config import BuildConfig
from rs_vlm_app.mpgi.datasetdir import MANIFEST_NAME, parse_shard_name, shard_manifests
from rs_vlm_app.mpgi.manifest import Manifest
from rs_vlm_app.mpgi.quality import recheck_duplicates

log = logging.getLogger(__name__)

_SAME = ("prompt_digests", "slots", "stages")


@dataclass
class MergeSummary:
    output: str
    shards: list[str] = field(default_factory=list)
    images: int = 0
    captions: int = 0
    cross_shard_duplicates: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def merge_shards(directory: Path, extra: list[Path] | None = None, *, allow_missing: bool = False,
                 force: bool = False) -> MergeSummary:
    """Merge the shard manifests in ``directory`` (and any ``extra`` files) into ``directory/manifest.sqlite``."""
    if not directory.is_dir():
        raise UserError("no such dataset folder", path=directory)
    found: dict[Path, tuple[int, int]] = {}
    for index, count, path in shard_manifests(directory):
        found[path.resolve()] = (index, count)
    for path in extra or []:
        if not path.is_file():
            raise UserError("no such shard manifest", path=path)
        parsed = parse_shard_name(path) or _shard_from_meta(path)
        found[path.resolve()] = parsed
    if not found:
        raise UserError("no shard manifests (manifest-shard-I-of-N.sqlite) to merge", path=directory)
    counts = {count for _, count in found.values()}
    if len(counts) != 1:
        raise UserError(f"the shard manifests come from splits into different numbers of shards ({sorted(counts)})",
                        path=directory)
    n = counts.pop()
    indices = sorted(index for index, _ in found.values())
    if len(set(indices)) != len(indices):
        raise UserError("two manifests claim the same shard; keep one of each", path=directory)
    missing = sorted(set(range(1, n + 1)) - set(indices))
    if missing and not allow_missing:
        raise UserError(f"shards {', '.join(f'{i}/{n}' for i in missing)} are missing; copy their manifests here, "
                        "or merge what there is with --allow-missing", path=directory)
    target = directory / MANIFEST_NAME
    if target.exists() and not force:
        with Manifest(target, readonly=True) as existing:
            if not existing.get_meta("merged_from"):
                raise UserError("already holds a manifest from an unsharded build; merging would replace it "
                                "(use --force to do so)", path=target)
    ordered = sorted(found.items(), key=lambda item: item[1][0])
    reference = _meta(ordered[0][0])
    for path, _ in ordered[1:]:
        other = _meta(path)
        for key in _SAME:
            if other.get(key) != reference.get(key):
                raise UserError(f"was built with different {key.replace('_', ' ')} than {ordered[0][0].name}; "
                                "shards of one dataset must share their prompts and caption slots", path=path)
    summary = MergeSummary(str(target), [str(p) for p, _ in ordered])
    with atomic_path(target) as tmp:
        merged = Manifest(tmp, create=True)
        try:
            _copy_all(merged, ordered)
            for key in (*_SAME, "config"):
                if key in reference:
                    merged.set_meta(key, reference[key])
            merged.set_meta("merged_from", [f"{p.name} ({i}/{c})" for p, (i, c) in ordered])
            if reference.get("config"):
                config = BuildConfig.from_dict({**reference["config"], "shard": None}, origin=ordered[0][0])
                summary.cross_shard_duplicates = recheck_duplicates(merged, config)
            summary.images = merged.image_count()
            summary.captions = int(merged.db.execute(
                "SELECT COUNT(*) FROM outputs WHERE stage LIKE 'caption:%'").fetchone()[0])
            merged.db.execute("PRAGMA journal_mode = DELETE")  # one self-contained file
        finally:
            merged.close()
        for suffix in ("-wal", "-shm"):  # a crashed reader's leftovers must not be replayed onto the new file
            with contextlib.suppress(FileNotFoundError):
                target.with_name(target.name + suffix).unlink()
    return summary


def _meta(path: Path) -> dict[str, Any]:
    with Manifest(path, readonly=True) as manifest:
        rows = manifest.db.execute("SELECT key FROM meta").fetchall()
        return {key: manifest.get_meta(key) for (key,) in rows}


def _shard_from_meta(path: Path) -> tuple[int, int]:
    config = _meta(path).get("config") or {}
    shard = config.get("shard")
    if not shard:
        raise UserError("is not a shard manifest (it was built without --shard)", path=path)
    index, count = (int(v) for v in str(shard).split("/"))
    return index, count


def _copy_all(merged: Manifest, ordered: list[tuple[Path, tuple[int, int]]]) -> None:
    db = merged.db
    classes: dict[str, set[str]] = {}
    for path, (index, count) in ordered:
        db.execute("ATTACH DATABASE ? AS shard", (f"file:{path}?mode=ro",))
        try:
            offsets = [db.execute(f"SELECT COALESCE(MAX(id), 0) FROM {table}").fetchone()[0]
                       for table in ("images", "attempts", "runs")]
            image_offset, attempt_offset, run_offset = offsets
            with merged.transaction():
                try:
                    db.execute(f"INSERT INTO images SELECT id + {image_offset}, key, source, path, width, height, "
                               "scene_class, objects, metadata, footprint, facts FROM shard.images")
                except sqlite3.IntegrityError:
                    key = db.execute("SELECT s.key FROM shard.images s JOIN main.images m ON m.key = s.key "
                                     "LIMIT 1").fetchone()
                    raise UserError(f"image {key[0] if key else '?'} is also in another shard; shards of one "
                                    "dataset hold disjoint images", path=path) from None
                db.execute(f"INSERT INTO runs SELECT id + {run_offset}, started_at, finished_at, status, error, "
                           f"json_set(COALESCE(info, '{{}}'), '$.shard', '{index}/{count}') FROM shard.runs")
                db.execute(f"INSERT INTO attempts SELECT id + {attempt_offset}, image_id + {image_offset}, stage, "
                           f"attempt, run_id + {run_offset}, backend, model, prompt_hash, status, output, error, "
                           "started_at, finished_at, latency_s FROM shard.attempts")
                db.execute(f"INSERT INTO outputs SELECT image_id + {image_offset}, stage, attempt_id + {attempt_offset}, "
                           "text, verdict, reasons, clip_score, norm FROM shard.outputs")
                db.execute("INSERT OR IGNORE INTO issues (source, item, stage, severity, message) "
                           "SELECT source, item, stage, severity, message FROM shard.issues ORDER BY id")
                for key, value in db.execute("SELECT key, value FROM shard.meta WHERE key LIKE 'classes:%'").fetchall():
                    classes.setdefault(key, set()).update(json.loads(value))
        finally:
            db.execute("DETACH DATABASE shard")
    for key, values in classes.items():
        merged.set_meta(key, sorted(values))
