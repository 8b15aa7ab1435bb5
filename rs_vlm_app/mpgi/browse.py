"""What a dataset build has produced so far, for a front end that watches it while it runs.

Read-only, short queries on the manifest (SQLite in WAL mode, so a build writing it meanwhile is
never blocked): progress counts and the request rate, the latest images with all their captions,
and every output of one image (rules, relay, each perspective, the integrated captions with their
quality verdicts). Also how many images a configured source holds, before anything is built.
Standard library only (no Qt): the desktop app calls these from its own timer.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rs_vlm_app.mpgi.config import Source
from rs_vlm_app.mpgi.manifest import ERROR, Manifest
from rs_vlm_app.mpgi.plan import CAPTION_PREFIX, PERSPECTIVE_PREFIX, RELAY


@dataclass(frozen=True)
class BuildProgress:
    """Images ingested, with every caption, with a unit that failed; model calls in the last minute."""

    images: int = 0
    complete: int = 0
    failed: int = 0
    requests_recent: int = 0
    window_s: float = 60.0
    run_status: str | None = None

    @property
    def requests_per_s(self) -> float:
        return self.requests_recent / self.window_s if self.window_s > 0 else 0.0


@dataclass(frozen=True)
class Caption:
    slot: str
    text: str
    verdict: str | None = None
    reasons: tuple[str, ...] = ()
    clip_score: float | None = None

    @property
    def verdict_text(self) -> str:
        """"keep", "flag: length", "drop: duplicate"...; "not checked yet" before the quality stage."""
        if self.verdict is None:
            return "not checked yet"
        return self.verdict + (f": {', '.join(self.reasons)}" if self.reasons else "")


@dataclass(frozen=True)
class ImageOutputs:
    """One image and what the build made of it, stage by stage."""

    key: str
    path: Path
    scene_class: str | None
    facts: tuple[str, ...] = ()
    descriptions: tuple[tuple[str, str], ...] = ()   # (stage, text): relay first, then each perspective
    captions: tuple[Caption, ...] = ()
    failures: tuple[tuple[str, str], ...] = ()        # (stage, last error) of units with no output
    finished_at: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def build_progress(manifest_path: Path, *, window_s: float = 60.0, now: float | None = None) -> BuildProgress:
    """Counts for a progress display; an empty BuildProgress while the manifest does not exist yet."""
    if not Path(manifest_path).is_file():
        return BuildProgress(window_s=window_s)
    now = time.time() if now is None else now
    with Manifest(manifest_path, readonly=True) as manifest:
        db = manifest.db
        stages = [s for s in manifest.get_meta("stages") or [] if s.startswith(CAPTION_PREFIX)]
        images = manifest.image_count()
        complete = 0
        if stages:
            marks = ",".join("?" * len(stages))
            complete = int(db.execute(
                f"SELECT COUNT(*) FROM (SELECT image_id FROM outputs WHERE stage IN ({marks}) GROUP BY image_id "
                "HAVING COUNT(*) = ?)", (*stages, len(stages))).fetchone()[0])
        failed = len({f["image"] for f in manifest.failed_units() if f["status"] == ERROR})
        runs = manifest.runs()
        started = runs[-1]["started_at"] if runs else now
        window = max(1e-3, min(window_s, now - started)) if runs and runs[-1]["status"] == "running" else window_s
        recent = int(db.execute("SELECT COUNT(*) FROM attempts WHERE stage != 'rules' AND finished_at >= ?",
                                (now - window,)).fetchone()[0])
        return BuildProgress(images, complete, failed, recent, window, runs[-1]["status"] if runs else None)


def latest_images(manifest_path: Path, limit: int = 12) -> list[ImageOutputs]:
    """The ``limit`` images whose latest caption arrived last, newest first, with their captions."""
    if not Path(manifest_path).is_file():
        return []
    with Manifest(manifest_path, readonly=True) as manifest:
        rows = manifest.db.execute(
            "SELECT o.image_id, MAX(a.finished_at) AS t FROM outputs o JOIN attempts a ON a.id = o.attempt_id "
            "WHERE o.stage LIKE ? GROUP BY o.image_id ORDER BY t DESC, o.image_id DESC LIMIT ?",
            (CAPTION_PREFIX + "%", int(limit))).fetchall()
        return [_outputs(manifest, image_id, finished) for image_id, finished in rows]


def image_outputs(manifest_path: Path, key: str) -> ImageOutputs | None:
    """Every output of the image ``key`` (None when the manifest has no such image)."""
    with Manifest(manifest_path, readonly=True) as manifest:
        row = manifest.db.execute("SELECT id FROM images WHERE key = ?", (key,)).fetchone()
        return None if row is None else _outputs(manifest, int(row[0]), None)


def _outputs(manifest: Manifest, image_id: int, finished: float | None) -> ImageOutputs:
    order = {stage: i for i, stage in enumerate(manifest.get_meta("stages") or [])}
    image = manifest.image(image_id)
    descriptions, captions = [], []
    for stage, text, verdict, reasons, score in manifest.db.execute(
            "SELECT stage, text, verdict, reasons, clip_score FROM outputs WHERE image_id = ?", (image_id,)):
        if stage == RELAY or stage.startswith(RELAY + ":") or stage.startswith(PERSPECTIVE_PREFIX):
            descriptions.append((stage, text))
        elif stage.startswith(CAPTION_PREFIX):
            why = tuple(str(r.get("check", r)) if isinstance(r, dict) else str(r)
                        for r in (json.loads(reasons) if reasons else []))
            captions.append(Caption(stage.removeprefix(CAPTION_PREFIX), text, verdict, why, score))
    descriptions.sort(key=lambda d: order.get(d[0], len(order)))
    captions.sort(key=lambda c: order.get(CAPTION_PREFIX + c.slot, len(order)))
    failures = []
    for stage, error in manifest.db.execute(
            "SELECT a.stage, a.error FROM attempts a LEFT JOIN outputs o ON o.image_id = a.image_id "
            "AND o.stage = a.stage WHERE a.image_id = ? AND o.image_id IS NULL AND a.status = ? "
            "AND a.id = (SELECT MAX(id) FROM attempts b WHERE b.image_id = a.image_id AND b.stage = a.stage)",
            (image_id, ERROR)):
        failures.append((stage, error or ""))
    record = image.record
    return ImageOutputs(record.key, Path(record.path), record.scene_class, tuple(image.facts), tuple(descriptions),
                        tuple(captions), tuple(failures), finished)


def count_images(source: Source, cap: int | None = None) -> tuple[int, int]:
    """(images, problems) a configured source yields, counting stops at ``cap`` images; reads the
    folder listings and annotation files but no image. A missing folder or file is a UserError."""
    from rs_vlm_app.mpgi.records import SourceItem
    from rs_vlm_app.mpgi.sources import iter_source

    images = problems = 0
    for item in iter_source(source):
        if isinstance(item, SourceItem):
            images += 1
            if cap is not None and images >= cap:
                break
        else:
            problems += 1
    return images, problems
