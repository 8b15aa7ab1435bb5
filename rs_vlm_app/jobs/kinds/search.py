"""Job kind "search": the tiles of one or more scenes that best match a text query."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from rs_vlm_app.errors import UserError
from rs_vlm_app.jobs.kinds.common import check_scene, model_name, scene_names, short
from rs_vlm_app.jobs.protocol import ResultFile
from rs_vlm_app.jobs.specs import JobResult, JobSpec, ModelSpec, register


@register
@dataclass
class SearchSpec(JobSpec):
    """``rsvlm search``: OUT (.gpkg), layer "results": the best tiles ranked, and OUT.png (contact sheet)."""

    kind: ClassVar[str] = "search"

    scenes: list[Path]
    query: str
    out: Path                                # the GeoPackage to write
    model: ModelSpec = field(default_factory=ModelSpec)
    top_k: int = 20
    grid: str = "256"
    bands: list[int] | None = None
    min_valid: float = 0.5
    crs: str = "first"                       # "first" (the first scene's CRS) or e.g. "EPSG:4326"
    contact_sheet: bool = True
    columns: int = 5

    def title(self) -> str:
        return f"{short(self.query)} in {scene_names(self.scenes)}"

    def inputs(self) -> list[Path]:
        return [Path(s) for s in self.scenes]

    def options(self):
        """The task's SearchOptions (validates top_k, grid, bands, min_valid, crs, columns)."""
        from rs_vlm_app.tasks.search import SearchOptions

        return SearchOptions(top_k=self.top_k, grid=self.grid, bands=tuple(self.bands) if self.bands else None,
                             min_valid=self.min_valid, crs=self.crs, contact_sheet=self.contact_sheet,
                             columns=self.columns)

    def check(self) -> None:
        from rs_vlm_app.tasks.captioning import check_output_file

        self.query = " ".join(self.query.split())
        if not self.query:
            raise UserError("the query is empty; give a description such as \"a marina with boats\"")
        if not self.scenes:
            raise UserError("give at least one scene to search")
        missing = [s for s in self.scenes if not Path(s).exists()]
        if missing:
            raise UserError("file not found", path=missing[0])
        self.options()
        self.model.check(family="clip")
        for scene in self.scenes:
            check_scene(scene, self.bands)
        check_output_file(Path(self.out))

    def run(self, ctx) -> JobResult:
        from rs_vlm_app.tasks.search import LAYER, search_scenes

        encoder = ctx.clip_encoder(self.model)
        result = search_scenes([Path(s) for s in self.scenes], self.query, Path(self.out), encoder, self.options(),
                               reporter=ctx.reporter, cache=ctx.cache)
        files = [ResultFile(str(result.out), "tiles", result.query, [LAYER])]
        if result.sheet is not None:
            files.append(ResultFile(str(result.sheet), "file", "contact sheet"))
        summary = {
            "query": result.query, "out": str(result.out), "sheet": str(result.sheet) if result.sheet else None,
            "model": model_name(encoder, self.model), "scenes": [str(s) for s in result.scenes],
            "crs": result.crs, "crs_note": result.crs_note, "encoded_now": result.encoded_now,
            "hits": [{"rank": h.rank, "score": h.score, "scene": h.scene, "window": list(h.window)}
                     for h in result.hits],
            "seconds": result.seconds,
        }
        return JobResult(files, summary)
