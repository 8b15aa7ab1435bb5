"""Tile preprocessing: RGB uint8 tiles of any size -> model-sized uint8 tiles (normalisation is the
encoder's job, on the device).

Two modes:
- fast_tile_transform: one OpenCV resize straight to the model size (area averaging when shrinking,
  bicubic when enlarging); no JPEG round trip, no crop (grid tiles are square).
- selo_tile_transform: the published SeLo evaluation pipeline step for step (om-ai-lab/RS5M
  inference_tool.py): cv2.resize to 256 x 256 (bicubic), JPEG quality 95 written by OpenCV and read by
  PIL, torchvision Resize(image_size, bicubic) on the PIL image, CenterCrop(image_size).
"""

from __future__ import annotations

import io
from collections.abc import Callable

import cv2
import numpy as np

SELO_TILE_SIZE = 256
SELO_JPEG_QUALITY = 95


def _check_tile(tile: np.ndarray) -> np.ndarray:
    tile = np.asarray(tile)
    if tile.dtype != np.uint8 or tile.ndim != 3 or tile.shape[2] != 3 or min(tile.shape[:2]) < 1:
        raise ValueError(f"expected an (h, w, 3) uint8 RGB tile, got {tile.dtype} {tile.shape}")
    return tile


def fast_tile_transform(image_size: int) -> Callable[[np.ndarray], np.ndarray]:
    """(h, w, 3) uint8 -> (S, S, 3) uint8 by one resize: INTER_AREA when shrinking (antialiased),
    INTER_CUBIC when enlarging."""
    size = int(image_size)

    def transform(tile: np.ndarray) -> np.ndarray:
        tile = _check_tile(tile)
        h, w = tile.shape[:2]
        if h == size and w == size:
            return np.ascontiguousarray(tile)
        interpolation = cv2.INTER_AREA if h * w >= size * size else cv2.INTER_CUBIC
        return cv2.resize(np.ascontiguousarray(tile), (size, size), interpolation=interpolation)

    return transform


def selo_tile_transform(image_size: int, interpolation: str = "bicubic") -> Callable[[np.ndarray], np.ndarray]:
    """(h, w, 3) uint8 RGB crop -> (S, S, 3) uint8, exactly as the reference SeLo evaluation prepares it."""
    from PIL import Image
    from torchvision.transforms import CenterCrop, InterpolationMode, Resize

    modes = {"bicubic": InterpolationMode.BICUBIC, "bilinear": InterpolationMode.BILINEAR}
    if interpolation not in modes:
        raise ValueError(f"interpolation must be one of {', '.join(modes)}, not {interpolation!r}")
    resize = Resize(int(image_size), interpolation=modes[interpolation])
    crop = CenterCrop(int(image_size))

    def transform(tile: np.ndarray) -> np.ndarray:
        tile = _check_tile(tile)
        small = cv2.resize(np.ascontiguousarray(tile), (SELO_TILE_SIZE, SELO_TILE_SIZE),
                           interpolation=cv2.INTER_CUBIC)
        # the reference writes the BGR crop with cv2.imwrite (JPEG quality 95) and reads it with PIL
        ok, encoded = cv2.imencode(".jpg", small[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, SELO_JPEG_QUALITY])
        if not ok:
            raise RuntimeError("OpenCV could not encode a JPEG tile")
        with Image.open(io.BytesIO(encoded.tobytes())) as image:
            out = crop(resize(image)).convert("RGB")
            return np.asarray(out, dtype=np.uint8).copy()

    return transform
