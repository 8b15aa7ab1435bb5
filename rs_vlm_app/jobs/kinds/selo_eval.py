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
    """``rsvlm eval selo``: OUT/selo_metrics.json and .csv (Rsu, Ras, Rda, Rmi per sample, mean)."""

    kind: ClassVar[str] = "eval-selo"

    data: Path
    out: Path
    model: ModelSpec = field(default_factory=ModelSpec)
    compat: Literal["selo"] | None = None
    grid: str | None = None
    save_probmaps: bool = False

    def title(self) -> str:
        return f"SeLo evaluation of {Path(self.data).name}"

    def inputs(self) -> list[Path]:
        return [Path(self.data)]

    def check(self) -> None:
        from rs_vlm_app.evaluation.selo_eval import read_annotations
        from rs_vlm_app.tasks.localize import check_output_dir

        read_annotations(Path(self.data))
        self.grid_spec()
        self.model.check(family="clip")
        check_output_dir(Path(self.out))

    def grid_spec(self):
        from rs_vlm_app.geo.grid import SELO_GRID, GridSpec

        return GridSpec.parse(self.grid) if self.grid else SELO_GRID

    def run(self, ctx) -> JobResult:
        from rs_vlm_app.evaluation.selo_eval import evaluate_selo

        encoder = ctx.clip_encoder(self.model)
        out = Path(self.out)
        report = evaluate_selo(Path(self.data), encoder, out, compat=self.compat, grid=self.grid_spec(),
                               save_probmaps=self.save_probmaps, reporter=ctx.reporter, cache=ctx.cache)
        files = [ResultFile(str(out / "selo_metrics.json"), "report", "SeLo metrics"),
                 ResultFile(str(out / "selo_metrics.csv"), "table", "SeLo metrics")]
        if self.save_probmaps:
            files.append(ResultFile(str(out / "probmaps"), "folder", "probability maps"))
        return JobResult(files, report)
