"""Small rasters for the geo tests, built in a temporary folder from known arrays or the samples."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.enums import ColorInterp
from rasterio.errors import NotGeoreferencedWarning

from tests.conftest import SAMPLES

NAIP = SAMPLES / "naip_2020_5m.tif"
LANDSAT = SAMPLES / "landsat_2020_4326.tif"
UTM = "EPSG:26914"
TRANSFORM = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 5200000.0)


def write(path: Path, data: np.ndarray, *, crs: str | None = UTM, transform: Affine | None = TRANSFORM,
          driver: str = "GTiff", colorinterp: list[ColorInterp] | None = None, **profile) -> Path:
    """Write (bands, h, w) ``data`` as a raster; ``crs``/``transform`` None: no georeferencing."""
    count, height, width = data.shape
    options = {"driver": driver, "height": height, "width": width, "count": count, "dtype": data.dtype.name}
    if crs is not None:
        options["crs"] = crs
    if transform is not None:
        options["transform"] = transform
    options.update(profile)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", **options) as dst:
            dst.write(data)
            if colorinterp is not None:
                dst.colorinterp = colorinterp
    return path


def naip() -> np.ndarray:
    """The NAIP sample's four bands (uint8, (4, 723, 934))."""
    with rasterio.open(NAIP) as src:
        return src.read()


def naip_with_hole(path: Path, rows: slice = slice(0, 300), cols: slice = slice(0, 400)) -> Path:
    """The NAIP sample with a nodata (0) hole over ``rows`` x ``cols``, tiled 256."""
    data = naip()
    data[:, rows, cols] = 0
    with rasterio.open(NAIP) as src:
        crs, transform = src.crs, src.transform
    return write(path, data, crs=crs, transform=transform, nodata=0, tiled=True, blockxsize=256,
                 blockysize=256, compress="deflate")


def ramp_uint16(height: int = 120, width: int = 200, bands: int = 3) -> np.ndarray:
    """Band b holds (row * width + col) * (b + 1) % 60000 + 100: distinct, known values."""
    base = np.arange(height * width, dtype=np.int64).reshape(height, width)
    return np.stack([(base * (b + 1)) % 60000 + 100 for b in range(bands)]).astype(np.uint16)
