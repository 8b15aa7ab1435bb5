"""Job kind "localize": heat maps and hot spots of text queries on one scene."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

from rs_vlm_app.jobs.kinds.common import check_aoi, task_options
from rs_vlm_app.jobs.protocol import ResultFile
from rs_vlm_app.jobs.specs import JobResult, JobSpec, ModelSpec, register
from rs_vlm_app.tasks.options import LocalizeOptions, default_of


@register
@dataclass
class LocalizeSpec(JobSpec):
    """``rsvlm localize``: for each query, OUT/<stem>_heatmap.tif and OUT/<stem>.gpkg."""

    kind: ClassVar[str] = "localize"

    scene: Path
    queries: list[str]
    out: Path
    model: ModelSpec = field(default_factory=ModelSpec)
    # the task's options: defaults, ranges and meaning declared once in rs_vlm_app.tasks.options
    grid: str | None = default_of(LocalizeOptions, "grid")   # null: the task's default
    compat: Literal["selo"] | None = default_of(LocalizeOptions, "compat")
    bands: list[int] | None = default_of(LocalizeOptions, "bands")
    min_valid: float = default_of(LocalizeOptions, "min_valid")
    hotspot_threshold: float = default_of(LocalizeOptions, "hotspot_threshold")
    heatmap_pixel: float | None = default_of(LocalizeOptions, "heatmap_pixel")
    cog: bool = default_of(LocalizeOptions, "cog")
    aoi: str | None = default_of(LocalizeOptions, "aoi")

    def title(self) -> str:
        queries = "; ".join(self.queries)
        return f"{queries[:60] + ('...' if len(queries) > 60 else '')} on {Path(self.scene).name}"

    def inputs(self) -> list[Path]:
        return [Path(self.scene)]

    def options(self) -> LocalizeOptions:
        """The task's options, built (and so validated) once."""
        return task_options(self, LocalizeOptions)

    def check(self) -> None:
        from rs_vlm_app.tasks.inputs import check_input_file
        from rs_vlm_app.tasks.localize import check_queries
        from rs_vlm_app.tasks.outputs import check_output_dir

        self.queries = check_queries(list(self.queries))
        self.options()
        self.model.check(family="clip")
        check_input_file(Path(self.scene))  # opened once, by run, before the model loads
        check_aoi(self.aoi, [Path(self.scene)], self.bands)
        check_output_dir(Path(self.out))

    def run(self, ctx) -> JobResult:
        from rs_vlm_app.tasks.inputs import scene_source
        from rs_vlm_app.tasks.localize import localize

        options = self.options()
        with scene_source(self.scene, options.bands) as source:  # a bad raster fails before the model loads
            encoder = ctx.clip_encoder(self.model)
            result = localize(source, self.queries, Path(self.out), encoder, options, reporter=ctx.reporter,
                              cache=ctx.cache, checked=True)
        files: list[ResultFile] = []
        queries = []
        for q in result.queries:
            files.append(ResultFile(str(q.heatmap), "heatmap", q.query))
            style = Path(q.heatmap).with_suffix(".qml")
            if style.is_file():
                files.append(ResultFile(str(style), "style", q.query))
            files.append(ResultFile(str(q.vectors), "vectors", q.query, ["hotspots", "tiles"]))
            queries.append({"query": q.query, "heatmap": str(q.heatmap), "vectors": str(q.vectors),
                            "hotspots": q.hotspots, "best_cosine": q.best_cosine, "seconds": q.seconds})
        files.append(ResultFile(str(result.manifest), "manifest"))
        summary = {
            "scene": str(self.scene),
            "out": str(self.out),
            "model": encoder.display_name,
            "queries": queries,
            "encoding": asdict(result.encoding) if result.encoding is not None else None,
        }
        return JobResult(files, summary)

