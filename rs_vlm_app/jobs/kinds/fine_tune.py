"""Job kind "fine-tune": fine-tune a CLIP or CoCa model on image-caption pairs (one process)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from rs_vlm_app.jobs.protocol import ResultFile
from rs_vlm_app.jobs.specs import JobResult, JobSpec, register

#: Spec fields named differently from rs_vlm_app.training.config.TrainConfig's settings.
_RENAMED = {"out": "output_dir", "arch": "model"}


@register
@dataclass
class FineTuneSpec(JobSpec):
    """``rsvlm train clip|coca``: a run folder with checkpoints/, model.safetensors, train_log.csv, summary.json.

    Every optional field left null takes the recipe's value, else TrainConfig's default, exactly as
    an option not given to ``rsvlm train`` does. Running the same spec again continues the run.
    """

    kind: ClassVar[str] = "fine-tune"

    task: Literal["clip", "coca"]
    data: str                                 # caption CSV (filepath,caption) or WebDataset shards
    out: Path                                 # run folder
    recipe: str | None = None                 # a shipped recipe (`rsvlm train recipes`) or a .toml file
    # model
    arch: str | None = None                   # open_clip architecture (TrainConfig.model)
    model_config: Path | None = None          # open_clip model config JSON of a custom architecture
    init: str | None = None                   # none | an open_clip pretrained tag | a checkpoint file
    quick_gelu: bool | None = None
    # data
    val_data: str | None = None
    val_zeroshot: str | None = None
    val_selo: str | None = None
    zeroshot_templates: str | None = None
    csv_image_key: str | None = None
    csv_caption_key: str | None = None
    augment: bool | None = None
    # optimisation
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    wd: float | None = None
    warmup: int | None = None
    schedule: Literal["cosine", "const"] | None = None
    beta1: float | None = None
    beta2: float | None = None
    eps: float | None = None
    grad_accum: int | None = None
    grad_clip_norm: float | None = None
    precision: Literal["auto", "fp32", "amp", "amp_bf16"] | None = None
    grad_checkpointing: bool | None = None
    caption_loss_weight: float | None = None
    contrastive_loss_weight: float | None = None
    # parameter-efficient fine-tuning
    lock_image: bool | None = None
    lock_image_unlocked_groups: int | None = None
    lora_rank: int | None = None
    lora_alpha: float | None = None
    lora_towers: list[str] | None = None
    # run control
    device: Literal["auto", "cpu", "cuda"] | None = None
    workers: int | None = None
    seed: int | None = None
    log_every: int | None = None
    save_every: int | None = None
    keep_checkpoints: int | None = None
    eval_every: int | None = None
    tensorboard: bool | None = None
    resume: bool | None = None
    stop_after_steps: int | None = None

    def title(self) -> str:
        return f"fine-tune {self.task.upper() if self.task == 'clip' else 'CoCa'} into {Path(self.out).name}"

    def inputs(self) -> list[Path]:
        return [Path(self.data)] if Path(self.data).is_file() else []

    def settings(self) -> dict[str, Any]:
        """The TrainConfig settings this spec gives (null fields left out)."""
        given: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "task" or value is None:
                continue
            given[_RENAMED.get(f.name, f.name)] = str(value) if isinstance(value, Path) else value
        return given

    def train_config(self):
        """The validated rs_vlm_app.training.config.TrainConfig (recipe and defaults filled in)."""
        from rs_vlm_app.training.recipes import resolve_config

        return resolve_config(self.task, self.settings())

    @classmethod
    def from_train_config(cls, config) -> FineTuneSpec:
        """The spec of a TrainConfig: every setting given explicitly (its recipe only named)."""
        values = config.to_dict()
        back = {v: k for k, v in _RENAMED.items()}
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {back.get(k, k): v for k, v in values.items() if back.get(k, k) in names}
        kwargs["out"] = Path(kwargs["out"])
        if kwargs.get("model_config"):
            kwargs["model_config"] = Path(kwargs["model_config"])
        return cls(**kwargs)

    def check(self) -> None:
        from rs_vlm_app.training.recipes import check_inputs

        check_inputs(self.train_config())

    def run(self, ctx) -> JobResult:
        from rs_vlm_app.training import train
        from rs_vlm_app.training.metrics_log import EVAL_CSV, TRAIN_CSV
        from rs_vlm_app.training.rundir import SUMMARY_JSON

        result = train(self.train_config(), reporter=ctx.reporter)
        run_dir = Path(result.run_dir)
        files = []
        if result.finished and result.model_path is not None and Path(result.model_path).is_file():
            files.append(ResultFile(str(result.model_path), "checkpoint", "fine-tuned model"))
        files.append(ResultFile(str(run_dir), "folder", "run folder"))
        for name, role, title in ((TRAIN_CSV, "table", "training log"), (EVAL_CSV, "table", "evaluation log"),
                                  (SUMMARY_JSON, "report", "run summary")):
            if (run_dir / name).is_file():
                files.append(ResultFile(str(run_dir / name), role, title))
        summary = {"run_dir": str(run_dir), "steps": result.steps, "total_steps": result.total_steps,
                   "finished": result.finished, "model": str(result.model_path) if result.model_path else None,
                   "metrics": result.metrics}
        return JobResult(files, summary)
