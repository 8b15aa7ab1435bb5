"""Job kind "eval-caption": BLEU, METEOR, ROUGE-L, CIDEr (SPICE) of predicted captions."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from rs_vlm_app.jobs.specs import JobSpec, register


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
        from rs_vlm_app.tasks.localize import check_output_dir

        match_ids(read_predictions(self.pred), read_references(self.refs), self.pred, self.refs)
        check_output_dir(Path(self.out))
