"""Who runs the units of work: ``local`` (in this process, one after another; the default, nothing to
start) or ``ray`` (rs_vlm_app/archive/ray_engine.py). Both take the same units, call the same
:func:`~rs_vlm_app.archive.units.encode_unit`, and hand each finished unit to ``on_result`` in the
driver, which commits it; a unit that fails on bad input goes to ``on_failure`` and the run goes on.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol

from rs_vlm_app.archive.store import Recipe
from rs_vlm_app.archive.units import TileSettings, Unit, UnitResult, encode_unit
from rs_vlm_app.errors import Cancelled, UserError
from rs_vlm_app.reporting import Reporter, check_cancelled

ENGINES = ("local", "ray")

OnResult = Callable[[UnitResult], None]
OnFailure = Callable[[Unit, str], None]


class Engine(Protocol):
    name: str
    workers: int

    def recipe(self, settings: TileSettings) -> Recipe:
        """The recipe the engine's model makes embeddings with."""

    def run(self, units: list[Unit], settings: TileSettings, on_result: OnResult, on_failure: OnFailure,
            progress: ProgressTracker) -> None:
        """Encode every unit; raise Cancelled when the reporter asks to stop (finished units stay)."""

    def close(self) -> None:
        """Stop the workers (the engine's own Ray instance too)."""


def check_engine(engine: str, workers: int | None, ray_address: str | None) -> None:
    """One line when the engine settings cannot work: Ray missing, an unreachable cluster, or Ray-only
    settings given to the local engine. Checked before any model loads."""
    if engine != "ray":
        if workers is not None or ray_address:
            raise UserError("workers and ray_address need the ray engine (--engine ray)")
        return
    try:
        import ray  # noqa: F401
    except ImportError:
        raise UserError("--engine ray needs Ray: pip install 'rs-vlm[distributed]'") from None
    if ray_address:
        from rs_vlm_app.archive.ray_engine import check_reachable

        check_reachable(ray_address)


def encoder_recipe(encoder, settings: TileSettings) -> Recipe:
    """The Recipe of a loaded ClipEncoder and the tile settings."""
    loaded = getattr(encoder, "loaded", None)
    name = str(getattr(loaded, "display_name", "") or getattr(encoder, "display_name", "") or encoder.fingerprint)
    return Recipe(model=str(encoder.fingerprint), model_name=name, embed_dim=int(encoder.embed_dim),
                  preprocess=f"{encoder.preprocess_key()};tiles=fast", precision=str(getattr(encoder, "precision",
                                                                                              "fp32")),
                  grid=settings.grid, bands=list(settings.bands) if settings.bands else None,
                  min_valid=settings.min_valid)


class ProgressTracker:
    """Turns per-unit tile progress from any worker into one "index tiles" bar and a "scenes" count."""

    def __init__(self, reporter: Reporter, units: list[Unit], tiles: dict[tuple[str, int], int], scenes: int):
        self.reporter = reporter
        self.tiles = tiles
        self.total = sum(tiles.get(u.key, 0) for u in units)
        self.scenes_total = scenes
        self.scenes_done = 0
        self._done: dict[tuple[str, int], int] = {}
        self._lock = threading.Lock()
        reporter.progress("index tiles", 0, self.total)

    def unit(self, key: tuple[str, int], done: int) -> None:
        with self._lock:
            self._done[key] = min(int(done), self.tiles.get(key, int(done)))
            total_done = sum(self._done.values())
        self.reporter.progress("index tiles", total_done, self.total)

    def finished(self, key: tuple[str, int]) -> None:
        self.unit(key, self.tiles.get(key, 0))

    def scene_finished(self) -> None:
        self.scenes_done += 1
        self.reporter.progress("scenes", self.scenes_done, self.scenes_total)


class _UnitReporter:
    """What encode_unit reports to: its tile progress goes to the tracker; cancel comes from the job."""

    def __init__(self, job: Reporter, tracker: ProgressTracker, key: tuple[str, int]):
        self.job, self.tracker, self.key = job, tracker, key

    def progress(self, stage: str, done: int, total: int | None = None) -> None:
        self.tracker.unit(self.key, done)

    def log(self, message: str, level: str = "info") -> None:
        self.job.log(message, level)

    def cancel_requested(self) -> bool:
        return self.job.cancel_requested()


class LocalEngine:
    """Units one after another in this process, on one loaded encoder."""

    name = "local"
    workers = 1

    def __init__(self, encoder, reporter: Reporter):
        self.encoder = encoder
        self.reporter = reporter

    def recipe(self, settings: TileSettings) -> Recipe:
        return encoder_recipe(self.encoder, settings)

    def run(self, units: list[Unit], settings: TileSettings, on_result: OnResult, on_failure: OnFailure,
            progress: ProgressTracker) -> None:
        for unit in units:
            check_cancelled(self.reporter)
            try:
                result = encode_unit(unit, settings, self.encoder, _UnitReporter(self.reporter, progress, unit.key))
            except (Cancelled, KeyboardInterrupt):
                raise
            except UserError as exc:
                on_failure(unit, str(exc))
                continue
            except Exception as exc:  # a scene GDAL fails on mid-read: record it, go on with the others
                on_failure(unit, f"{unit.path}: cannot be encoded ({type(exc).__name__}: "
                                 f"{' '.join(str(exc).split())[:200]})")
                continue
            result.worker = "local"
            on_result(result)
            progress.finished(unit.key)

    def close(self) -> None:
        pass
