"""What the tile encoder and the captioner share: placing a loaded model on a device, and feeding it
model-sized uint8 RGB tiles normalised on that device in batches."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from rs_vlm_app.errors import UserError


class TileModel:
    """Base of ClipEncoder and CocaCaptioner (``loaded``: models.factory.LoadedModel)."""

    def __init__(self, loaded, *, device: str = "auto", precision: str = "auto", batch_size: int | None = None):
        import torch

        from rs_vlm_app.models.device import default_batch_size, pick_device, resolve_precision

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
        self._mean = torch.tensor(loaded.mean, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(loaded.std, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)

    def preprocess_key(self) -> str:
        """What the image preprocessing depends on, for cache keys."""
        mean = ",".join(f"{v:.8g}" for v in self.loaded.mean)
        std = ",".join(f"{v:.8g}" for v in self.loaded.std)
        return f"size={self.image_size};mean={mean};std={std}"

    def normalised_batches(self, tiles: np.ndarray) -> Iterator[tuple[int, object]]:
        """``(start, x)`` per batch of uint8 (B, S, S, 3) RGB tiles at image_size: ``x`` a float
        (b, 3, S, S) tensor on the device, normalised with the model's mean and std. Call it under
        torch.inference_mode (and autocast)."""
        import torch

        tiles = np.asarray(tiles)
        size = self.image_size
        if tiles.dtype != np.uint8 or tiles.ndim != 4 or tiles.shape[1:] != (size, size, 3):
            raise ValueError(f"expected uint8 tiles of shape (B, {size}, {size}, 3), got {tiles.dtype} {tiles.shape}")
        pin = self.device.startswith("cuda")
        for start in range(0, tiles.shape[0], self.batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(tiles[start:start + self.batch_size]))
            if pin:
                batch = batch.pin_memory()
            x = batch.to(self.device, non_blocking=pin).permute(0, 3, 1, 2).float()
            yield start, (x / 255.0 - self._mean) / self._std
