"""Job kind "eval-zeroshot": zero-shot classification accuracy on a folder of class sub-folders."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from rs_vlm_app.jobs.protocol import ResultFile
from rs_vlm_app.jobs.specs import JobResult, JobSpec, ModelSpec, register


@register
@dataclass
class ZeroshotEvalSpec(JobSpec):
    """``rsvlm eval zeroshot``: OUT/zeroshot.json, zeroshot.csv, confusion.csv, confusion.png."""

    kind: ClassVar[str] = "eval-zeroshot"

    data: Path                               # one sub-folder of images per class (AID, RESISC45, EuroSAT)
    out: Path
    model: ModelSpec = field(default_factory=ModelSpec)
    classes: str | None = None               # aid | resisc45 | eurosat | a class file; None: the folder names
    templates: str | None = None             # a template file (default: the built-in set)

    def title(self) -> str:
        return f"zero-shot evaluation on {Path(self.data).name}"

    def inputs(self) -> list[Path]:
        return [Path(self.data)]

    def check(self) -> None:
        from rs_vlm_app.evaluation.image_data import scan_class_folders
        from rs_vlm_app.evaluation.zeroshot_eval import match_classes
        from rs_vlm_app.tasks.classes import load_templates
        from rs_vlm_app.tasks.outputs import check_output_dir

        match_classes(scan_class_folders(Path(self.data)), self.classes)
        load_templates(self.templates)
        check_output_dir(Path(self.out))
        self.model.check(family="clip")

    def run(self, ctx) -> JobResult:
        from rs_vlm_app.evaluation.zeroshot_eval import (
            CONFUSION_CSV,
            CONFUSION_PNG,
            RESULT_CSV,
            RESULT_JSON,
            evaluate_zeroshot,
        )

        encoder = ctx.clip_encoder(self.model)
        out = Path(self.out)
        report = evaluate_zeroshot(Path(self.data), encoder, out, classes=self.classes, templates=self.templates,
                                   reporter=ctx.reporter)
        files = [ResultFile(str(out / RESULT_JSON), "report", "zero-shot accuracy"),
                 ResultFile(str(out / RESULT_CSV), "table", "accuracy per class"),
                 ResultFile(str(out / CONFUSION_CSV), "table", "confusion matrix"),
                 ResultFile(str(out / CONFUSION_PNG), "file", "confusion matrix")]
        return JobResult(files, report)
