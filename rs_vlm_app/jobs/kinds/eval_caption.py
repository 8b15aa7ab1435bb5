"""Job kind "eval-caption": BLEU, METEOR, ROUGE-L, CIDEr (SPICE) of predicted captions."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from rs_vlm_app.jobs.protocol import ResultFile
from rs_vlm_app.jobs.specs import JobResult, JobSpec, register


@register
@dataclass
class CaptionEvalSpec(JobSpec):
    """``rsvlm eval caption``: OUT/caption_metrics.json, caption_metrics.csv, caption_metrics_per_image.csv."""

    kind: ClassVar[str] = "eval-caption"

    pred: Path                               # predicted captions (JSON or CSV), one per image
    refs: Path                               # reference captions (JSON, COCO annotations or CSV)
    out: Path
    spice: bool = True                       # also SPICE where Java and CoreNLP are present

    def title(self) -> str:
        return f"caption metrics of {Path(self.pred).name}"

    def inputs(self) -> list[Path]:
        return [Path(self.pred), Path(self.refs)]

    def check(self) -> None:
        from rs_vlm_app.evaluation.caption_metrics import match_ids, read_predictions, read_references
        from rs_vlm_app.tasks.outputs import check_output_dir

        match_ids(read_predictions(self.pred), read_references(self.refs), self.pred, self.refs)
        check_output_dir(Path(self.out))

    def run(self, ctx) -> JobResult:
        from rs_vlm_app.evaluation.caption_metrics import (
            PER_IMAGE_CSV,
            RESULT_CSV,
            RESULT_JSON,
            evaluate_captions,
        )

        out = Path(self.out)
        ctx.reporter.progress("score captions", 0, 1)
        scores = evaluate_captions(self.pred, self.refs, out, spice=self.spice)
        ctx.reporter.progress("score captions", 1, 1)
        files = [ResultFile(str(out / RESULT_JSON), "report", "caption metrics"),
                 ResultFile(str(out / RESULT_CSV), "table", "caption metrics"),
                 ResultFile(str(out / PER_IMAGE_CSV), "table", "caption metrics per image")]
        summary = {"images": scores.n_images, "metrics": scores.corpus, "skipped": scores.skipped,
                   "tokenizer": scores.tokenizer}
        return JobResult(files, summary)
