"""Raster access: open anything GDAL reads, choose three bands, read uint8 RGB windows with masks.

:func:`open_raster` returns a :class:`RasterSource`. Band choice: an explicit ``bands`` wins; else
the bands whose colour interpretation is red, green and blue; else the first three; a one-band
raster is replicated to grey RGB (a palette band is expanded through its colour table); a two-band
raster (grey + alpha, or two measurements) uses its first band, replicated. Non-uint8 data is
stretched per band from its 2-98 percentiles, estimated on a decimated read. Invalid pixels (nodata
values, internal/external masks, alpha bands, NaN) read as 0 with False in the mask.

A raster without georeferencing works in pixel coordinates. Its :attr:`RasterSource.transform` is
then ``Affine(1, 0, 0, 0, -1, 0)`` (x = column, y = -row): the frame QGIS draws such rasters in,
so outputs written with it lie exactly on the image there.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import ColorInterp, MaskFlags, Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.windows import Window

from rs_vlm_app.errors import UserError
from rs_vlm_app.geo import fingerprint as _fingerprint
from rs_vlm_app.geo.stretch import Stretch, apply_stretch, estimate_stretch, sample_shape

#: Rasters up to this many pixels (and any with overviews) estimate their stretch on a decimated read.
SAMPLE_FULL_READ_PIXELS = 4096 * 4096
#: Bigger rasters without overviews: SAMPLE_GRID x SAMPLE_GRID squares of SAMPLE_SQUARE pixels.
SAMPLE_GRID = 8
SAMPLE_SQUARE = 256

try:  # GDAL errors raised while reading (private module; RasterioError covers the rest)
    from rasterio._err import CPLE_BaseError
except ImportError:  # pragma: no cover - layout of a future rasterio
    CPLE_BaseError = RasterioError

log = logging.getLogger(__name__)

#: The frame of a raster without georeferencing: x = column, y = -row (as QGIS draws it).
PIXEL_TRANSFORM = Affine(1.0, 0.0, 0.0, 0.0, -1.0, 0.0)

_READ_ERRORS = (RasterioError, CPLE_BaseError, OSError)
_GDAL_PATH = re.compile(r"^(/vsi|[A-Za-z0-9_]{2,}:)|://")


class RasterSource:
    """An open raster and the choices that turn it into uint8 RGB. Thread-safe reads."""

    path: Path
    width: int
    height: int
    count: int
    driver: str
    crs: CRS | None
    transform: Affine
    georeferenced: bool
    band_indexes: tuple[int, int, int]
    dtype: str
    nodata: float | None
    stretch: Stretch | None
    block_height: int
    block_width: int

    def __init__(self, dataset: Any, path: Path, bands: Sequence[int] | None = None):
        self._ds = dataset
        self._lock = threading.RLock()
        self.path = path
        self.width, self.height, self.count = dataset.width, dataset.height, dataset.count
        self.driver = dataset.driver
        if self.count == 0:
            self._no_bands()
        self.band_indexes = _choose_bands(dataset, path, bands)
        self._unique = tuple(dict.fromkeys(self.band_indexes))
        self._channel_rows = [self._unique.index(b) for b in self.band_indexes]
        self.dtype = np.result_type(*(dataset.dtypes[b - 1] for b in self._unique)).name
        self.nodata = dataset.nodata
        self._nodata = [dataset.nodatavals[b - 1] for b in self._unique]
        self._mask_mode = _mask_mode(dataset, self._unique)
        self._palette = _palette_lut(dataset, self.band_indexes)
        self.block_height, self.block_width = (int(v) for v in dataset.block_shapes[self.band_indexes[0] - 1])
        self.crs, self.transform, self.georeferenced = _georeferencing(dataset, path)
        self.stretch = None
        if self.dtype != "uint8":
            self.stretch = self._estimate_stretch()

    # -- reading -----------------------------------------------------------------------------------

    def read_rgb(
        self, row0: int, row1: int, col0: int, col1: int,
        out_shape: tuple[int, int] | None = None, resampling: Resampling = Resampling.nearest,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Rows ``row0:row1``, columns ``col0:col1`` as uint8 (h, w, 3) RGB and a bool (h, w) validity
        mask (False = nodata/masked; those pixels are 0). ``out_shape`` (h, w) reads decimated
        (GDAL uses overviews where the file has them)."""
        window = self._window(row0, row1, col0, col1)
        try:
            with self._lock:
                data, valid = self._read(window, out_shape, resampling)
        except _READ_ERRORS as exc:
            raise UserError(
                f"cannot read rows {row0}-{row1}, columns {col0}-{col1}: the file may be truncated "
                f"or corrupt ({_gdal_reason(exc, self.path)})",
                path=self.path,
            ) from None
        assert data is not None
        return self._to_rgb(data, valid), valid

    def read_mask(self, out_shape: tuple[int, int] | None = None,
                  box: tuple[int, int, int, int] | None = None) -> np.ndarray:
        """Validity of every pixel (bool, True = valid), decimated to ``out_shape`` (h, w) if given.

        ``box`` (row0, row1, col0, col1 on the ``out_shape`` grid) reads only that block of the
        decimated grid, sampling the same pixels as the whole read. Without ``out_shape`` this reads
        the whole raster: use it on small rasters only."""
        window = self._window(0, self.height, 0, self.width)
        if box is not None:
            if out_shape is None:
                raise ValueError("box needs out_shape")
            r0, r1, c0, c1 = box
            sy, sx = self.height / out_shape[0], self.width / out_shape[1]
            window = Window(c0 * sx, r0 * sy, (c1 - c0) * sx, (r1 - r0) * sy)  # fractional: GDAL keeps it
            out_shape = (r1 - r0, c1 - c0)
        try:
            with self._lock:
                _data, valid = self._read(window, out_shape, Resampling.nearest, want_data=False)
        except _READ_ERRORS as exc:
            raise UserError(
                f"cannot read the validity mask: the file may be truncated or corrupt "
                f"({_gdal_reason(exc, self.path)})",
                path=self.path,
            ) from None
        return valid

    def _window(self, row0: int, row1: int, col0: int, col1: int) -> Window:
        if not (0 <= row0 < row1 <= self.height and 0 <= col0 < col1 <= self.width):
            raise ValueError(
                f"window rows {row0}:{row1}, columns {col0}:{col1} is outside the "
                f"{self.height} x {self.width} raster"
            )
        return Window(col0, row0, col1 - col0, row1 - row0)

    def _read(
        self, window: Window, out_shape: tuple[int, int] | None, resampling: Resampling,
        want_data: bool = True,
    ) -> tuple[np.ndarray | None, np.ndarray]:
        """The unique chosen bands, pixel-interleaved (h, w, n) in the source dtype, and the pixel
        validity (h, w). With ``want_data=False`` the bands are read only if validity needs them."""
        h, w = (int(window.height), int(window.width)) if out_shape is None else out_shape
        float_data = np.dtype(self.dtype).kind == "f"
        with rasterio.Env():  # routes GDAL's messages to logging, not stderr
            data = None
            if want_data or self._mask_mode == "nodata" or float_data:
                data = np.empty((h, w, len(self._unique)), dtype=self.dtype)
                # GDAL writes straight into the interleaved buffer (rasterio passes the strides)
                self._ds.read(self._unique, window=window, out=data.transpose(2, 0, 1), resampling=resampling)
            if self._mask_mode == "per_dataset":
                mask_shape = None if out_shape is None else (1, h, w)
                valid = self._ds.read_masks([self._unique[0]], window=window, out_shape=mask_shape)[0] > 0
            elif self._mask_mode == "nodata":
                assert data is not None
                valid = np.zeros((h, w), dtype=bool)
                for i, nodata in enumerate(self._nodata):
                    valid |= ~is_nodata(data[..., i], nodata)
            else:
                valid = np.ones((h, w), dtype=bool)
        if data is not None and float_data:
            valid &= np.isfinite(data).all(axis=2)
        return data, valid

    def _to_rgb(self, data: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """(h, w, n) unique bands -> (h, w, 3) uint8; invalid pixels set to 0."""
        if self._palette is not None:
            rgb = self._palette[data[..., 0]]
        elif self.stretch is None and self._unique == self.band_indexes:
            rgb = data  # uint8, already R, G, B interleaved
        else:
            if self.stretch is not None:
                bands = [apply_stretch(data[..., i], lo, hi) for i, (lo, hi) in enumerate(self._unique_stretch())]
            else:
                bands = [data[..., i] for i in range(data.shape[2])]
            rgb = np.empty((*valid.shape, 3), dtype=np.uint8)
            for channel, row in enumerate(self._channel_rows):
                rgb[..., channel] = bands[row]
        if not valid.all():
            # per channel, in place: ~15x faster than boolean-index assignment on big windows
            keep = valid.view(np.uint8)
            for channel in range(3):
                rgb[..., channel] *= keep
        return rgb

    def _unique_stretch(self) -> Stretch:
        assert self.stretch is not None
        return tuple(self.stretch[self.band_indexes.index(b)] for b in self._unique)

    def _estimate_stretch(self) -> Stretch:
        try:
            with self._lock:
                data, valid = self._stretch_sample()
        except _READ_ERRORS as exc:
            self.close()
            raise UserError(
                f"cannot read a sample of the image to set its contrast stretch: the file may be "
                f"truncated or corrupt ({_gdal_reason(exc, self.path)})",
                path=self.path,
            ) from None
        bands = np.moveaxis(data, 2, 0)
        band_valid = np.stack([valid & ~is_nodata(band, nodata) for band, nodata in
                               zip(bands, self._nodata, strict=True)])
        unique = estimate_stretch(bands, band_valid)
        return tuple(unique[self._unique.index(b)] for b in self.band_indexes)

    def _stretch_sample(self) -> tuple[np.ndarray, np.ndarray]:
        """Pixels to estimate the stretch from, (h, w, n) and (h, w), never the full raster.

        A decimated read of about SAMPLE_LONG_SIDE on the long side where the file has overviews
        (GDAL reads those) or is small; otherwise SAMPLE_GRID x SAMPLE_GRID evenly spaced squares
        aligned to the file's blocks, so only a few blocks are decoded (a decimated read of a
        raster without overviews decodes every block)."""
        has_overviews = bool(self._ds.overviews(self._unique[0]))
        if has_overviews or self.height * self.width <= SAMPLE_FULL_READ_PIXELS:
            window = self._window(0, self.height, 0, self.width)
            data, valid = self._read(window, sample_shape(self.height, self.width), Resampling.nearest)
            assert data is not None
            return data, valid
        block_h, block_w = self._ds.block_shapes[self._unique[0] - 1]
        side_h, side_w = min(SAMPLE_SQUARE, self.height), min(SAMPLE_SQUARE, self.width)
        datas, valids = [], []
        for row in _spread(self.height - side_h, SAMPLE_GRID, block_h):
            for col in _spread(self.width - side_w, SAMPLE_GRID, block_w):
                data, valid = self._read(self._window(row, row + side_h, col, col + side_w), None,
                                         Resampling.nearest)
                assert data is not None
                datas.append(data)
                valids.append(valid)
        return np.concatenate(datas, axis=1), np.concatenate(valids, axis=1)

    # -- identity and outputs ---------------------------------------------------------------------

    @property
    def files(self) -> list[str]:
        """Local files GDAL reads for this raster (the file itself, sidecars, VRT sources)."""
        names = [str(self.path)]
        with contextlib.suppress(*_READ_ERRORS):
            names += list(self._ds.files)
        return _fingerprint.local_files(names)

    def fingerprint(self) -> str:
        """Cheap content hash: sizes and sampled bytes of :attr:`files`, raster size, band choice,
        stretch and what counts as nodata. Changes when pixels (in sampled bytes) or the RGB recipe
        change; not when the file is renamed or touched, nor when GDAL (or QGIS, which computes
        statistics on display) writes a ``.aux.xml`` statistics sidecar beside it."""
        recipe = (
            f"{self.width}x{self.height}x{self.count}:{self.dtype}:bands={self.band_indexes}:"
            f"stretch={self.stretch}:palette={self._palette is not None}:"
            f"nodata={self._nodata}:mask={self._mask_mode}"
        )
        pixels = [f for f in self.files if not f.lower().endswith(".aux.xml")]
        return _fingerprint.sampled_digest(pixels, extra=recipe)

    def profile_for_output(self, out_shape: tuple[int, int] | None = None) -> dict[str, Any]:
        """``{"crs", "transform"}`` for an output raster over this raster's footprint, at full
        resolution or with ``out_shape`` (h, w) pixels; pass it to the writers as keywords."""
        transform = self.transform
        if out_shape is not None:
            from rs_vlm_app.geo.writers import scaled_transform

            transform = scaled_transform(transform, self.width, self.height, out_shape[1], out_shape[0])
        return {"crs": self.crs, "transform": transform}

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) in the raster's CRS (pixel frame when not georeferenced)."""
        xs, ys = zip(*(self.transform @ (c, r) for c, r in
                       ((0, 0), (self.width, 0), (0, self.height), (self.width, self.height))),
                     strict=True)
        return min(xs), min(ys), max(xs), max(ys)

    def close(self) -> None:
        with self._lock:
            self._ds.close()

    def __enter__(self) -> RasterSource:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"RasterSource({str(self.path)!r}, {self.width}x{self.height}, bands={self.band_indexes}, "
                f"dtype={self.dtype}, crs={self.crs})")

    def _no_bands(self) -> None:
        subdatasets = list(getattr(self._ds, "subdatasets", []) or [])
        self._ds.close()
        if subdatasets:
            raise UserError(
                f"has no raster bands of its own; it holds {len(subdatasets)} subdatasets: open one "
                f"of them, e.g. {subdatasets[0]}",
                path=self.path,
            )
        raise UserError("has no raster bands", path=self.path)


