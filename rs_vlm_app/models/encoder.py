"""ClipEncoder: batched, L2-normalised image and text embeddings from a LoadedModel."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import numpy as np
import torch

from rs_vlm_app.errors import UserError
from rs_vlm_app.models.device import autocast
from rs_vlm_app.models.factory import LoadedModel
from rs_vlm_app.models.tile_encoder import DEFAULT_LOGIT_SCALE
from rs_vlm_app.models.tile_model import TileModel

log = logging.getLogger(__name__)

_TEXT_BATCH = 256


class ClipEncoder(TileModel):
    """Embeds model-sized uint8 RGB tiles and text queries in the model's joint space (a
    rs_vlm_app.models.tile_encoder.TileEncoder).

    Normalisation (mean/std) runs on the device, in batches, under torch.inference_mode and autocast
    (bf16/fp16 on GPUs, fp32 on the CPU unless asked). Results are float32 numpy, L2-normalised.
    """

    def __init__(self, loaded: LoadedModel, *, device: str = "auto", precision: str = "auto",
                 batch_size: int | None = None):
        super().__init__(loaded, device=device, precision=precision, batch_size=batch_size)
        self.embed_dim = loaded.embed_dim
        self._encode_image = self.model.encode_image
        if os.environ.get("RSVLM_COMPILE", "").strip().lower() in ("1", "true", "yes", "on"):
            # torch.compile of the image tower (worth it on a GPU for long jobs; the first batches of
            # each shape pay for compilation). The shared model itself is left as it is.
            self._encode_image = torch.compile(self.model.encode_image)

    @property
    def logit_scale(self) -> float:
        """exp(the model's learned logit scale), capped at 100 as in CLIP training."""
        scale = getattr(self.model, "logit_scale", None)
        if scale is None:
            return DEFAULT_LOGIT_SCALE
        return float(min(DEFAULT_LOGIT_SCALE, float(scale.detach().float().exp())))

    def encode_images(self, tiles: np.ndarray) -> np.ndarray:
        """uint8 (B, S, S, 3) RGB tiles at image_size -> float32 (B, D), L2-normalised."""
        out = np.empty((len(tiles), self.embed_dim), dtype=np.float32)
        rows = self.run_batches(tiles, lambda x: _normalised(self._encode_image(x)))
        if rows:
            out[:] = np.stack(rows)
        return out

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Text queries -> float32 (N, D), L2-normalised; an empty or blank text is a UserError."""
        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        for text in texts:
            if not isinstance(text, str) or not text.strip():
                raise UserError("a text query is empty; give a non-empty description such as \"a lake\"")
        self._warn_truncated(texts)
        out = np.empty((len(texts), self.embed_dim), dtype=np.float32)
        with torch.inference_mode(), autocast(self.device, self.precision):
            for start in range(0, len(texts), _TEXT_BATCH):
                tokens = self.tokenizer(texts[start:start + _TEXT_BATCH]).to(self.device)
                out[start:start + tokens.shape[0]] = _normalised(self.model.encode_text(tokens))
        return out

    def _warn_truncated(self, texts: list[str]) -> None:
        encode = getattr(self.tokenizer, "encode", None)
        limit = self.loaded.context_length - 2  # start and end tokens
        if encode is None:
            return
        for text in texts:
            try:
                n = len(encode(text))
            except Exception:  # a tokenizer without a plain encode(str): skip the courtesy check
                return
            if n > limit:
                log.warning("query %r is %d tokens long; the model reads only the first %d", text[:60], n, limit)


def _normalised(features: torch.Tensor) -> np.ndarray:
    features = features.float()
    features = features / features.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return features.cpu().numpy()
