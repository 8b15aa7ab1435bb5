"""Job kind "search": the tiles of one or more scenes that best match a text query."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from rs_vlm_app.jobs.kinds.common import check_aoi, scene_names, short, task_options
from rs_vlm_app.jobs.protocol import ResultFile
from rs_vlm_app.jobs.specs import JobResult, JobSpec, ModelSpec, register
from rs_vlm_app.tasks.options import SearchOptions, default_of


@register
@dataclass
class SearchSpec(JobSpec):
    """``rsvlm search``: OUT (.gpkg), layer "results": the best tiles ranked, and OUT.png (contact sheet)."""

    kind: ClassVar[str] = "search"

    scenes: list[Path]
    query: str
    out: Path                                # the GeoPackage to write
    model: ModelSpec = field(default_factory=ModelSpec)
    # the task's options: defaults, ranges and meaning declared once in rs_vlm_app.tasks.options
    top_k: int = default_of(SearchOptions, "top_k")
    grid: str = default_of(SearchOptions, "grid")
    bands: list[int] | None = default_of(SearchOptions, "bands")
    min_valid: float = default_of(SearchOptions, "min_valid")
    crs: str = default_of(SearchOptions, "crs")
    contact_sheet: bool = default_of(SearchOptions, "contact_sheet")
    columns: int = default_of(SearchOptions, "columns")
    aoi: str | None = default_of(SearchOptions, "aoi")

    def title(self) -> str:
        return f"{short(self.query)} in {scene_names(self.scenes)}"

    def inputs(self) -> list[Path]:
        return [Path(s) for s in self.scenes]

    def options(self) -> SearchOptions:
        """The task's options, built (and so validated) once."""
        return task_options(self, SearchOptions)

    def check(self) -> None:
        from rs_vlm_app.tasks.outputs import check_vector_output
        from rs_vlm_app.tasks.search import check_search_inputs

        self.query, self.scenes = check_search_inputs(self.query, self.scenes)  # each raster opens once, in run
        self.options()
        self.model.check(family="clip")
        check_aoi(self.aoi, [Path(s) for s in self.scenes], self.bands)
        check_vector_output(Path(self.out))

    def run(self, ctx) -> JobResult:
        from rs_vlm_app.tasks.search import LAYER, search_scenes

        encoder = ctx.clip_encoder(self.model)
        result = search_scenes([Path(s) for s in self.scenes], self.query, Path(self.out), encoder, self.options(),
                               reporter=ctx.reporter, cache=ctx.cache, checked=True)
        files = [ResultFile(str(result.out), "tiles", result.query, [LAYER])]
        if result.sheet is not None:
            files.append(ResultFile(str(result.sheet), "file", "contact sheet"))
        summary = {
            "query": result.query, "out": str(result.out), "sheet": str(result.sheet) if result.sheet else None,
            "model": encoder.display_name, "scenes": [str(s) for s in result.scenes],
            "crs": result.crs, "crs_note": result.crs_note, "encoded_now": result.encoded_now,
            "hits": [{"rank": h.rank, "score": h.score, "scene": h.scene, "window": list(h.window)}
                     for h in result.hits],
            "seconds": result.seconds,
        }
        return JobResult(files, summary)