def open_raster(path: str | Path, bands: Sequence[int] | None = None) -> RasterSource:
    """Open a raster GDAL can read (GeoTIFF, COG, VRT, JPEG2000, PNG, JPEG, ...) for RGB reading.

    ``bands``: 1-based band numbers for R, G, B (three numbers), or one number for a grey image.
    Raises UserError for a missing file, a file GDAL cannot read, a raster without bands or a
    band number the raster does not have.
    """
    path = Path(path)
    if not _GDAL_PATH.search(str(path)) and not path.exists():
        raise UserError("file not found", path=path)
    try:
        with warnings.catch_warnings(), rasterio.Env(**_open_options()):
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            dataset = rasterio.open(path)
    except _READ_ERRORS as exc:
        reason = _gdal_reason(exc, path)
        detail = "" if "not recognized" in reason or "supported file format" in reason else f" ({reason})"
        raise UserError(f"not a raster GDAL can read{detail}", path=path) from None
    try:
        return RasterSource(dataset, path, bands)
    except BaseException:
        dataset.close()
        raise


def is_nodata(band: np.ndarray, nodata: float | None) -> np.ndarray:
    """Where ``band`` equals ``nodata`` (NaN matches NaN; a value the dtype cannot hold matches nothing)."""
    if nodata is None:
        return np.zeros(band.shape, dtype=bool)
    if np.isnan(nodata):
        return np.isnan(band) if band.dtype.kind == "f" else np.zeros(band.shape, dtype=bool)
    if band.dtype.kind in "iu":
        info = np.iinfo(band.dtype)
        if not (info.min <= nodata <= info.max and float(nodata).is_integer()):
            return np.zeros(band.shape, dtype=bool)
    return band == band.dtype.type(nodata)


