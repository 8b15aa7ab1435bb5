"""One per-scene job (caption, classify) over many scenes, on the local or the ray engine, and one
layer merging every scene's result in EPSG:4326.

The unit of work is the per-scene job spec itself (``CaptionSpec``/``ClassifySpec`` with its scene
and output filled in), so each scene's outputs are exactly what the single-scene command writes.
On Ray each actor keeps one model cache: the model loads once per worker. A scene that fails is
reported and the others complete; a worker that dies is restarted and its scene re-run.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rs_vlm_app.errors import Cancelled, UserError
from rs_vlm_app.reporting import NullReporter, Reporter, check_cancelled

#: per kind: (file name of a scene's output, or a folder's file; the layer to merge; merged file)
MERGE = {
    "caption": ("{name}.gpkg", None, "captions", "captions.gpkg"),
    "classify": ("{name}", "tiles.gpkg", "tiles", "tiles.gpkg"),
}


@dataclass
class SceneOutcome:
    name: str
    path: str
    status: str                       # "ok" or "error"
    summary: dict = field(default_factory=dict)
    files: list[dict] = field(default_factory=list)
    error: str | None = None


def scene_spec(template: dict, kind: str, name: str, path: str, out: Path):
    """The per-scene spec: the template with this scene and its output path."""
    from rs_vlm_app.jobs.specs import spec_from_dict

    target, *_ = MERGE[kind]
    return spec_from_dict({**template, "kind": kind, "scene": path, "out": str(out / target.format(name=name))})


def run_spec_here(spec, context, name: str) -> SceneOutcome:
    """Check and run one per-scene spec with ``context`` (model cache kept between scenes)."""
    try:
        spec.check()
        result = spec.run(context)
    except (Cancelled, KeyboardInterrupt):
        raise
    except UserError as exc:
        return SceneOutcome(name, str(spec.scene), "error", error=str(exc))
    except Exception as exc:
        return SceneOutcome(name, str(spec.scene), "error",
                            error=f"{spec.scene}: failed ({type(exc).__name__}: {' '.join(str(exc).split())[:200]})")
    return SceneOutcome(name, str(spec.scene), "ok", summary=result.summary, files=[f.to_dict() for f in result.files])


def run_batch(template: dict, kind: str, scenes: list[tuple[str, str]], out: Path, *, engine: str = "local",
              workers: int | None = None, address: str | None = None,
              reporter: Reporter | None = None) -> list[SceneOutcome]:
    """Run the ``kind`` job of ``template`` on every (name, path) of ``scenes``; outputs under ``out``."""
    reporter = reporter or NullReporter()
    specs = [(name, scene_spec(template, kind, name, path, out)) for name, path in scenes]
    outcomes: list[SceneOutcome] = []
    reporter.progress("scenes", 0, len(specs))
    if engine == "ray":
        outcomes = _run_on_ray(specs, workers, address, reporter)
    else:
        from rs_vlm_app.jobs.context import JobContext

        context = JobContext(reporter=_Quiet(reporter))
        for name, spec in specs:
            check_cancelled(reporter)
            outcomes.append(run_spec_here(spec, context, name))
            reporter.progress("scenes", len(outcomes), len(specs))
    for outcome in outcomes:
        if outcome.error:
            reporter.log(outcome.error, "warning")
    return outcomes


class _Quiet:
    """A scene's own progress stays quiet; the batch reports scenes. Cancel passes through."""

    def __init__(self, job: Reporter):
        self.job = job

    def progress(self, stage: str, done: int, total: int | None = None) -> None:
        pass

    def log(self, message: str, level: str = "info") -> None:
        if level not in ("info", "debug"):
            self.job.log(message, level)

    def cancel_requested(self) -> bool:
        return self.job.cancel_requested()


def _run_on_ray(specs, workers, address, reporter: Reporter) -> list[SceneOutcome]:
    import ray

    from rs_vlm_app.archive.ray_engine import connect

    started_here = connect(address, workers)
    actor_class = ray.remote(max_restarts=-1, max_task_retries=-1)(_SpecActor)
    try:
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        count = workers or gpus or max(1, int(resources.get("CPU", 1)) // 4)
        per_actor = {"num_gpus": 1} if gpus >= count else {"num_cpus": 1}
        actors = [actor_class.options(**per_actor).remote() for _ in range(count)]
        todo = collections.deque(specs)
        idle = list(range(count))
        pending: dict = {}
        outcomes: list[SceneOutcome] = []
        try:
            while todo or pending:
                if reporter.cancel_requested():
                    raise Cancelled()
                while idle and todo:
                    (name, spec), actor = todo.popleft(), idle.pop()
                    pending[actors[actor].run.remote(spec.to_dict(), name)] = (name, spec, actor)
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)
                for ref in ready:
                    name, spec, actor = pending.pop(ref)
                    idle.append(actor)
                    try:
                        outcomes.append(SceneOutcome(**ray.get(ref)))
                    except ray.exceptions.RayError as exc:
                        outcomes.append(SceneOutcome(name, str(spec.scene), "error",
                                                     error=f"{spec.scene}: its worker failed ({type(exc).__name__})"))
                    reporter.progress("scenes", len(outcomes), len(specs))
        finally:
            for actor in actors:
                with contextlib.suppress(Exception):
                    ray.kill(actor, no_restart=True)
        return outcomes
    finally:
        if started_here:
            ray.shutdown()


class _SpecActor:
    """Runs per-scene specs with one model cache for its whole life."""

    def __init__(self):
        from rs_vlm_app.jobs.context import JobContext

        self.context = JobContext()

    def run(self, data: dict[str, Any], name: str) -> dict[str, Any]:
        from rs_vlm_app.jobs.specs import spec_from_dict

        return dataclasses.asdict(run_spec_here(spec_from_dict(data), self.context, name))


def merge_outputs(outcomes: list[SceneOutcome], kind: str, out: Path) -> Path | None:
    """Every successful scene's layer, reprojected to EPSG:4326 with a ``scene`` field, in one GeoPackage."""
    import geopandas as gpd
    import pandas as pd

    from rs_vlm_app.atomic import atomic_path

    target, inner, layer, merged_name = MERGE[kind]
    frames = []
    for outcome in outcomes:
        if outcome.status != "ok":
            continue
        path = out / target.format(name=outcome.name)
        if inner:
            path = path / inner
        frame = gpd.read_file(path, layer=layer, engine="pyogrio")
        if frame.crs is None or frame.empty:
            continue
        frame = frame.to_crs(4326)
        frame.insert(0, "scene", outcome.name)
        frames.append(frame)
    if not frames:
        return None
    merged = gpd.GeoDataFrame(pd.concat(frames, ignore_index=True), crs=4326)
    target_path = out / merged_name
    with atomic_path(target_path) as tmp:
        merged.to_file(tmp, layer=layer, driver="GPKG", engine="pyogrio")
    return target_path
