"""Ingest: read the sources, check every image and box, compute the rule facts, fill the manifest.

Bad input never stops the build: a missing or unreadable image is skipped, a box outside its image
is ignored (or clipped when it only overhangs), each with one line in the manifest's ``issues``
that ``rsvlm dataset status`` lists. Every build rescans the sources: images already in the manifest
are not read again, while images added to the sources, or fixed since the last build, join in.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass

from rs_vlm_app.mpgi.config import BuildConfig, Shard, source_name
from rs_vlm_app.mpgi.imagefiles import ImageReadError, probe
from rs_vlm_app.mpgi.manifest import Manifest
from rs_vlm_app.mpgi.records import Box, ImageRecord, SourceIssue, SourceItem
from rs_vlm_app.mpgi.rules import facts
from rs_vlm_app.mpgi.sources import iter_source
from rs_vlm_app.mpgi.sources.metadata import MetadataTable, load_metadata
from rs_vlm_app.mpgi.wording import humanise
from rs_vlm_app.reporting import NullReporter, Reporter, check_cancelled

log = logging.getLogger(__name__)

#: A box may overhang its image by this share of the image's longest side without a warning.
OVERHANG_TOLERANCE = 0.02
#: Issue lines shown on the console per run; the rest are in the manifest.
MAX_LOGGED_ISSUES = 20
COMMIT_EVERY = 200


@dataclass
class IngestSummary:
    added: int = 0
    known: int = 0
    skipped: int = 0
    warnings: int = 0


def in_shard(key: str, shard: Shard | None) -> bool:
    """Whether image ``key`` belongs to ``shard`` (a stable hash of the key, the same on every machine)."""
    if shard is None:
        return True
    digest = hashlib.sha1(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % shard.count == shard.index - 1


def sources_fingerprint(config: BuildConfig) -> str:
    data = {"sources": config.to_dict()["sources"], "shard": str(config.shard) if config.shard else None}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def ingest(config: BuildConfig, manifest: Manifest, reporter: Reporter | None = None) -> IngestSummary:
    """Add every image of the configured sources (this shard's share) to the manifest."""
    reporter = reporter or NullReporter()
    summary = IngestSummary()
    # skipped items are looked at again (the user may have fixed them); those still bad are found again
    manifest.db.execute("DELETE FROM issues WHERE stage = 'ingest' AND severity = 'error'")
    logged = 0

    def report(issue: SourceIssue) -> None:
        nonlocal logged
        if issue.severity == "error":
            summary.skipped += 1
        else:
            summary.warnings += 1
        if manifest.add_issue(issue.source, issue.item, issue.message, issue.severity):
            logged += 1
            if logged <= MAX_LOGGED_ISSUES:
                log.warning(issue.message)

    seen = 0
    for source in config.sources:
        name = source_name(source)
        table = load_metadata(source.metadata)
        classes: set[str] = set(manifest.get_meta(f"classes:{name}", []))
        count = 0
        manifest.db.execute("BEGIN IMMEDIATE")
        try:
            for item in iter_source(source):
                if isinstance(item, SourceIssue):
                    report(item)
                    continue
                count += 1
                if source.limit is not None and count > source.limit:
                    break
                if not in_shard(item.key, config.shard):
                    continue
                seen += 1
                if seen % COMMIT_EVERY == 0:
                    manifest.db.execute("COMMIT")
                    reporter.progress("ingest", seen, None)
                    check_cancelled(reporter)
                    manifest.db.execute("BEGIN IMMEDIATE")
                if manifest.has_image(item.key):
                    summary.known += 1
                    continue
                record, issues = measure(item, table)
                for issue in issues:
                    report(issue)
                if record is None:
                    continue
                classes.update(b.label for b in record.objects or [])
                manifest.add_image(record, facts(record))
                summary.added += 1
            manifest.set_meta(f"classes:{name}", sorted(classes))
            manifest.db.execute("COMMIT")
        except BaseException:
            if manifest.db.in_transaction:
                manifest.db.execute("COMMIT")  # keep what was ingested; the rest resumes next time
            raise
        if table.path is not None and table.unused():
            log.info("%s: %d metadata rows match no image of source %s", table.path, table.unused(), name)
    reporter.progress("ingest", seen, seen)
    if logged > MAX_LOGGED_ISSUES:
        log.warning("%d more input problems; `rsvlm dataset status %s` lists them all",
                    logged - MAX_LOGGED_ISSUES, config.output)
    manifest.set_meta("ingest_done", sources_fingerprint(config))
    return summary


def measure(item: SourceItem, table: MetadataTable | None = None) -> tuple[ImageRecord | None, list[SourceIssue]]:
    """Check an item against its image file; returns the record (None if skipped) and the problems."""
    origin = item.origin or str(item.path)
    try:
        info = probe(item.path)
    except ImageReadError as exc:
        if str(exc) == "file not found":
            lost = f"; its {len(item.boxes)} boxes are skipped" if item.boxes else "; skipped"
            message = f"{origin}: image file {item.path} not found{lost}" if item.origin else f"{item.path}: file not found; skipped"
        else:
            message = f"{item.path}: {exc}; skipped"
        return None, [SourceIssue(item.source, item.relpath, message)]
    width, height = info.width, info.height
    issues: list[SourceIssue] = []
    if item.size_hint and tuple(item.size_hint) != (width, height):
        issues.append(SourceIssue(item.source, item.relpath,
                                  f"{origin}: the annotations give {item.size_hint[0]}x{item.size_hint[1]} pixels but "
                                  f"the image is {width}x{height}; boxes are used as given", "warning"))
    objects = None if item.boxes is None else []
    for raw in item.boxes or []:
        xs = [p[0] for p in raw.points]
        ys = [p[1] for p in raw.points]
        x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
        if raw.area is not None:
            area = raw.area
        elif len(raw.points) > 2:
            area = _polygon_area(raw.points)
        else:
            area = (x1 - x0) * (y1 - y0)
        where = f"{origin}, {raw.where}"
        extent = f"({x0:g}, {y0:g})-({x1:g}, {y1:g})"
        if x1 <= x0 or y1 <= y0 or area <= 0:
            issues.append(SourceIssue(item.source, f"{item.relpath} {raw.where}",
                                      f"{where}: {raw.label} box {extent} is empty; ignored", "warning"))
            continue
        if x1 <= 0 or y1 <= 0 or x0 >= width or y0 >= height:
            issues.append(SourceIssue(item.source, f"{item.relpath} {raw.where}",
                                      f"{where}: {raw.label} box {extent} lies outside the {width}x{height} image; ignored",
                                      "warning"))
            continue
        cx0, cy0, cx1, cy1 = max(x0, 0.0), max(y0, 0.0), min(x1, float(width)), min(y1, float(height))
        overhang = max(-x0, -y0, x1 - width, y1 - height, 0.0)
        if overhang > OVERHANG_TOLERANCE * max(width, height):
            issues.append(SourceIssue(item.source, f"{item.relpath} {raw.where}",
                                      f"{where}: {raw.label} box {extent} extends past the {width}x{height} image; "
                                      "clipped to it", "warning"))
        inside = (cx1 - cx0) * (cy1 - cy0) / ((x1 - x0) * (y1 - y0))
        objects.append(Box(raw.label, cx0, cy0, cx1, cy1, area * inside))
    metadata = dict(item.metadata)
    if table is not None:
        metadata.update(table.lookup(item.relpath))
    scene = item.scene_class
    if not scene and metadata.get("scene_class"):
        scene = humanise(str(metadata["scene_class"]))
    record = ImageRecord(item.key, item.source, item.path.resolve(), width, height, scene, objects, metadata,
                         info.footprint)
    return record, issues


def _polygon_area(points) -> float:
    area = 0.0
    for (x0, y0), (x1, y1) in zip(points, points[1:] + points[:1], strict=True):
        area += x0 * y1 - x1 * y0
    return abs(area) / 2.0
