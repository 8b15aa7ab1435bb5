"""``build_dataset``: one MpGI build from a config, resumable, with progress and cancel.

Order of work: check the prompts (one-line errors before anything runs), lock the manifest, start
the backends (an endpoint that is down is a clear error now), ingest the sources with the rule
stage, run the model stages, run the quality checks. Stopping at any point (cancel, kill -9, a
power cut after the last commit) loses no finished work; the same call resumes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rs_vlm_app.errors import Cancelled, UserError
from rs_vlm_app.mpgi.backends import ChatBackend, create_backend
from rs_vlm_app.mpgi.config import BuildConfig, source_name
from rs_vlm_app.mpgi.generate import Generator
from rs_vlm_app.mpgi.ingest import ingest
from rs_vlm_app.mpgi.manifest import Manifest
from rs_vlm_app.mpgi.plan import CAPTION_PREFIX, Plan, load_plan
from rs_vlm_app.mpgi.quality import run_quality
from rs_vlm_app.reporting import NullReporter, Reporter

log = logging.getLogger(__name__)


@dataclass
class BuildSummary:
    """What a build did; JSON-serialisable (``to_dict``) for the jobs layer."""

    output: str
    manifest: str
    images: int = 0
    images_added: int = 0
    inputs_skipped: int = 0
    input_warnings: int = 0
    requests: int = 0
    retried: int = 0
    failed_units: int = 0
    captions: int = 0
    complete_images: int = 0
    verdicts: dict[str, int] = field(default_factory=dict)
    status: str = "completed"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def build_dataset(config: BuildConfig, *, reporter: Reporter | None = None) -> BuildSummary:
    """Build (or resume) the dataset ``config`` describes; see docs/dataset.md.

    Raises UserError for bad configuration, prompts or endpoints (one line), Cancelled when the
    reporter asks to stop (at the next image or batch; finished work is kept).
    """
    reporter = reporter or NullReporter()
    plan = load_plan(config)
    _check_sources_exist(config)
    _check_writable(config.output)
    with build_lock(config.manifest_path), Manifest(config.manifest_path, create=True) as manifest:
        _remember_config(manifest, config, plan)
        run_id = manifest.start_run({"shard": str(config.shard) if config.shard else None, "pid": os.getpid()})
        try:
            summary = asyncio.run(_build(config, plan, manifest, run_id, reporter))
        except Cancelled:
            manifest.finish_run(run_id, "cancelled")
            raise
        except UserError as exc:
            manifest.finish_run(run_id, "failed", str(exc))
            raise
        except KeyboardInterrupt:
            manifest.finish_run(run_id, "interrupted", "interrupted (Ctrl-C)")
            raise
        except BaseException as exc:
            manifest.finish_run(run_id, "failed", f"{type(exc).__name__}: {exc}")
            raise
        manifest.finish_run(run_id, summary.status)
        return summary


async def _build(config: BuildConfig, plan: Plan, manifest: Manifest, run_id: int, reporter: Reporter) -> BuildSummary:
    summary = BuildSummary(output=str(config.output), manifest=str(config.manifest_path))
    backends = {name: create_backend(name, config.backends[name]) for name in sorted(set(config.stage_backends().values()))}
    started: list[ChatBackend] = []
    try:
        for backend in backends.values():
            await backend.start()
            started.append(backend)
        _check_image_support(config, plan, backends)
        reporter.log(f"building {config.output} ({config.manifest_path.name})")
        ingested = ingest(config, manifest, reporter)
        summary.images_added = ingested.added
        summary.inputs_skipped = ingested.skipped
        summary.input_warnings = ingested.warnings
        generator = Generator(config, plan, manifest, run_id, backends, reporter)
        stats = await generator.run()
        summary.requests, summary.retried, summary.failed_units = stats.requests, stats.retried, stats.failed_units
    finally:
        for backend in started:
            await backend.close()
    clip_scorer = None
    if config.quality.clip is not None and config.quality.clip.action != "off":
        from rs_vlm_app.mpgi.clipscore import ClipScorer

        clip_scorer = ClipScorer(config.quality.clip, config.image)
    quality = run_quality(config, plan, manifest, reporter, clip_scorer)
    sources = [source_name(s) for s in config.sources]
    summary.images = manifest.image_count(sources)
    counts = manifest.stage_counts()
    summary.captions = sum(n for stage, n in counts.items() if stage.startswith(CAPTION_PREFIX))
    summary.complete_images = complete_images(manifest, plan)
    summary.verdicts = dict(manifest.db.execute(
        "SELECT verdict, COUNT(*) FROM outputs WHERE verdict IS NOT NULL GROUP BY verdict").fetchall())
    del quality
    summary.status = "completed" if summary.complete_images == summary.images else "incomplete"
    reporter.log(f"{summary.complete_images} of {summary.images} images have all {len(plan.slots)} captions"
                 + (f"; {summary.failed_units} unit{'' if summary.failed_units == 1 else 's'} failed this run "
                    "(rsvlm dataset status lists them)" if summary.failed_units else ""))
    return summary


def complete_images(manifest: Manifest, plan: Plan) -> int:
    """Images with every caption slot filled."""
    stages = plan.caption_stages
    marks = ",".join("?" * len(stages))
    return int(manifest.db.execute(
        f"SELECT COUNT(*) FROM (SELECT image_id FROM outputs WHERE stage IN ({marks}) GROUP BY image_id "
        "HAVING COUNT(*) = ?)", (*stages, len(stages))).fetchone()[0])


def _check_image_support(config: BuildConfig, plan: Plan, backends: dict[str, ChatBackend]) -> None:
    uses = [(step.stage, step.backend, step.prompt) for step in plan.relay_steps]
    uses += [(step.stage, step.backend, step.prompt) for step in plan.perspective_steps]
    uses.append(("integration", config.integration.backend, plan.integration))
    for stage, name, prompt in uses:
        backend = backends[name]
        if prompt.image and backend.accepts_images is False:
            raise UserError(f"{stage}: prompt {prompt.path} sends the image, but backend {name!r} "
                            f"({backend.describe()}) is a text-only model; use an image-text model for this stage")


def _check_sources_exist(config: BuildConfig) -> None:
    for i, source in enumerate(config.sources):
        for key in ("root", "annotations", "labels", "images", "metadata"):
            path = getattr(source, key, None)
            if path is None:
                continue
            ok = path.is_file() if key in ("annotations", "metadata") else path.is_dir()
            if not ok:
                raise UserError(f"sources[{i}].{key}: {'file' if key in ('annotations', 'metadata') else 'folder'} "
                                "not found", path=path)


def _check_writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the output folder ({exc.strerror})", path=folder) from None
    if not os.access(folder, os.W_OK):
        raise UserError("the output folder is not writable", path=folder)


def _remember_config(manifest: Manifest, config: BuildConfig, plan: Plan) -> None:
    """Store the config; warn when prompts changed since outputs were made (those outputs are kept)."""
    old = manifest.get_meta("prompt_digests") or {}
    counts = manifest.stage_counts()
    for stage, digest in plan.digests().items():
        if old.get(stage) not in (None, digest) and counts.get(stage):
            log.warning("the prompt of %s changed since %d outputs were made; they are kept (use a new output "
                        "folder to regenerate them)", stage, counts[stage])
    manifest.set_meta("config", config.to_dict())
    manifest.set_meta("prompt_digests", plan.digests())
    manifest.set_meta("stages", plan.stages)
    writers = {**plan.stage_backends(), **{stage: config.integration.backend for stage in plan.caption_stages}}
    manifest.set_meta("stage_models", {stage: {"backend": name, "model": _model_name(config.backends[name])}
                                       for stage, name in writers.items()})
    manifest.set_meta("slots", {name: {"words": slot.words, "length": slot.name} for name, slot in plan.slots})


def _model_name(backend) -> str:
    return str(backend.model)


@contextlib.contextmanager
def build_lock(manifest_path: Path) -> Iterator[None]:
    """One build per manifest at a time (an advisory lock the OS drops when the process dies)."""
    lock_path = manifest_path.with_name(manifest_path.name + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(lock_path, "a+")  # noqa: SIM115 - held for the whole build
    try:
        try:
            _lock_file(handle)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise UserError(f"another build is running on this manifest (pid {holder}); wait for it or stop it",
                            path=manifest_path) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield
    finally:
        handle.close()


def _lock_file(handle) -> None:
    """Take an exclusive lock on an open file without waiting; OSError if another process holds it."""
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        handle.seek(0)
        msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
        return
    fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
