"""Reading images: size and footprint at ingest, an 8-bit RGB picture for the MLLMs and exports.

Plain images (JPEG, PNG, ...) are read with Pillow. Rasters that may carry georeferencing (GeoTIFF,
JPEG 2000) are read with rasterio, which gives their footprint (CRS, bounds, ground sample
distance); multi-band or 16-bit rasters are reduced to three 8-bit bands with a percentile stretch.
"""

from __future__ import annotations

import contextlib
import functools
import io
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GEO_EXTENSIONS = frozenset({".tif", ".tiff", ".jp2", ".img", ".vrt"})
_METRES_PER_DEGREE = 111_320.0


class ImageReadError(Exception):
    """An image could not be read; ``str(exc)`` says why, in one line."""


@dataclass(frozen=True)
class ImageInfo:
    width: int
    height: int
    footprint: dict[str, Any] | None = None


@dataclass(frozen=True)
class EncodedImage:
    """Image bytes ready to send: a JPEG or PNG and its MIME type."""

    data: bytes
    mime: str

    def data_url(self) -> str:
        return self.url_json[1:-1].decode("ascii")

    @functools.cached_property
    def url_json(self) -> bytes:
        """The data URL as a JSON string (quotes included), encoded once however many requests send it."""
        import base64

        return b'"data:' + self.mime.encode("ascii") + b";base64," + base64.b64encode(self.data) + b'"'


def probe(path: Path) -> ImageInfo:
    """Width, height and (for georeferenced rasters) footprint, reading only the header."""
    if not path.is_file():
        raise ImageReadError("file not found")
    if path.suffix.lower() in GEO_EXTENSIONS:
        return _probe_raster(path)
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            width, height = im.size
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise ImageReadError(f"cannot read image ({_short(exc)})") from None
    if width < 1 or height < 1:
        raise ImageReadError("image has no pixels")
    return ImageInfo(width, height)


def load_rgb(path: Path, *, max_side: int | None = None, bands: tuple[int, ...] | None = None):
    """The image as an 8-bit RGB PIL image, its longest side at most ``max_side`` pixels."""
    from PIL import Image, UnidentifiedImageError

    if path.suffix.lower() in GEO_EXTENSIONS:
        return _load_raster(path, max_side, bands)
    try:
        with Image.open(path) as im:
            if max_side and max(im.size) > max_side:
                im.draft("RGB", (max_side, max_side))  # JPEG: decode at a reduced scale
            image = im.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise ImageReadError(f"cannot read image ({_short(exc)})") from None
    if max_side and max(image.size) > max_side:
        image.thumbnail((max_side, max_side), Image.Resampling.BICUBIC)
    return image


def encode(image, fmt: str = "jpeg", quality: int = 90) -> EncodedImage:
    """Encode a PIL image as JPEG or PNG."""
    buffer = io.BytesIO()
    if fmt == "png":
        image.save(buffer, format="PNG", optimize=False)
        return EncodedImage(buffer.getvalue(), "image/png")
    image.save(buffer, format="JPEG", quality=quality)
    return EncodedImage(buffer.getvalue(), "image/jpeg")


# ------------------------------------------------------------------------------------------ rasters
def _open_raster(path: Path):
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(path)
    except RasterioIOError as exc:
        raise ImageReadError(f"cannot read raster ({_short(exc)})") from None


def _probe_raster(path: Path) -> ImageInfo:
    with _open_raster(path) as ds:
        if ds.width < 1 or ds.height < 1 or ds.count < 1:
            raise ImageReadError("raster has no pixels")
        return ImageInfo(ds.width, ds.height, footprint(ds))


def footprint(ds) -> dict[str, Any] | None:
    """CRS, bounds (native and WGS84), ground sample distance and ground size of an open dataset."""
    if ds.crs is None:
        return None
    from rasterio.warp import transform_bounds

    left, bottom, right, top = ds.bounds
    crs = ds.crs
    epsg = crs.to_epsg()
    result: dict[str, Any] = {
        "crs": f"EPSG:{epsg}" if epsg else crs.to_wkt(),
        "bounds": [left, bottom, right, top],
    }
    with contextlib.suppress(Exception):  # an exotic CRS PROJ cannot transform: keep the native bounds only
        result["bounds_wgs84"] = [round(v, 7) for v in transform_bounds(crs, "EPSG:4326", left, bottom, right, top)]
    res_x, res_y = abs(ds.transform.a), abs(ds.transform.e)
    if crs.is_geographic:
        lat = math.radians((bottom + top) / 2)
        scale_x, scale_y = _METRES_PER_DEGREE * math.cos(lat), _METRES_PER_DEGREE
    else:
        try:
            factor = float(crs.linear_units_factor[1])
        except Exception:
            factor = 1.0
        scale_x = scale_y = factor
    result["gsd_m"] = round(math.sqrt(res_x * scale_x * res_y * scale_y), 4)
    result["size_m"] = [round(ds.width * res_x * scale_x, 1), round(ds.height * res_y * scale_y, 1)]
    return result


def _load_raster(path: Path, max_side: int | None, bands: tuple[int, ...] | None):
    import numpy as np
    from PIL import Image
    from rasterio.enums import Resampling

    with _open_raster(path) as ds:
        if bands is None:
            bands = (1, 2, 3) if ds.count >= 3 else (1, 1, 1)
        if any(b < 1 or b > ds.count for b in bands):
            raise ImageReadError(f"bands {list(bands)} asked for, but the raster has {ds.count}")
        scale = 1.0
        if max_side and max(ds.width, ds.height) > max_side:
            scale = max_side / max(ds.width, ds.height)
        shape = (len(bands), max(1, round(ds.height * scale)), max(1, round(ds.width * scale)))
        try:
            data = ds.read(list(bands), out_shape=shape, masked=True, resampling=Resampling.average)
        except Exception as exc:
            raise ImageReadError(f"cannot read raster pixels ({_short(exc)})") from None
    data = _stretch(data) if data.dtype != np.uint8 else data.filled(0)
    rgb = np.ascontiguousarray(np.moveaxis(np.asarray(data, dtype=np.uint8)[:3], 0, -1))
    if rgb.shape[-1] == 1:
        rgb = np.repeat(rgb, 3, axis=-1)
    return Image.fromarray(rgb, "RGB")


def _stretch(data):
    """Each band's 2nd-98th percentile of valid pixels mapped onto 0-255."""
    import numpy as np

    out = np.zeros(data.shape, dtype=np.uint8)
    for i in range(data.shape[0]):
        band = data[i]
        valid = band.compressed().astype(np.float64)
        if valid.size == 0:
            continue
        low, high = np.percentile(valid, (2, 98))
        if high <= low:
            high = low + 1
        scaled = (band.filled(low).astype(np.float64) - low) * (255.0 / (high - low))
        out[i] = np.clip(scaled, 0, 255).astype(np.uint8)
        out[i][np.ma.getmaskarray(band)] = 0
    return out


def _short(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    return text[:200] if text else type(exc).__name__
