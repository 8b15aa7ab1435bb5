"""TrainConfig: every setting of a fine-tuning run, typed, validated and JSON-serialisable.

A run directory keeps its config in ``run.json``; starting again with the same settings continues
the run, different settings are refused (see :func:`identity`). The CLI, recipes and the jobs layer
all build a TrainConfig; nothing else decides how a run trains.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rs_vlm_app.errors import UserError

TASKS = ("clip", "coca")
PRECISIONS = ("auto", "fp32", "amp", "amp_bf16")
SCHEDULES = ("cosine", "const")
DEVICES = ("auto", "cpu", "cuda")
LORA_TOWERS = ("image", "text", "decoder")

#: Settings that change how a run is executed or reported, never what it learns: they may differ
#: between the first start of a run and a resume.
NON_IDENTITY_FIELDS = frozenset({
    "output_dir", "resume", "workers", "device", "log_every", "save_every", "keep_checkpoints",
    "eval_every", "val_data", "val_zeroshot", "val_selo", "zeroshot_templates", "tensorboard", "stop_after_steps",
    "recipe",
})


@dataclass
class TrainConfig:
    """One fine-tuning run. Paths are strings so the config round-trips through JSON unchanged."""

    task: str
    data: str
    output_dir: str
    # model
    model: str = "ViT-B-32"
    model_config: str | None = None
    init: str = "none"
    quick_gelu: bool | None = None
    # data
    val_data: str | None = None
    val_zeroshot: str | None = None
    val_selo: str | None = None               # AIR-SLT layout folder: SeLo metrics at each evaluation
    zeroshot_templates: str | None = None
    csv_image_key: str = "filepath"
    csv_caption_key: str = "caption"
    augment: bool = True
    # optimisation
    epochs: int = 1
    batch_size: int = 32
    lr: float = 5e-6
    wd: float = 0.2
    warmup: int = 100
    schedule: str = "cosine"
    beta1: float = 0.9
    beta2: float = 0.98
    eps: float = 1e-6
    grad_accum: int = 1
    grad_clip_norm: float | None = None
    precision: str = "auto"
    grad_checkpointing: bool = False
    # CoCa
    caption_loss_weight: float = 2.0
    contrastive_loss_weight: float = 1.0
    # parameter-efficient fine-tuning
    lock_image: bool = False
    lock_image_unlocked_groups: int = 0
    lora_rank: int = 0
    lora_alpha: float | None = None
    lora_towers: list[str] = field(default_factory=lambda: ["image", "text"])
    # run control
    seed: int = 0
    workers: int = 2
    device: str = "auto"
    log_every: int = 10
    save_every: int = 500
    keep_checkpoints: int = 2
    eval_every: int = 0
    tensorboard: bool = True
    resume: bool = False
    stop_after_steps: int | None = None
    recipe: str | None = None

    # --- derived values -------------------------------------------------------------------------
    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir)

    @property
    def effective_lora_alpha(self) -> float:
        return float(self.lora_alpha if self.lora_alpha is not None else 2 * self.lora_rank)

    @property
    def model_name(self) -> str:
        """The open_clip model name: the architecture, or the stem of ``model_config``."""
        return Path(self.model_config).stem if self.model_config else self.model

    @property
    def use_quick_gelu(self) -> bool:
        """QuickGELU as asked; automatic: on for OpenAI weights (they were trained with it)."""
        if self.quick_gelu is not None:
            return self.quick_gelu
        return self.init == "openai"

    # --- validation and serialisation -----------------------------------------------------------
    def validate(self) -> TrainConfig:
        """Raise UserError naming the first bad setting; return self for chaining."""
        _choice("task", self.task, TASKS)
        _choice("--precision", self.precision, PRECISIONS)
        _choice("--schedule", self.schedule, SCHEDULES)
        _choice("--device", self.device, DEVICES)
        for name in ("epochs", "batch_size", "grad_accum", "log_every", "keep_checkpoints"):
            _at_least(name, getattr(self, name), 1)
        for name in ("warmup", "save_every", "eval_every", "workers", "lora_rank",
                     "lock_image_unlocked_groups", "seed"):
            _at_least(name, getattr(self, name), 0)
        if self.stop_after_steps is not None:
            _at_least("stop_after_steps", self.stop_after_steps, 1)
        if not self.lr > 0:
            raise UserError(f"--lr must be positive, got {self.lr}")
        for name in ("wd", "eps", "caption_loss_weight", "contrastive_loss_weight"):
            if getattr(self, name) < 0:
                raise UserError(f"--{_flag(name)} must not be negative, got {getattr(self, name)}")
        for name in ("beta1", "beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise UserError(f"--{name} must lie in [0, 1), got {getattr(self, name)}")
        if self.grad_clip_norm is not None and self.grad_clip_norm <= 0:
            raise UserError(f"--grad-clip-norm must be positive, got {self.grad_clip_norm}")
        if self.task == "coca" and self.caption_loss_weight == 0 and self.contrastive_loss_weight == 0:
            raise UserError("CoCa needs a caption or a contrastive loss weight above zero")
        bad_towers = [t for t in self.lora_towers if t not in LORA_TOWERS]
        if bad_towers:
            raise UserError(f"--lora-towers: unknown tower {bad_towers[0]!r} (choose from {', '.join(LORA_TOWERS)})")
        if self.lora_rank and not self.lora_towers:
            raise UserError("--lora needs at least one tower in --lora-towers")
        if self.lora_rank and self.lock_image and self.lora_towers == ["image"]:
            raise UserError("--lock-image with LoRA on the image tower only leaves nothing to train")
        if not self.data:
            raise UserError("no training data given (--data)")
        if not self.output_dir:
            raise UserError("no run directory given (-o/--output)")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, sort_keys=True)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise UserError(f"unknown training setting {unknown[0]!r}")
        return cls(**values)

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)


def identity(config: TrainConfig | dict[str, Any]) -> dict[str, Any]:
    """The settings that define what a run learns; two starts of one run must agree on all of them."""
    values = config.to_dict() if isinstance(config, TrainConfig) else dict(config)
    return {k: v for k, v in sorted(values.items()) if k not in NON_IDENTITY_FIELDS}


def identity_differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """Human-readable differences between two identities, e.g. ``lr 1e-05 -> 5e-06``."""
    keys = sorted(set(a) | set(b))
    return [f"{k} {a.get(k)!r} -> {b.get(k)!r}" for k in keys if a.get(k) != b.get(k)]


def _choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise UserError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


def _at_least(name: str, value: int, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise UserError(f"--{_flag(name)} must be a whole number >= {minimum}, got {value!r}")


def _flag(name: str) -> str:
    return name.replace("_", "-")
