"""CLIP and CoCa fine-tuning: ``train(TrainConfig(...), reporter=...)``.

torch is imported only when :func:`train` is first used, so reading configs and recipes stays cheap.
"""

from __future__ import annotations

from typing import Any

from rs_vlm_app.training.config import TrainConfig

__all__ = ["TrainConfig", "TrainResult", "train"]


def __getattr__(name: str) -> Any:
    if name in ("train", "TrainResult"):
        from rs_vlm_app.training import loop

        return getattr(loop, name)
    raise AttributeError(name)
