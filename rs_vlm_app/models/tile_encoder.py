"""The seams between tasks and models: what a task may ask of a tile encoder or a captioner.

Tasks (rs_vlm_app/tasks/, rs_vlm_app/evaluation/) type their model arguments against these
protocols and use nothing else of the object, so a stand-in (the model being trained, a test
double) works wherever the real rs_vlm_app.models.encoder.ClipEncoder does. Standard library and
numpy only: importing this module loads no torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

#: CLIP's logit scale is capped at 100 in training; an encoder without one uses this.
DEFAULT_LOGIT_SCALE = 100.0


@runtime_checkable
class TileEncoder(Protocol):
    """Embeds model-sized uint8 RGB tiles and texts in one joint space (unit float32 vectors)."""

    display_name: str   # the name a person knows the model by
    fingerprint: str    # identity of the weights, for caches
    image_size: int     # tiles are (S, S, 3) uint8 with S = image_size
    embed_dim: int
    batch_size: int     # tiles per encoder call that fill the device well
    device: str         # where it computes ("cpu", "cuda:0", ...)
    precision: str      # "fp32", "fp16" or "bf16": lower precisions give slightly other embeddings
    logit_scale: float  # softmax temperature of image-text cosines (zero-shot class probabilities)

    def preprocess_key(self) -> str:
        """What the image normalisation depends on (size, mean, std), for cache keys."""
        ...

    def encode_images(self, tiles: np.ndarray) -> np.ndarray:
        """uint8 (B, S, S, 3) -> float32 (B, D), L2-normalised."""
        ...

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Texts -> float32 (N, D), L2-normalised."""
        ...


@runtime_checkable
class TileCaptioner(Protocol):
    """Writes a caption for each model-sized uint8 RGB tile."""

    display_name: str
    fingerprint: str
    image_size: int
    batch_size: int
    device: str
    precision: str

    def preprocess_key(self) -> str:
        ...

    def caption_tiles(self, tiles: np.ndarray, options) -> list:
        """uint8 (B, S, S, 3) -> one rs_vlm_app.models.captioner.Caption per tile (``options``:
        rs_vlm_app.models.coca_decoder.DecodingOptions)."""
        ...
