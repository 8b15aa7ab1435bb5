"""What the tile encoder and the captioner share: a loaded model (never moved: it may be shared), and
feeding it model-sized uint8 RGB tiles normalised on its device in batches (the model's image tower
is loaded before the first batch: see models.factory.LoadedModel)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np

from rs_vlm_app.errors import UserError

log = logging.getLogger(__name__)

T = TypeVar("T")


class TileModel:
    """Base of ClipEncoder and CocaCaptioner (``loaded``: models.factory.LoadedModel)."""

    def __init__(self, loaded, *, device: str = "auto", precision: str = "auto", batch_size: int | None = None):
        import torch

        from rs_vlm_app.models.device import default_batch_size, resolve_precision

        self.loaded = loaded
        # the model stays where it was loaded: a loaded model may be shared (models.cache), so it is
        # never moved here; load it on the device wanted instead
        self.device = loaded.device
        if device.strip().lower() not in ("auto", loaded.device):
            raise ValueError(f"{loaded.display_name} was loaded on {loaded.device}, not {device}; load it there")
        self.precision = resolve_precision(self.device, loaded.precision if precision == "auto" else precision)
        self.model = loaded.network  # its image tower's weights are assigned before the first tiles
        self.tokenizer = loaded.tokenizer
        self.image_size = loaded.image_size
        self.fingerprint = loaded.fingerprint
        self.display_name = loaded.display_name
        if batch_size is not None and batch_size < 1:
            raise UserError(f"batch_size must be at least 1, not {batch_size}")
        self.batch_size = batch_size or default_batch_size(self.device, self.image_size)
        self._mean = torch.tensor(loaded.mean, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(loaded.std, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)

    def preprocess_key(self) -> str:
        """What the image preprocessing depends on, for cache keys."""
        mean = ",".join(f"{v:.8g}" for v in self.loaded.mean)
        std = ",".join(f"{v:.8g}" for v in self.loaded.std)
        return f"size={self.image_size};mean={mean};std={std}"

    def run_batches(self, tiles: np.ndarray, step: Callable[[Any], Sequence[T]]) -> list[T]:
        """``step`` on each device batch of uint8 (B, S, S, 3) tiles (normalised, on the device, under
        inference mode and autocast); its per-tile results, in order.

        Out of device memory: the batch size is halved (for the rest of this model's life) and the
        same tiles are tried again, down to one tile; only a single tile that does not fit is an
        error. A device that fails otherwise (a CUDA error: the GPU fell off the bus, a driver reset)
        ends the job with one line; what callers finished before (the embedding cache) is kept.
        """
        import torch

        from rs_vlm_app.models.device import autocast

        tiles = self._check_tiles(tiles)
        self.loaded.load_visual()
        out: list[T] = []
        start = 0
        with torch.inference_mode(), autocast(self.device, self.precision):
            while start < tiles.shape[0]:
                size = self.batch_size
                try:
                    results = list(step(self._to_device(tiles[start:start + size])))
                except Exception as exc:
                    if not is_out_of_memory(exc):
                        if is_device_failure(exc, self.device):
                            raise UserError(
                                f"the {self.device} device failed ({_first_line(exc)}); finished tiles are kept: "
                                "run the same command again to resume (or choose --device cpu)") from None
                        raise
                    if size == 1:
                        raise UserError(
                            f"{self.display_name} does not fit in the {self.device} device's free memory even "
                            "one tile at a time; free the device or choose --device cpu") from None
                    self.batch_size = max(1, size // 2)
                    log.warning("out of %s memory with %d tiles a batch; retrying with %d",
                                self.device, size, self.batch_size)
                    release_device_memory(self.device)
                    continue
                out.extend(results)
                start += size
        return out

    def _check_tiles(self, tiles: np.ndarray) -> np.ndarray:
        tiles = np.asarray(tiles)
        size = self.image_size
        if tiles.dtype != np.uint8 or tiles.ndim != 4 or tiles.shape[1:] != (size, size, 3):
            raise ValueError(f"expected uint8 tiles of shape (B, {size}, {size}, 3), got {tiles.dtype} {tiles.shape}")
        return tiles

    def _to_device(self, tiles: np.ndarray):
        """uint8 (b, S, S, 3) -> normalised float (b, 3, S, S) on the device (pinned, non-blocking copy
        on CUDA; the uint8 tiles cross the bus, a quarter of the float bytes)."""
        import torch

        pin = self.device.startswith("cuda")
        batch = torch.from_numpy(np.ascontiguousarray(tiles))
        if pin:
            batch = batch.pin_memory()
        x = batch.to(self.device, non_blocking=pin).permute(0, 3, 1, 2).float()
        return (x / 255.0 - self._mean) / self._std


def is_out_of_memory(exc: BaseException) -> bool:
    """A device allocation failure (CUDA's OutOfMemoryError, MPS's "out of memory" RuntimeError)."""
    import torch

    oom = getattr(torch.cuda, "OutOfMemoryError", None)
    if oom is not None and isinstance(exc, oom):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def is_device_failure(exc: BaseException, device: str) -> bool:
    """A CUDA error other than out-of-memory: the device is gone or broken."""
    if not device.startswith("cuda") or is_out_of_memory(exc):
        return False
    text = str(exc)
    return (type(exc).__name__ == "AcceleratorError" or "CUDA error" in text or "CUDA driver" in text
            or "device-side assert" in text)


def release_device_memory(device: str) -> None:
    """Hand cached blocks back to the device after an out-of-memory (so the smaller batch fits)."""
    import gc

    import torch

    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    elif device == "mps" and hasattr(torch, "mps"):
        torch.mps.empty_cache()


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:200]
