"""ModelSpec: the one description of "which model, and where it computes" that every layer passes.

Job specs hold it (JSON field ``model``), the CLI builds it from its options
(rs_vlm_app.commands.options.model_spec_from_args), the GUI and the plugin send it as the JSON
object rs_vlm_app.jobs.protocol.model_object builds, and the factory and the model cache
(rs_vlm_app.models.cache) take it. Errors name its fields (``checkpoint``, ``arch``, ...), not
any front end's flags.

Standard library only at import time (the factory is imported inside ``check``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from rs_vlm_app.errors import UserError

DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "fp16", "bf16")


@dataclass(frozen=True)
class ModelSpec:
    """Either a catalogue ``name`` or a ``checkpoint`` (with ``arch`` or ``model_config``, or with
    ``name`` of the catalogue model it is a copy of); all empty = the catalogue's default model of
    the task's family. ``device``, ``precision`` and ``batch_size`` say where and how it computes."""

    name: str | None = None
    checkpoint: Path | None = None
    arch: str | None = None
    model_config: Path | None = None
    quick_gelu: bool | None = None
    device: str = "auto"
    precision: str = "auto"
    batch_size: int | None = None
    allow_download: bool | None = None  # None: unless HF_HUB_OFFLINE / RSVLM_OFFLINE is set

    def __post_init__(self) -> None:
        for name in ("name", "arch"):
            value = getattr(self, name)
            if value is not None and not str(value).strip():
                object.__setattr__(self, name, None)
        for name in ("checkpoint", "model_config"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Path):
                object.__setattr__(self, name, Path(value) if str(value).strip() else None)

    def key(self) -> str:
        """A stable identity of the weights and architecture (not the device): same key, same model.
        A checkpoint counts by its resolved path, size and modification time."""
        parts = [f"name={(self.name or '').strip().lower()}", f"arch={self.arch or ''}",
                 f"quick_gelu={self.quick_gelu}"]
        for label, file in (("checkpoint", self.checkpoint), ("config", self.model_config)):
            parts.append(f"{label}={_file_identity(file)}")
        return ";".join(parts)

    def check(self, family: str | None = None) -> None:
        """Cheap checks (no torch): values, files, field combinations, catalogue names, ``family``
        ("clip" or "coca"). Raises UserError."""
        if self.device not in DEVICES and not self.device.startswith("cuda:"):
            raise UserError(f"device must be one of {', '.join(DEVICES)} (or cuda:N), not {self.device!r}")
        if self.precision not in PRECISIONS:
            raise UserError(f"precision must be one of {', '.join(PRECISIONS)}, not {self.precision!r}")
        if self.batch_size is not None and (isinstance(self.batch_size, bool) or self.batch_size < 1):
            raise UserError(f"batch_size must be at least 1, not {self.batch_size}")
        from rs_vlm_app.models.factory import check_model_spec

        check_model_spec(self, expect_family=family)

    def describe(self) -> str:
        """A short name for messages and job lists."""
        if self.name:
            return self.name
        if self.checkpoint:
            return Path(self.checkpoint).name
        if self.model_config:
            return Path(self.model_config).stem
        return "default model"

    def replace(self, **changes) -> ModelSpec:
        return dataclasses.replace(self, **changes)


def _file_identity(path: Path | None) -> str:
    if path is None:
        return ""
    resolved = Path(path).expanduser().resolve()
    try:
        stat = resolved.stat()
    except OSError:
        return str(resolved)
    return f"{resolved}@{stat.st_size}:{stat.st_mtime_ns}"
