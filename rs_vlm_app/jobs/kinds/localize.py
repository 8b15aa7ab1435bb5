"""Job kind "localize": heat maps and hot spots of text queries on one scene."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

from rs_vlm_app.errors import UserError
from rs_vlm_app.jobs.protocol import ResultFile
from rs_vlm_app.jobs.specs import JobResult, JobSpec, ModelSpec, register


@register
@dataclass
class LocalizeSpec(JobSpec):
    """``rsvlm localize``: for each query, OUT/<stem>_heatmap.tif and OUT/<stem>.gpkg."""

    kind: ClassVar[str] = "localize"

    scene: Path
    queries: list[str]
    out: Path
    model: ModelSpec = field(default_factory=ModelSpec)
    grid: str | None = None                 # "selo" (default), "256,512@0.25", ...
    compat: Literal["selo"] | None = None
    bands: list[int] | None = None          # 1-based R, G, B (or one grey band)
    min_valid: float = 0.5
    hotspot_threshold: float = 0.6
    heatmap_pixel: float | None = None
    cog: bool = False

    def title(self) -> str:
        queries = "; ".join(self.queries)
        return f"{queries[:60] + ('...' if len(queries) > 60 else '')} on {Path(self.scene).name}"

    def inputs(self) -> list[Path]:
        return [Path(self.scene)]

    def check(self) -> None:
        from rs_vlm_app.geo.raster import open_raster
        from rs_vlm_app.tasks.localize import check_output_dir, check_queries

        self.queries = check_queries(list(self.queries))
        _check_fraction("min_valid", self.min_valid)
        _check_fraction("hotspot_threshold", self.hotspot_threshold)
        if self.heatmap_pixel is not None and self.heatmap_pixel <= 0:
            raise UserError(f"heatmap_pixel must be positive, not {self.heatmap_pixel}")
        self.grid_spec()
        self.model.check(family="clip")
        with open_raster(self.scene, bands=self.bands):
            pass  # a bad raster or band list fails here, before the model loads
        check_output_dir(Path(self.out))

    def grid_spec(self):
        from rs_vlm_app.geo.grid import SELO_GRID, GridSpec

        return GridSpec.parse(self.grid) if self.grid else SELO_GRID

    def run(self, ctx) -> JobResult:
        from rs_vlm_app.tasks.localize import LocalizeOptions, localize

        encoder = ctx.clip_encoder(self.model)
        options = LocalizeOptions(
            grid=self.grid_spec(), compat=self.compat, bands=tuple(self.bands) if self.bands else None,
            min_valid=self.min_valid, hotspot_threshold=self.hotspot_threshold,
            heatmap_pixel=self.heatmap_pixel, cog=self.cog,
        )
        result = localize(Path(self.scene), self.queries, Path(self.out), encoder, options,
                          reporter=ctx.reporter, cache=ctx.cache)
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
            "model": model_name(encoder, self.model),
            "queries": queries,
            "encoding": asdict(result.encoding) if result.encoding is not None else None,
        }
        return JobResult(files, summary)


def model_name(encoder, spec: ModelSpec) -> str:
    """The name a person knows the loaded model by."""
    loaded = getattr(encoder, "loaded", None)
    return str(getattr(loaded, "display_name", "") or getattr(encoder, "display_name", "") or spec.describe())


def _check_fraction(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise UserError(f"{name} must be between 0 and 1, not {value}")
