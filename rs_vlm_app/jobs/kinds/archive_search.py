"""Job kind "archive-search": the tiles of a whole archive (rsvlm index) that best match a text."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from rs_vlm_app.errors import UserError
from rs_vlm_app.jobs.kinds.common import short
from rs_vlm_app.jobs.protocol import ResultFile
from rs_vlm_app.jobs.specs import JobResult, JobSpec, ModelSpec, register
from rs_vlm_app.tasks.options import SearchOptions, declared, default_of


@register
@dataclass
class ArchiveSearchSpec(JobSpec):
    """``rsvlm search --archive``: OUT (.gpkg, EPSG:4326), layer "results", and OUT.png (contact sheet)."""

    kind: ClassVar[str] = "archive-search"

    archive: Path
    query: str
    out: Path
    model: ModelSpec = field(default_factory=ModelSpec)    # must be the archive's model
    top_k: int = default_of(SearchOptions, "top_k")
    where: str | None = None                 # e.g. "date >= 2020-01-01 and scale = 256"
    aoi: str | None = None                   # FILE[:LAYER], any OGR vector
    exact: bool = False                      # exact even where an ANN index exists
    contact_sheet: bool = True
    columns: int = 5

    def title(self) -> str:
        return f"{short(self.query)} in archive {Path(self.archive).name}"

    def inputs(self) -> list[Path]:
        return [Path(self.archive)]

    def check(self) -> None:
        from rs_vlm_app.archive.filters import parse_where
        from rs_vlm_app.archive.store import Archive
        from rs_vlm_app.tasks.options import check_count
        from rs_vlm_app.tasks.outputs import check_output_file

        self.query = " ".join(self.query.split())
        if not self.query:
            raise UserError("the query is empty; give a description such as \"a marina with boats\"")
        check_count("top_k", self.top_k, maximum=int(declared(SearchOptions)["top_k"].maximum))
        check_count("columns", self.columns, maximum=100)
        Archive(Path(self.archive)).require_recipe()
        parse_where(self.where)
        self.model.check(family="clip")
        check_output_file(Path(self.out))

    def run(self, ctx) -> JobResult:
        from rs_vlm_app.archive.filters import make_filter
        from rs_vlm_app.archive.search import LAYER, search_archive

        filt = make_filter(self.where, self.aoi)
        encoder = ctx.clip_encoder(self.model)
        result = search_archive(Path(self.archive), self.query, Path(self.out), encoder, top_k=self.top_k, filt=filt,
                                contact_sheet=self.contact_sheet, columns=self.columns, exact=self.exact,
                                reporter=ctx.reporter)
        files = [ResultFile(str(result.out), "tiles", result.query, [LAYER])]
        if result.sheet is not None:
            files.append(ResultFile(str(result.sheet), "file", "contact sheet"))
        summary = {
            "query": result.query, "out": str(result.out), "sheet": str(result.sheet) if result.sheet else None,
            "archive": str(self.archive), "model": encoder.display_name, "crs": "EPSG:4326",
            "mode": result.mode, "scenes_searched": result.scenes_searched, "tiles_searched": result.tiles_searched,
            "hits": [{"rank": h.rank, "score": h.score, "scene": h.scene.id, "part": h.part, "row": h.row,
                      "window": list(h.window), "date": h.scene.date} for h in result.hits],
            "seconds": result.seconds,
        }
        return JobResult(files, summary)