def _spread(span: int, count: int, block: int) -> list[int]:
    """Up to ``count`` evenly spaced offsets in 0..span, rounded down to a multiple of ``block``."""
    offsets = {int(span * i / max(1, count - 1)) // block * block for i in range(count)}
    return sorted(min(o, span) for o in offsets)


def _open_options() -> dict[str, str]:
    """GDAL settings at open: decode compressed blocks on all cores (GeoTIFF reads a big window's
    blocks in parallel; JPEG2000 too) unless the user set GDAL_NUM_THREADS."""
    return {} if "GDAL_NUM_THREADS" in os.environ else {"GDAL_NUM_THREADS": "ALL_CPUS"}


def _choose_bands(dataset: Any, path: Path, bands: Sequence[int] | None) -> tuple[int, int, int]:
    count = dataset.count
    if bands is not None:
        chosen = tuple(int(b) for b in bands)
        if len(chosen) not in (1, 3):
            raise UserError(
                f"choose 3 bands (R, G, B) or 1 band (grey), not {len(chosen)}: {list(chosen)}", path=path
            )
        for b in chosen:
            if not 1 <= b <= count:
                raise UserError(
                    f"band {b} does not exist: the raster has {count} band{'s' if count != 1 else ''} "
                    f"(numbered from 1)",
                    path=path,
                )
        return chosen * 3 if len(chosen) == 1 else chosen  # type: ignore[return-value]
    interp = list(dataset.colorinterp)
    wanted = (ColorInterp.red, ColorInterp.green, ColorInterp.blue)
    if all(c in interp for c in wanted):
        return tuple(interp.index(c) + 1 for c in wanted)  # type: ignore[return-value]
    if count >= 3:
        return (1, 2, 3)
    return (1, 1, 1)


def _mask_mode(dataset: Any, bands: tuple[int, ...]) -> str:
    """"per_dataset" (alpha band, internal or external mask), "nodata" or "all_valid"."""
    flags = [dataset.mask_flag_enums[b - 1] for b in bands]
    if any(MaskFlags.per_dataset in f or MaskFlags.alpha in f for f in flags):
        return "per_dataset"
    if all(MaskFlags.nodata in f for f in flags):
        return "nodata"
    return "all_valid"


def _palette_lut(dataset: Any, bands: tuple[int, int, int]) -> np.ndarray | None:
    """A (256, 3) uint8 colour table when the chosen band is a uint8 palette band, else None."""
    band = bands[0]
    if len(set(bands)) != 1 or dataset.dtypes[band - 1] != "uint8":
        return None
    if dataset.colorinterp[band - 1] != ColorInterp.palette:
        return None
    try:
        colormap = dataset.colormap(band)
    except ValueError:
        return None
    lut = np.zeros((256, 3), dtype=np.uint8)
    for index, rgba in colormap.items():
        if 0 <= index < 256:
            lut[index] = rgba[:3]
    return lut


def _georeferencing(dataset: Any, path: Path) -> tuple[CRS | None, Affine, bool]:
    crs = dataset.crs
    transform = dataset.transform
    if transform != Affine.identity():
        if crs is None:
            log.warning("%s: has a geotransform but no CRS; outputs will carry the geotransform without a CRS",
                        path)
        return crs, transform, True
    gcps, gcp_crs = dataset.gcps
    if gcps:
        from rasterio.transform import from_gcps

        log.warning("%s: georeferenced by ground control points only; outputs use an affine fit of them",
                    path)
        return gcp_crs, from_gcps(gcps), True
    if crs is not None:
        log.warning("%s: has a CRS but no geotransform; outputs will be in pixel coordinates", path)
    else:
        log.warning("%s: has no georeferencing; outputs will be in pixel coordinates", path)
    return None, PIXEL_TRANSFORM, False


def _gdal_reason(exc: BaseException, path: Path) -> str:
    """The most specific message in an exception chain, without the file name, on one line."""
    messages = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        text = " ".join(str(current).split())
        if text and "See previous exception" not in text:
            messages.append(text)
        current = current.__cause__ or current.__context__
    text = messages[-1] if messages else type(exc).__name__
    for name in (str(path), path.name):
        text = text.replace(f"'{name}'", "").replace(f"`{name}'", "").replace(name, "")
    text = text.strip(" :,.")
    return text[:200]
