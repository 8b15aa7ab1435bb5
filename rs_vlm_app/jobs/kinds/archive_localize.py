"""Job kind "archive-localize": heat maps and hot spots on every scene of an archive, from its embeddings."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from rs_vlm_app.jobs.kinds.common import short
from rs_vlm_app.jobs.protocol import ResultFile
from rs_vlm_app.jobs.specs import JobResult, JobSpec, ModelSpec, register


@register
@dataclass
class ArchiveLocalizeSpec(JobSpec):
    """``rsvlm localize --archive``: OUT/<scene>/<query>_heatmap.tif + <query>.gpkg, OUT/hotspots.gpkg."""

    kind: ClassVar[str] = "archive-localize"

    archive: Path
    queries: list[str]
    out: Path                                # output folder
    model: ModelSpec = field(default_factory=ModelSpec)    # must be the archive's model
    scenes: list[str] | None = None          # only these scenes (names); None = all
    where: str | None = None
    aoi: str | None = None
    hotspot_threshold: float = 0.6
    heatmap_pixel: float | None = None
    cog: bool = False

    def title(self) -> str:
        return f"{short('; '.join(self.queries))} on archive {Path(self.archive).name}"

    def inputs(self) -> list[Path]:
        return [Path(self.archive)]

    def check(self) -> None:
        from rs_vlm_app.archive.filters import parse_where
        from rs_vlm_app.archive.store import Archive
        from rs_vlm_app.errors import UserError
        from rs_vlm_app.tasks.localize import check_queries
        from rs_vlm_app.tasks.options import check_fraction
        from rs_vlm_app.tasks.outputs import check_output_dir

        self.queries = check_queries(list(self.queries))
        check_fraction("hotspot_threshold", self.hotspot_threshold)
        if self.heatmap_pixel is not None and self.heatmap_pixel <= 0:
            raise UserError(f"heatmap_pixel must be positive, not {self.heatmap_pixel}")
        archive = Archive(Path(self.archive))
        archive.require_recipe()
        unknown = sorted(set(self.scenes or []) - set(archive.scenes()))
        if unknown:
            raise UserError(f"the archive has no scene {unknown[0]!r}", path=self.archive)
        parse_where(self.where)
        self.model.check(family="clip")
        check_output_dir(Path(self.out))

    def run(self, ctx) -> JobResult:
        from rs_vlm_app.archive.filters import make_filter
        from rs_vlm_app.archive.localize import MANIFEST, localize_archive

        filt = make_filter(self.where, self.aoi)
        if self.scenes:
            from rs_vlm_app.archive.filters import SceneSet

            filt.conditions.append(SceneSet(frozenset(self.scenes)))
        encoder = ctx.clip_encoder(self.model)
        result = localize_archive(Path(self.archive), self.queries, Path(self.out), encoder, filt=filt,
                                  hotspot_threshold=self.hotspot_threshold, heatmap_pixel=self.heatmap_pixel,
                                  cog=self.cog, reporter=ctx.reporter)
        files = [ResultFile(str(heat), "heatmap", f"{query} ({scene})") for scene, query, heat in result.files]
        files += [ResultFile(str(result.merged), "vectors", "hot spots of the archive", ["hotspots"]),
                  ResultFile(str(Path(self.out) / MANIFEST), "manifest")]
        summary = {"archive": str(self.archive), "out": str(self.out), "model": encoder.display_name,
                   "queries": self.queries, "scenes": result.scenes, "hotspots": result.hotspots,
                   "merged": str(result.merged), "problems": result.problems, "seconds": result.seconds}
        return JobResult(files, summary)
