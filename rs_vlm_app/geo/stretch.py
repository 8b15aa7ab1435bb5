"""Per-band contrast stretch of non-uint8 imagery to uint8 (2-98 percentiles)."""

from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)

#: Percentiles mapped to 0 and 255.
PERCENTILES = (2.0, 98.0)
#: Long side, in pixels, of the decimated read the percentiles are estimated from.
SAMPLE_LONG_SIDE = 1024

Stretch = tuple[tuple[float, float], ...]


def sample_shape(height: int, width: int, long_side: int = SAMPLE_LONG_SIDE) -> tuple[int, int]:
    """Shape of a decimated read of a ``height`` x ``width`` raster with about ``long_side`` pixels
    on its long side (the raster's own shape when it is smaller)."""
    factor = max(height, width) / long_side
    if factor <= 1:
        return height, width
    return max(1, round(height / factor)), max(1, round(width / factor))


def estimate_stretch(data: np.ndarray, valid: np.ndarray) -> Stretch:
    """(lo, hi) = the 2nd and 98th percentiles of each band of ``data`` (bands, h, w).

    Only pixels where ``valid`` (bands, h, w) is True count; NaN and inf never do. A band with no
    usable pixel falls back to its type's range (0..1 for floats), with a warning.
    """
    result = []
    for band, keep in zip(data, valid, strict=True):
        if band.dtype.kind == "f":
            keep = keep & np.isfinite(band)
        values = band[keep]
        if values.size == 0:
            lo, hi = _type_range(band.dtype)
            log.warning("no valid pixels to estimate a contrast stretch from; using %g..%g", lo, hi)
        else:
            lo, hi = (float(v) for v in np.percentile(values, PERCENTILES))
        if not hi > lo:
            hi = lo + 1.0
        result.append((lo, hi))
    return tuple(result)


def apply_stretch(band: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Map ``band`` linearly so ``lo`` -> 0 and ``hi`` -> 255, clipped and rounded to uint8.

    Integer bands of up to 16 bits go through a lookup table; others are computed in float32.
    NaN becomes 0 (callers mask it).
    """
    if band.dtype.kind in "iu" and band.dtype.itemsize <= 2:
        unsigned = np.dtype(f"u{band.dtype.itemsize}")
        codes = np.arange(2 ** (8 * band.dtype.itemsize), dtype=np.int64).astype(unsigned)
        values = codes.view(band.dtype).astype(np.float64)
        lut = _scale(values, lo, hi)
        return lut[band.view(unsigned)]
    return _scale(band.astype(np.float32, copy=False), lo, hi)


def _scale(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    out = (values - values.dtype.type(lo)) * values.dtype.type(255.0 / (hi - lo))
    np.clip(out, 0, 255, out=out)
    np.rint(out, out=out)
    np.nan_to_num(out, copy=False, nan=0.0)
    return out.astype(np.uint8)


def _type_range(dtype: np.dtype) -> tuple[float, float]:
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return float(info.min), float(info.max)
    return 0.0, 1.0
