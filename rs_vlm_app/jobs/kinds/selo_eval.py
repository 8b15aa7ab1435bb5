"""Job kind "eval-selo": the semantic-localization benchmark on an AIR-SLT-style folder."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

from rs_vlm_app.jobs.protocol import ResultFile
from rs_vlm_app.jobs.specs import JobResult, JobSpec, ModelSpec, register


@register
@dataclass
class SeloEvalSpec(JobSpec):
    """``rsvlm eval selo``: OUT/selo_metrics.json and .csv (Rsu, Ras, Rda, Rmi per sample, mean).

    Either ``data`` (an AIR-SLT folder), or ``scene`` with ``truth`` polygons (FILE[:LAYER], any CRS)
    whose ``query_field`` names each polygon's query."""

    kind: ClassVar[str] = "eval-selo"

    out: Path
    data: Path | None = None
    scene: Path | None = None
    truth: str | None = None
    query_field: str | None = None
    model: ModelSpec = field(default_factory=ModelSpec)
    compat: Literal["selo"] | None = None
    grid: str | None = None
    save_probmaps: bool = False

    def title(self) -> str:
        return f"SeLo evaluation of {Path(self.data or self.scene or '').name}"

    def inputs(self) -> list[Path]:
        return [Path(p) for p in (self.data, self.scene) if p is not None]

    def check(self) -> None:
        from rs_vlm_app.errors import UserError
        from rs_vlm_app.evaluation.selo_eval import read_annotations
        from rs_vlm_app.tasks.outputs import check_output_dir

        own = (self.scene, self.truth, self.query_field)
        if self.data is not None and any(v is not None for v in own):
            raise UserError("give either data (an AIR-SLT folder) or scene, truth and query_field, not both")
        if self.data is not None:
            for sample in read_annotations(Path(self.data)):  # every image, before the model loads
                if not (Path(self.data) / "imgs" / sample.image).is_file():
                    raise UserError(f"sample {sample.index} refers to imgs/{sample.image}, which does not exist",
                                    path=self.data)
        elif any(v is None for v in own):
            missing = [n for n, v in zip(("scene", "truth", "query_field"), own, strict=True) if v is None]
            raise UserError(f"give data (an AIR-SLT folder), or scene, truth and query_field (missing: "
                            f"{', '.join(missing)})")
        else:
            from rs_vlm_app.evaluation.selo_vector import read_truth
            from rs_vlm_app.jobs.kinds.common import check_scene

            check_scene(Path(self.scene), None)
            read_truth(self.truth, self.query_field)
        self.grid_spec()
        self.model.check(family="clip")
        check_output_dir(Path(self.out))

    def grid_spec(self):
        from rs_vlm_app.geo.grid import SELO_GRID, GridSpec

        return GridSpec.parse(self.grid) if self.grid else SELO_GRID

    def run(self, ctx) -> JobResult:
        from rs_vlm_app.evaluation.selo_eval import evaluate_selo
        from rs_vlm_app.evaluation.selo_vector import evaluate_selo_vector

        encoder = ctx.clip_encoder(self.model)
        out = Path(self.out)
        if self.data is not None:
            report = evaluate_selo(Path(self.data), encoder, out, compat=self.compat, grid=self.grid_spec(),
                                   save_probmaps=self.save_probmaps, reporter=ctx.reporter, cache=ctx.cache)
        else:
            report = evaluate_selo_vector(Path(self.scene), self.truth, self.query_field, encoder, out,
                                          compat=self.compat, grid=self.grid_spec(),
                                          save_probmaps=self.save_probmaps, reporter=ctx.reporter, cache=ctx.cache)
        files = [ResultFile(str(out / "selo_metrics.json"), "report", "SeLo metrics"),
                 ResultFile(str(out / "selo_metrics.csv"), "table", "SeLo metrics")]
        if self.save_probmaps:
            files.append(ResultFile(str(out / "probmaps"), "folder", "probability maps"))
        return JobResult(files, report)
