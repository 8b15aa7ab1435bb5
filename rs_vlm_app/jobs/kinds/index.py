"""Job kind "index": encode every tile of many scenes into an archive folder (local or Ray engine)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

from rs_vlm_app.errors import UserError
from rs_vlm_app.jobs.protocol import ResultFile
from rs_vlm_app.jobs.specs import JobResult, JobSpec, ModelSpec, register


@register
@dataclass
class IndexSpec(JobSpec):
    """``rsvlm index``: ARCHIVE/ (scenes/, archive.json, failures.json, index/ when large)."""

    kind: ClassVar[str] = "index"

    archive: Path                            # the archive folder (created when new)
    scenes: list[str] = field(default_factory=list)        # files, folders, globs, GDAL paths
    scene_lists: list[str] = field(default_factory=list)   # text files of paths/URLs, globs, STAC JSON
    asset: str | None = None                 # STAC asset to read (default: the visual/RGB one)
    model: ModelSpec = field(default_factory=ModelSpec)
    grid: str = "256"
    bands: list[int] | None = None
    min_valid: float = 0.5
    engine: Literal["local", "ray"] = "local"
    workers: int | None = None               # ray: actors (default: one per GPU, else CPUs / 4)
    ray_address: str | None = None           # ray: join this cluster instead of starting one
    unit_tiles: int = 20_000                 # scenes with more tiles are split into units of this size

    def title(self) -> str:
        what = len(self.scenes) + len(self.scene_lists)
        return f"index {what} input(s) into {Path(self.archive).name}"

    def settings(self):
        from rs_vlm_app.archive.units import TileSettings
        from rs_vlm_app.tasks.options import check_bands, check_count, check_fraction, parse_grid

        check_fraction("min_valid", self.min_valid)
        check_count("unit_tiles", self.unit_tiles, minimum=1)
        if self.workers is not None:
            check_count("workers", self.workers, minimum=1, maximum=4096)
        return TileSettings(grid=parse_grid(self.grid).key(), bands=check_bands(self.bands),
                            min_valid=float(self.min_valid))

    def collect(self):
        from rs_vlm_app.archive.inputs import collect_scenes

        return collect_scenes([str(s) for s in self.scenes], [str(s) for s in self.scene_lists], asset=self.asset)

    def check(self) -> None:
        self.settings()
        self.collect()
        if Path(self.archive).exists() and not Path(self.archive).is_dir():
            raise UserError("the archive must be a folder", path=self.archive)
        self.model.check(family="clip")
        from rs_vlm_app.archive.engines import check_engine

        check_engine(self.engine, self.workers, self.ray_address)

    def run(self, ctx) -> JobResult:
        from rs_vlm_app.archive.indexer import index_archive

        scenes, problems = self.collect()

        def make_engine():
            if self.engine == "ray":
                from rs_vlm_app.archive.ray_engine import RayEngine

                return RayEngine(self.model, ctx.reporter, workers=self.workers, address=self.ray_address)
            from rs_vlm_app.archive.engines import LocalEngine

            return LocalEngine(ctx.clip_encoder(self.model), ctx.reporter)

        result = index_archive(scenes, problems, Path(self.archive), self.settings(), make_engine,
                               reporter=ctx.reporter, unit_tiles=self.unit_tiles)
        summary = result.to_dict()
        summary["failures"] = [asdict(f) for f in result.failures]
        summary["inputs"] = len(scenes) + len(problems)
        files = [ResultFile(str(result.archive), "folder", "archive"),
                 ResultFile(str(result.archive / "failures.json"), "report", "scenes that failed")]
        return JobResult(files, summary)
