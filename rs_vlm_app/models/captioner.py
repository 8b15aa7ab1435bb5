"""CocaCaptioner: captions for batches of model-sized uint8 RGB tiles from a loaded CoCa model."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from rs_vlm_app.errors import UserError
from rs_vlm_app.models.coca_decoder import CocaDecoder, DecodingOptions, GeneratedCaption, tidy_caption

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Caption:
    """A caption's text and how the decoder scored it."""

    text: str
    mean_logprob: float   # mean log-probability per scored token (the end token included)
    tokens: int           # caption tokens (BPE pieces)
    ended: bool           # False: cut at the maximum length


class CocaCaptioner:
    """Captions uint8 (B, S, S, 3) tiles with a CoCa model (``loaded``: models.factory.LoadedModel).

    Normalisation runs on the device; decoding is our batched greedy / beam search with a key/value
    cache (rs_vlm_app.models.coca_decoder), under torch.inference_mode and autocast.
    """

    def __init__(self, loaded, *, device: str = "auto", precision: str = "auto", batch_size: int | None = None):
        import torch

        from rs_vlm_app.models.device import default_batch_size, pick_device, resolve_precision

        if getattr(loaded, "family", "coca") != "coca":
            raise UserError(f"{loaded.display_name} is a CLIP model and cannot write captions; give a CoCa "
                            "caption model (see `rsvlm models list`)")
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
        self.display_name = loaded.display_name
        if batch_size is not None and batch_size < 1:
            raise UserError(f"--batch-size must be at least 1, not {batch_size}")
        self.batch_size = batch_size or default_batch_size(self.device, self.image_size)
        self.decoder = CocaDecoder(self.model)
        self._mean = torch.tensor(loaded.mean, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(loaded.std, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)

    def preprocess_key(self) -> str:
        mean = ",".join(f"{v:.6g}" for v in self.loaded.mean)
        std = ",".join(f"{v:.6g}" for v in self.loaded.std)
        return f"size={self.image_size};mean={mean};std={std}"

    def caption_tiles(self, tiles: np.ndarray, options: DecodingOptions) -> list[Caption]:
        """uint8 (B, S, S, 3) RGB tiles at image_size -> one Caption per tile, in order."""
        import torch

        from rs_vlm_app.models.device import autocast

        tiles = np.asarray(tiles)
        size = self.image_size
        if tiles.dtype != np.uint8 or tiles.ndim != 4 or tiles.shape[1:] != (size, size, 3):
            raise ValueError(f"expected uint8 tiles of shape (B, {size}, {size}, 3), got {tiles.dtype} {tiles.shape}")
        out: list[Caption] = []
        with torch.inference_mode(), autocast(self.device, self.precision):
            for start in range(0, tiles.shape[0], self.batch_size):
                batch = torch.from_numpy(np.ascontiguousarray(tiles[start:start + self.batch_size]))
                x = batch.to(self.device).permute(0, 3, 1, 2).float()
                x = (x / 255.0 - self._mean) / self._std
                out.extend(self._caption(g) for g in self.decoder.generate(x, options))
        return out

    def _caption(self, generated: GeneratedCaption) -> Caption:
        text = tidy_caption(self.tokenizer.decode(list(generated.tokens))) if generated.tokens else ""
        return Caption(text, float(generated.mean_logprob), len(generated.tokens), generated.ended)
