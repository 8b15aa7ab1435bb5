"""`rsvlm index`: encode every tile of every scene into an archive, on either engine, resumably.

The driver (this module) plans scenes, skips those already in the archive (same fingerprint),
hands the missing units to the engine and commits each unit the moment it comes back, so a killed
run loses only the units in flight. A scene that cannot be read is recorded (ARCHIVE/failures.json)
and reported at the end; the others complete.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rs_vlm_app.archive.engines import Engine, ProgressTracker
from rs_vlm_app.archive.inputs import InputProblem, SceneInput
from rs_vlm_app.archive.store import Archive, Failure, SceneInfo
from rs_vlm_app.archive.units import UNIT_TILES, TileSettings, Unit, UnitResult, plan_scene
from rs_vlm_app.atomic import write_text_atomic
from rs_vlm_app.errors import UserError
from rs_vlm_app.reporting import NullReporter, Reporter, check_cancelled

log = logging.getLogger(__name__)

PLAN_FILE = "plan.json"


@dataclass
class IndexResult:
    archive: Path
    engine: str
    workers: int
    added: list[str] = field(default_factory=list)        # scenes completed by this run
    present: list[str] = field(default_factory=list)      # scenes already in the archive (not encoded again)
    failures: list[Failure] = field(default_factory=list)
    tiles_added: int = 0
    units_encoded: int = 0
    scenes_total: int = 0                                  # scenes in the archive after the run
    tiles_total: int = 0
    ann: dict | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict:
        out = asdict(self)
        out["archive"] = str(self.archive)
        return out


def index_archive(
    scenes: list[SceneInput], problems: list[InputProblem], archive_path: Path, settings: TileSettings,
    make_engine: Callable[[], Engine], *, reporter: Reporter | None = None, unit_tiles: int = UNIT_TILES,
    build_ann: bool = True,
) -> IndexResult:
    """Add ``scenes`` to the archive at ``archive_path`` (created if new) with the engine ``make_engine``
    builds. Returns what was added, what was there already and what failed."""
    reporter = reporter or NullReporter()
    started = time.monotonic()
    archive = Archive(Path(archive_path))
    with archive.writer_lock():
        engine = make_engine()
        try:
            recipe = engine.recipe(settings)
            archive.adopt(recipe)
            result = IndexResult(archive.root, engine.name, engine.workers)
            result.failures = [Failure(p.name, p.path, p.message) for p in problems]
            plans, units, tiles = _plan(scenes, archive, settings, result, reporter, unit_tiles)
            done_parts = {sid: {i for i in range(p.parts) if archive.part_done(sid, i)} for sid, p in plans.items()}
            failed: set[str] = set()
            tracker = ProgressTracker(reporter, units, tiles, len(plans))

            def on_result(unit: UnitResult) -> None:
                plan = plans[unit.scene]
                _record_part(archive, plan, unit)  # before the part: a committed part always has its stats
                archive.commit_part(plan, unit.part, unit.windows, unit.embeddings, recipe)
                result.units_encoded += 1
                done_parts[unit.scene].add(unit.part)
                if len(done_parts[unit.scene]) == plan.parts and unit.scene not in failed:
                    _finish_scene(archive, plan)
                    result.added.append(plan.id)
                    result.tiles_added += plan.tiles
                    tracker.scene_finished()
                    reporter.log(f"{plan.id}: {plan.tiles} tiles ({plan.skipped} mostly nodata skipped)", "debug")

            def on_failure(unit: Unit, message: str) -> None:
                if unit.scene not in failed:
                    failed.add(unit.scene)
                    result.failures.append(Failure(unit.scene, unit.path, message))
                    reporter.log(message, "warning")

            for sid, plan in plans.items():  # scenes whose every part was committed before a crash
                if len(done_parts[sid]) == plan.parts:
                    _finish_scene(archive, plan)
                    result.added.append(sid)
                    result.tiles_added += plan.tiles
            try:
                engine.run(units, settings, on_result, on_failure, tracker)
            finally:
                archive.write_failures(result.failures)
        finally:
            engine.close()
        scenes_now = archive.scenes(refresh=True)
        result.scenes_total = len(scenes_now)
        result.tiles_total = sum(s.tiles for s in scenes_now.values())
        if build_ann:
            from rs_vlm_app.archive.ann import maybe_update_index

            result.ann = maybe_update_index(archive, reporter=reporter)
    result.seconds = time.monotonic() - started
    return result


def _plan(scenes, archive: Archive, settings: TileSettings, result: IndexResult, reporter: Reporter,
          unit_tiles: int) -> tuple[dict[str, SceneInfo], list[Unit], dict]:
    """Open every scene; skip those already indexed; the units still to encode."""
    existing = archive.scenes()
    by_fingerprint = {s.fingerprint: s.id for s in existing.values()}
    plans: dict[str, SceneInfo] = {}
    units: list[Unit] = []
    tiles: dict[tuple[str, int], int] = {}
    for i, scene in enumerate(scenes):
        check_cancelled(reporter)
        reporter.progress("open scenes", i, len(scenes))
        try:
            plan = plan_scene(scene, settings, unit_tiles)
        except UserError as exc:
            result.failures.append(Failure(scene.name, scene.path, str(exc)))
            reporter.log(str(exc), "warning")
            continue
        if plan.fingerprint in by_fingerprint:
            result.present.append(by_fingerprint[plan.fingerprint])
            continue
        if plan.id in existing:
            message = (f"{scene.path}: the archive already holds another scene named {plan.id!r} (from "
                       f"{existing[plan.id].path}); rename this one")
            result.failures.append(Failure(scene.name, scene.path, message))
            continue
        _start_scene(archive, plan)
        plans[plan.id] = plan
        for part in range(plan.parts):
            if archive.part_done(plan.id, part):
                continue
            units.append(Unit(plan.id, plan.path, part, plan.parts))
            tiles[(plan.id, part)] = _unit_tiles(plan, settings, part)
    reporter.progress("open scenes", len(scenes), len(scenes))
    return plans, units, tiles


def _unit_tiles(plan: SceneInfo, settings: TileSettings, part: int) -> int:
    from rs_vlm_app.geo.grid import GridSpec, build_windows

    n = len(build_windows(GridSpec.parse(settings.grid), plan.height, plan.width))
    size = -(-n // plan.parts)
    return max(0, min(size, n - part * size))


def _start_scene(archive: Archive, plan: SceneInfo) -> None:
    """Record the plan of a scene being indexed; parts left by an earlier run of other pixels go."""
    folder = archive.scene_folder(plan.id)
    path = folder / PLAN_FILE
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        old = None
    if old is not None and (old.get("fingerprint") != plan.fingerprint or old.get("parts") != plan.parts):
        for stale in list(folder.glob("part-*")):
            stale.unlink()
    if old is None or old.get("fingerprint") != plan.fingerprint or old.get("parts") != plan.parts:
        write_text_atomic(path, json.dumps({"fingerprint": plan.fingerprint, "parts": plan.parts,
                                            "path": plan.path}, indent=1))


def _record_part(archive: Archive, plan: SceneInfo, unit: UnitResult) -> None:
    table, _ = archive.part_paths(plan.id, unit.part)
    write_text_atomic(table.with_suffix(".json"), json.dumps(
        {"tiles": len(unit.windows), "skipped": unit.skipped, "seconds": unit.seconds, "worker": unit.worker}))


def _finish_scene(archive: Archive, plan: SceneInfo) -> None:
    plan.tiles = plan.skipped = 0
    plan.seconds = 0.0
    for part in range(plan.parts):
        table, _ = archive.part_paths(plan.id, part)
        stats = json.loads(table.with_suffix(".json").read_text(encoding="utf-8"))
        plan.tiles += int(stats["tiles"])
        plan.skipped += int(stats["skipped"])
        plan.seconds += float(stats["seconds"])
    archive.commit_scene(plan)
