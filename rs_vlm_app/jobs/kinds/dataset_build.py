"""Job kind "dataset-build": build or resume a captioned dataset (MpGI) from a YAML config."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

from rs_vlm_app.jobs.protocol import ResultFile
from rs_vlm_app.jobs.specs import JobResult, JobSpec, register


@register
@dataclass
class DatasetBuildSpec(JobSpec):
    """``rsvlm dataset build``: the dataset folder with manifest.sqlite (every model reply, resumable)."""

    kind: ClassVar[str] = "dataset-build"

    config: Path                             # build configuration (YAML)
    out: Path | None = None                  # dataset folder (overrides "output" in the config)
    shard: str | None = None                 # "I/N": build only shard I of N
    engine: Literal["local", "ray"] = "local"  # ray: shards as Ray tasks, merged at the end
    workers: int | None = None               # ray: shards (default: one per CPU of the cluster)
    ray_address: str | None = None           # ray: join this cluster instead of starting one

    def title(self) -> str:
        shard = f" (shard {self.shard})" if self.shard else ""
        return f"dataset build {Path(self.config).name}{shard}"

    def inputs(self) -> list[Path]:
        return [Path(self.config)]

    def build_config(self):
        """The mpgi BuildConfig: the file, then ``shard`` and ``out``."""
        import dataclasses

        from rs_vlm_app.mpgi.config import Shard, load_config

        config = load_config(self.config)
        if self.shard:
            config = config.with_shard(Shard.parse(self.shard))
        if self.out is not None:
            config = dataclasses.replace(config, output=Path(self.out).expanduser().resolve())
        return config

    def check(self) -> None:
        from rs_vlm_app.errors import UserError

        self.build_config()
        if self.engine == "ray" and self.shard:
            raise UserError("--engine ray makes its own shards; leave out --shard")
        from rs_vlm_app.archive.engines import check_engine

        check_engine(self.engine, self.workers, self.ray_address)

    def run(self, ctx) -> JobResult:
        if self.engine == "ray":
            from rs_vlm_app.mpgi.ray_build import build_on_ray

            summary = build_on_ray(self.build_config(), shards=self.workers, address=self.ray_address,
                                   reporter=ctx.reporter)
            files = [ResultFile(summary["output"], "folder", "dataset"),
                     ResultFile(summary["manifest"], "file", "manifest")]
            return JobResult(files, summary)
        from rs_vlm_app.mpgi.pipeline import build_dataset

        summary = build_dataset(self.build_config(), reporter=ctx.reporter)
        files = [ResultFile(summary.output, "folder", "dataset"), ResultFile(summary.manifest, "file", "manifest")]
        return JobResult(files, summary.to_dict())
