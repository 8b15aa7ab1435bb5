"""Job kind "scene-batch": one per-scene job (caption, classify) over many scenes, local or on Ray,
with one merged layer in EPSG:4326."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from rs_vlm_app.jobs.protocol import ResultFile
from rs_vlm_app.jobs.specs import JobResult, JobSpec, register


@register
@dataclass
class SceneBatchSpec(JobSpec):
    """``rsvlm caption|classify --scenes ...``: OUT/<scene>.gpkg (caption) or OUT/<scene>/ (classify) and
    OUT/captions.gpkg or OUT/tiles.gpkg merging every scene (EPSG:4326, field ``scene``)."""

    kind: ClassVar[str] = "scene-batch"

    job: Literal["caption", "classify"]
    template: dict[str, Any]                 # the per-scene spec's fields (scene and out are filled in)
    out: Path                                # output folder
    scenes: list[str] = field(default_factory=list)
    scene_lists: list[str] = field(default_factory=list)
    asset: str | None = None
    engine: Literal["local", "ray"] = "local"
    workers: int | None = None
    ray_address: str | None = None

    def title(self) -> str:
        return f"{self.job} of {len(self.scenes) + len(self.scene_lists)} input(s)"

    def collect(self):
        from rs_vlm_app.archive.inputs import collect_scenes

        return collect_scenes(list(self.scenes), list(self.scene_lists), asset=self.asset)

    def check(self) -> None:
        from rs_vlm_app.archive.batch import scene_spec
        from rs_vlm_app.tasks.outputs import check_output_dir

        scenes, _ = self.collect()
        if scenes:  # the template's own checks (model, options) on the first scene, before any work
            first = scene_spec(self.template, self.job, scenes[0].name, scenes[0].path, Path(self.out))
            first.check()
        check_output_dir(Path(self.out))
        from rs_vlm_app.archive.engines import check_engine

        check_engine(self.engine, self.workers, self.ray_address)

    def run(self, ctx) -> JobResult:
        from rs_vlm_app.archive.batch import merge_outputs, run_batch

        scenes, problems = self.collect()
        outcomes = run_batch(self.template, self.job, [(s.name, s.path) for s in scenes], Path(self.out),
                             engine=self.engine, workers=self.workers, address=self.ray_address,
                             reporter=ctx.reporter)
        merged = merge_outputs(outcomes, self.job, Path(self.out))
        files = [ResultFile(**f) for o in outcomes for f in o.files]
        if merged is not None:
            files.append(ResultFile(str(merged), "tiles", f"{self.job} of all scenes",
                                    ["captions" if self.job == "caption" else "tiles"]))
        failures = [{"name": p.name, "path": p.path, "message": p.message} for p in problems]
        failures += [{"name": o.name, "path": o.path, "message": o.error} for o in outcomes if o.status != "ok"]
        summary = {"job": self.job, "out": str(self.out), "merged": str(merged) if merged else None,
                   "scenes": [o.name for o in outcomes if o.status == "ok"], "failures": failures,
                   "engine": self.engine}
        return JobResult(files, summary)
