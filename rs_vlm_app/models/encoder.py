"""ClipEncoder: batched, L2-normalised image and text embeddings from a LoadedModel."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch

from rs_vlm_app.errors import UserError
from rs_vlm_app.models.device import autocast, default_batch_size, pick_device, resolve_precision
from rs_vlm_app.models.factory import LoadedModel

log = logging.getLogger(__name__)

_TEXT_BATCH = 256


class ClipEncoder:
    """Embeds model-sized uint8 RGB tiles and text queries in the model's joint space.

    Normalisation (mean/std) runs on the device, in batches, under torch.inference_mode and autocast
    (bf16/fp16 on GPUs, fp32 on the CPU unless asked). Results are float32 numpy, L2-normalised.
    """

    def __init__(self, loaded: LoadedModel, *, device: str = "auto", precision: str = "auto",
                 batch_size: int | None = None):
        self.loaded = loaded
        self.device = loaded.device if device == "auto" else pick_device(device)
        self.precision = resolve_precision(self.device, loaded.precision if precision == "auto" else precision)
        if self.device != loaded.device:
            loaded.model.to(self.device)
            loaded.device = self.device
        self.model = loaded.model
        self.tokenizer = loaded.tokenizer
        self.image_size = loaded.image_size
        self.fingerprint = loaded.fingerprint
        self.embed_dim = loaded.embed_dim
        if batch_size is not None and batch_size < 1:
            raise UserError(f"--batch-size must be at least 1, not {batch_size}")
        self.batch_size = batch_size or default_batch_size(self.device, self.image_size)
        self._mean = torch.tensor(loaded.mean, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(loaded.std, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)

    def preprocess_key(self) -> str:
        """What the image preprocessing depends on, for embedding-cache keys."""
        mean = ",".join(f"{v:.8g}" for v in self.loaded.mean)
        std = ",".join(f"{v:.8g}" for v in self.loaded.std)
        return f"size={self.image_size};mean={mean};std={std}"

    def encode_images(self, tiles: np.ndarray) -> np.ndarray:
        """uint8 (B, S, S, 3) RGB tiles at image_size -> float32 (B, D), L2-normalised."""
        tiles = np.asarray(tiles)
        size = self.image_size
        if tiles.dtype != np.uint8 or tiles.ndim != 4 or tiles.shape[1:] != (size, size, 3):
            raise ValueError(f"expected uint8 tiles of shape (B, {size}, {size}, 3), got {tiles.dtype} {tiles.shape}")
        out = np.empty((tiles.shape[0], self.embed_dim), dtype=np.float32)
        pin = self.device.startswith("cuda")
        with torch.inference_mode(), autocast(self.device, self.precision):
            for start in range(0, tiles.shape[0], self.batch_size):
                batch = torch.from_numpy(np.ascontiguousarray(tiles[start:start + self.batch_size]))
                if pin:
                    batch = batch.pin_memory()
                x = batch.to(self.device, non_blocking=pin).permute(0, 3, 1, 2).float()
                x = (x / 255.0 - self._mean) / self._std
                features = self.model.encode_image(x)
                out[start:start + len(batch)] = _normalised(features)
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
