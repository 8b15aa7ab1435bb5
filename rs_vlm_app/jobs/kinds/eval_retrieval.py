"""Job kind "eval-retrieval": image-text retrieval recall on a caption CSV."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from rs_vlm_app.jobs.protocol import ResultFile
from rs_vlm_app.jobs.specs import JobResult, JobSpec, ModelSpec, register


@register
@dataclass
class RetrievalEvalSpec(JobSpec):
    """``rsvlm eval retrieval``: OUT/retrieval.json and retrieval.csv (R@1/5/10 both ways, mR)."""

    kind: ClassVar[str] = "eval-retrieval"

    data: Path                               # CSV (or TSV) with filepath and caption columns
    out: Path
    model: ModelSpec = field(default_factory=ModelSpec)

    def title(self) -> str:
        return f"retrieval evaluation on {Path(self.data).name}"

    def inputs(self) -> list[Path]:
        return [Path(self.data)]

    def check(self) -> None:
        from rs_vlm_app.evaluation.image_data import read_caption_csv
        from rs_vlm_app.tasks.outputs import check_output_dir

        read_caption_csv(Path(self.data))
        check_output_dir(Path(self.out))
        self.model.check(family="clip")

    def run(self, ctx) -> JobResult:
        from rs_vlm_app.evaluation.retrieval_eval import RESULT_CSV, RESULT_JSON, evaluate_retrieval

        encoder = ctx.clip_encoder(self.model)
        out = Path(self.out)
        report = evaluate_retrieval(Path(self.data), encoder, out, reporter=ctx.reporter)
        files = [ResultFile(str(out / RESULT_JSON), "report", "retrieval recall"),
                 ResultFile(str(out / RESULT_CSV), "table", "retrieval recall")]
        return JobResult(files, report)
