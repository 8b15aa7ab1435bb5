"""Job kind "dataset-export": write a built dataset's captions as open_clip CSV, WebDataset or JSONL."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

from rs_vlm_app.jobs.protocol import ResultFile
from rs_vlm_app.jobs.specs import JobResult, JobSpec, register


@register
@dataclass
class DatasetExportSpec(JobSpec):
    """``rsvlm dataset export``: the captions that passed the quality checks, in one format."""

    kind: ClassVar[str] = "dataset-export"

    dataset: Path                                  # dataset folder (or a manifest file)
    format: Literal["csv", "wds", "jsonl"] = "csv"
    output: Path | None = None                     # default DATASET/export/captions.csv, captions.jsonl or wds/
    exclude_flagged: bool = False                  # leave out captions the quality checks flagged

    def title(self) -> str:
        return f"dataset export {Path(self.dataset).name} ({self.format})"

    def inputs(self) -> list[Path]:
        return [Path(self.dataset)]

    def check(self) -> None:
        from rs_vlm_app.mpgi.datasetdir import main_manifest

        main_manifest(Path(self.dataset))

    def run(self, ctx) -> JobResult:
        from rs_vlm_app.mpgi.export import export_dataset

        summary = export_dataset(Path(self.dataset), self.format, output=self.output,
                                 include_flagged=not self.exclude_flagged, reporter=ctx.reporter)
        role = "folder" if self.format == "wds" else "table"
        return JobResult([ResultFile(summary.output, role, f"{self.format} export")], summary.to_dict())
