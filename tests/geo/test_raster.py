"""open_raster / RasterSource on the real samples and on small rasters with known pixels."""

from __future__ import annotations

import logging
import shutil
import warnings

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.enums import ColorInterp
from rasterio.errors import NotGeoreferencedWarning

from rs_vlm_app.errors import UserError
from rs_vlm_app.geo import raster as raster_module
from rs_vlm_app.geo.raster import PIXEL_TRANSFORM, open_raster
from tests.geo.rasters import LANDSAT, NAIP, TRANSFORM, UTM, naip, naip_with_hole, ramp_uint16, write


def expected_stretch(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    scaled = (values.astype(np.float64) - lo) * (255.0 / (hi - lo))
    return np.rint(np.clip(scaled, 0, 255)).astype(np.uint8)


# -- band choice and pixels -----------------------------------------------------------------------


def test_naip_reads_its_first_three_bands_unchanged():
    data = naip()
    with open_raster(NAIP) as src:
        assert (src.width, src.height) == (934, 723)
        assert src.band_indexes == (1, 2, 3)
        assert src.dtype == "uint8" and src.stretch is None
        assert src.crs.to_epsg() == 26914 and src.georeferenced
        assert src.transform == Affine(5.0, 0.0, 485899.0, 0.0, -5.0, 5209246.0)
        assert src.nodata == 0
        rgb, valid = src.read_rgb(100, 300, 50, 450)
    assert rgb.dtype == np.uint8 and rgb.shape == (200, 400, 3)
    np.testing.assert_array_equal(rgb, np.moveaxis(data[:3, 100:300, 50:450], 0, -1))
    assert valid.all()


def test_explicit_bands_pick_false_colour():
    data = naip()
    with open_raster(NAIP, bands=(4, 3, 2)) as src:
        assert src.band_indexes == (4, 3, 2)
        rgb, _ = src.read_rgb(0, 50, 0, 60)
    np.testing.assert_array_equal(rgb, np.moveaxis(data[[3, 2, 1], :50, :60], 0, -1))


def test_one_explicit_band_is_grey():
    data = naip()
    with open_raster(NAIP, bands=[4]) as src:
        assert src.band_indexes == (4, 4, 4)
        rgb, _ = src.read_rgb(0, 10, 0, 10)
    for channel in range(3):
        np.testing.assert_array_equal(rgb[..., channel], data[3, :10, :10])


def test_colour_interpretation_decides_rgb_and_alpha_masks(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.integers(1, 255, size=(4, 40, 50), dtype=np.uint8)
    data[3] = 255
    data[3, :10, :] = 0  # transparent top rows
    path = write(tmp_path / "bgra.tif", data, colorinterp=[
        ColorInterp.blue, ColorInterp.green, ColorInterp.red, ColorInterp.alpha])
    with open_raster(path) as src:
        assert src.band_indexes == (3, 2, 1)
        rgb, valid = src.read_rgb(0, 40, 0, 50)
    assert not valid[:10].any() and valid[10:].all()
    np.testing.assert_array_equal(rgb[10:], np.moveaxis(data[[2, 1, 0], 10:], 0, -1))
    assert not rgb[:10].any()


def test_one_band_raster_is_replicated(tmp_path):
    data = np.arange(30 * 40, dtype=np.uint8).reshape(1, 30, 40)
    with open_raster(write(tmp_path / "grey.tif", data)) as src:
        assert src.band_indexes == (1, 1, 1)
        rgb, _ = src.read_rgb(0, 30, 0, 40)
    assert (rgb == data[0][..., None]).all()


def test_two_band_raster_uses_its_first_band(tmp_path):
    data = np.stack([np.full((20, 20), 7, np.uint8), np.full((20, 20), 99, np.uint8)])
    with open_raster(write(tmp_path / "two.tif", data)) as src:
        assert src.band_indexes == (1, 1, 1)
        rgb, _ = src.read_rgb(0, 20, 0, 20)
    assert (rgb == 7).all()


def test_palette_band_is_expanded_through_its_colour_table(tmp_path):
    data = np.zeros((1, 10, 10), np.uint8)
    data[0, 5:] = 1
    path = write(tmp_path / "classes.tif", data)
    with rasterio.open(path, "r+") as dst:
        dst.write_colormap(1, {0: (0, 0, 255, 255), 1: (0, 200, 0, 255)})
    with open_raster(path) as src:
        rgb, _ = src.read_rgb(0, 10, 0, 10)
    assert (rgb[:5] == (0, 0, 255)).all() and (rgb[5:] == (0, 200, 0)).all()


# -- stretch ----------------------------------------------------------------------------------------


def test_uint16_is_stretched_from_2_98_percentiles_excluding_nodata(tmp_path):
    data = ramp_uint16()
    data[:, :40, :] = 0  # a third of the image is nodata; including it would move the 2nd percentile
    path = write(tmp_path / "u16.tif", data, nodata=0)
    with open_raster(path) as src:
        valid_values = data[:, 40:, :].reshape(3, -1)
        expected = [tuple(np.percentile(v, [2, 98])) for v in valid_values]
        assert np.ravel(src.stretch) == pytest.approx(np.ravel(expected))
        rgb, valid = src.read_rgb(0, 120, 0, 200)
    assert not valid[:40].any() and valid[40:].all()
    assert not rgb[:40].any()
    for channel, (lo, hi) in enumerate(src.stretch):
        np.testing.assert_array_equal(rgb[40:, :, channel], expected_stretch(data[channel, 40:], lo, hi))
    # the stretch really spreads the data: about 2% of valid pixels at 0 and 2% at 255
    assert 0.01 < (rgb[40:, :, 0] == 0).mean() < 0.03 and 0.01 < (rgb[40:, :, 0] == 255).mean() < 0.03


def test_int16_lookup_table_handles_negative_values(tmp_path):
    data = (np.arange(100 * 100, dtype=np.int32).reshape(1, 100, 100) - 5000).astype(np.int16)
    with open_raster(write(tmp_path / "i16.tif", data)) as src:
        (lo, hi), = set(src.stretch)
        rgb, _ = src.read_rgb(0, 100, 0, 100)
    assert lo < 0 < hi
    np.testing.assert_array_equal(rgb[..., 0], expected_stretch(data[0], lo, hi))


class _RecordingDataset:
    """Wraps a rasterio dataset and records the shape (bands, h, w) each read returns."""

    def __init__(self, dataset, calls):
        self._dataset, self._calls = dataset, calls

    def read(self, *args, **kwargs):
        result = self._dataset.read(*args, **kwargs)
        self._calls.append(("read", kwargs.get("window"), result.shape))
        return result

    def read_masks(self, *args, **kwargs):
        self._calls.append(("read_masks", kwargs.get("window"), kwargs.get("out_shape")))
        return self._dataset.read_masks(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._dataset, name)


def test_stretch_is_estimated_on_a_decimated_read(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    data = rng.integers(1000, 3000, size=(3, 2400, 3000), dtype=np.uint16)
    path = write(tmp_path / "big16.tif", data, tiled=True, blockxsize=256, blockysize=256)
    calls = []
    real_open = raster_module.rasterio.open
    monkeypatch.setattr(raster_module.rasterio, "open", lambda p: _RecordingDataset(real_open(p), calls))
    with open_raster(path) as src:
        assert src.stretch is not None
    reads = [c for c in calls if c[0] == "read"]
    assert len(reads) == 1
    _kind, _window, out_shape = reads[0]
    assert out_shape == (3, 819, 1024)  # about 1024 on the long side, never 2400 x 3000
    lo, hi = np.percentile(data[0, ::10, ::10], [2, 98])
    assert src.stretch[0] == pytest.approx((lo, hi), abs=15)


def test_big_raster_without_overviews_samples_a_few_blocks(tmp_path, monkeypatch):
    rows, cols = np.arange(4100, dtype=np.int32)[:, None], np.arange(4200, dtype=np.int32)[None, :]
    data = ((rows * 7 + cols * 3) % 4001 + 500).astype(np.uint16)[np.newaxis]
    path = write(tmp_path / "big_no_ovr.tif", data, tiled=True, blockxsize=256, blockysize=256,
                 compress="deflate")
    calls = []
    real_open = raster_module.rasterio.open
    monkeypatch.setattr(raster_module.rasterio, "open", lambda p: _RecordingDataset(real_open(p), calls))
    with open_raster(path) as src:
        stretch = src.stretch
    reads = [c for c in calls if c[0] == "read"]
    assert len(reads) == 64
    assert all(shape == (1, 256, 256) for _k, _w, shape in reads)
    assert all(w.row_off % 256 == 0 and w.col_off % 256 == 0 for _k, w, _s in reads)
    assert sum(np.prod(shape) for _k, _w, shape in reads) < data.size / 4
    expected = np.percentile(data, [2, 98])
    assert stretch[0] == pytest.approx(tuple(expected), rel=0.05)
    # with overviews, one decimated read (GDAL serves it from the overviews)
    with real_open(path, "r+") as dst:
        dst.build_overviews([2, 4, 8])
    calls.clear()
    with open_raster(path):
        pass
    assert [shape for kind, _w, shape in calls if kind == "read"] == [(1, 1000, 1024)]


def test_float32_nan_is_masked_and_ignored_by_the_stretch(tmp_path):
    rng = np.random.default_rng(2)
    data = rng.normal(0.2, 0.05, size=(3, 64, 80)).astype(np.float32)
    data[:, 10:20, 10:20] = np.nan
    data[0, 30, 30] = np.nan  # NaN in one band invalidates the pixel
    with open_raster(write(tmp_path / "f32.tif", data)) as src:
        rgb, valid = src.read_rgb(0, 64, 0, 80)
        finite = data[0][np.isfinite(data[0])]
        assert src.stretch[0] == pytest.approx(tuple(np.percentile(finite, [2, 98])), rel=1e-5)
        assert src.read_mask().sum() == valid.sum()
    assert not valid[10:20, 10:20].any() and not valid[30, 30] and valid.sum() == 64 * 80 - 101
    assert not rgb[~valid].any()
    lo, hi = src.stretch[1]
    diff = rgb[..., 1][valid].astype(int) - expected_stretch(data[1][valid], lo, hi).astype(int)
    assert np.abs(diff).max() <= 1


# -- masks ------------------------------------------------------------------------------------------


def test_nodata_pixels_are_masked_and_zero(tmp_path):
    path = naip_with_hole(tmp_path / "hole.tif", rows=slice(0, 300), cols=slice(0, 400))
    with open_raster(path) as src:
        rgb, valid = src.read_rgb(200, 400, 300, 500)
        small = src.read_mask(out_shape=(72, 93))
    assert not valid[:100, :100].any()
    assert valid[100:].all() and valid[:, 100:].all()
    assert not rgb[:100, :100].any()
    assert small.shape == (72, 93) and not small[:25, :35].any() and small[40:, 50:].all()


def test_pixel_black_in_one_band_only_stays_valid():
    """Landsat has pixels with red == nodata (0) but green/blue > 0: real data, as in GDAL's dataset mask."""
    with rasterio.open(LANDSAT) as ds:
        expected = ds.dataset_mask() > 0
        red_zero = ds.read(1) == 0
    with open_raster(LANDSAT) as src:
        _rgb, valid = src.read_rgb(0, src.height, 0, src.width)
    assert red_zero.sum() > 0
    np.testing.assert_array_equal(valid, expected)


def test_internal_mask_is_used(tmp_path):
    data = naip()[:3, :100, :120]
    path = write(tmp_path / "masked.tif", data)
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(path, "r+") as dst:
        mask = np.full((100, 120), 255, np.uint8)
        mask[50:, 60:] = 0
        dst.write_mask(mask)
    with open_raster(path) as src:
        rgb, valid = src.read_rgb(0, 100, 0, 120)
    assert not valid[50:, 60:].any() and valid[:50].all() and valid[:, :60].all()
    assert not rgb[50:, 60:].any()


# -- formats and georeferencing ---------------------------------------------------------------------


def test_png_without_georeferencing_warns_once_and_uses_pixel_frame(tmp_path, caplog):
    data = naip()[:3, :64, :96]
    path = write(tmp_path / "photo.png", data, crs=None, transform=None, driver="PNG")
    caplog.set_level(logging.WARNING)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with open_raster(path) as src:
            rgb, _ = src.read_rgb(0, 64, 0, 96)
            assert not src.georeferenced and src.crs is None
            assert src.transform == PIXEL_TRANSFORM
            assert src.bounds == (0.0, -64.0, 96.0, 0.0)
    assert not [w for w in caught if issubclass(w.category, NotGeoreferencedWarning)]
    lines = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 1
    assert "photo.png" in lines[0].getMessage() and "pixel coordinates" in lines[0].getMessage()
    np.testing.assert_array_equal(rgb, np.moveaxis(data, 0, -1))


def test_vrt_cog_and_jpeg2000_open_with_the_same_pixels(tmp_path):
    from rasterio.shutil import copy as gdal_copy

    data = naip()
    cog = tmp_path / "naip_cog.tif"
    gdal_copy(NAIP, cog, driver="COG", COMPRESS="DEFLATE")
    vrt = tmp_path / "false_colour.vrt"
    bands = "".join(
        f'<VRTRasterBand dataType="Byte" band="{i}"><SimpleSource><SourceFilename relativeToVRT="0">'
        f"{NAIP}</SourceFilename><SourceBand>{b}</SourceBand></SimpleSource></VRTRasterBand>"
        for i, b in enumerate((4, 3, 2), start=1)
    )
    vrt.write_text(f'<VRTDataset rasterXSize="934" rasterYSize="723"><SRS>EPSG:26914</SRS>'
                   f"<GeoTransform>485899, 5, 0, 5209246, 0, -5</GeoTransform>{bands}</VRTDataset>")
    expected = {cog: data[:3], vrt: data[[3, 2, 1]]}
    if "JP2OpenJPEG" in rasterio.drivers.raster_driver_extensions().values():
        jp2 = tmp_path / "naip.jp2"
        gdal_copy(NAIP, jp2, driver="JP2OpenJPEG", REVERSIBLE="YES", QUALITY="100")
        expected[jp2] = data[:3]
    for path, bands_expected in expected.items():
        with open_raster(path) as src:
            assert src.crs.to_epsg() == 26914, path
            rgb, _ = src.read_rgb(0, 723, 0, 934)
        np.testing.assert_array_equal(rgb, np.moveaxis(bands_expected, 0, -1), err_msg=str(path))
    assert len(expected) == 3  # the bundled GDAL has JPEG2000


def test_profile_for_output_covers_the_same_footprint():
    with open_raster(NAIP) as src:
        full = src.profile_for_output()
        half = src.profile_for_output(out_shape=(361, 467))
        assert full == {"crs": src.crs, "transform": src.transform}
    assert half["transform"] @ (467, 361) == pytest.approx(full["transform"] @ (934, 723))
    assert half["transform"] @ (0, 0) == full["transform"] @ (0, 0)


# -- fingerprint ------------------------------------------------------------------------------------


def test_fingerprint_follows_pixels_not_names_or_mtime(tmp_path):
    copy = tmp_path / "copy.tif"
    shutil.copy(NAIP, copy)
    with open_raster(NAIP) as a, open_raster(copy) as b:
        assert a.fingerprint() == b.fingerprint()
    with open_raster(copy, bands=(4, 3, 2)) as c, open_raster(NAIP) as a:
        assert c.fingerprint() != a.fingerprint()
    data = naip()
    data[0, 400, 500] ^= 0xFF
    with rasterio.open(NAIP) as src:
        profile = src.profile
    changed = tmp_path / "changed.tif"
    with rasterio.open(changed, "w", **profile) as dst:
        dst.write(data)
    same = tmp_path / "same.tif"
    with rasterio.open(same, "w", **profile) as dst:
        dst.write(naip())
    with open_raster(changed) as x, open_raster(same) as y:
        assert x.fingerprint() != y.fingerprint()


def test_fingerprint_ignores_a_statistics_sidecar(tmp_path):
    """QGIS writes SCENE.aux.xml with statistics when it displays a raster; the pixels did not change."""
    copy = tmp_path / "scene.tif"
    shutil.copy(NAIP, copy)
    with open_raster(copy) as a:
        before = a.fingerprint()
    (tmp_path / "scene.tif.aux.xml").write_text(
        '<PAMDataset><PAMRasterBand band="1"><Metadata><MDI key="STATISTICS_MEAN">81.3</MDI></Metadata>'
        "</PAMRasterBand></PAMDataset>")
    with open_raster(copy) as b:
        assert b.fingerprint() == before


def test_fingerprint_of_a_vrt_follows_its_sources(tmp_path):
    source = tmp_path / "source.tif"
    shutil.copy(NAIP, source)
    vrt = tmp_path / "view.vrt"
    vrt.write_text(
        '<VRTDataset rasterXSize="934" rasterYSize="723"><VRTRasterBand dataType="Byte" band="1">'
        f'<SimpleSource><SourceFilename relativeToVRT="0">{source}</SourceFilename><SourceBand>1'
        "</SourceBand></SimpleSource></VRTRasterBand></VRTDataset>")
    with open_raster(vrt) as src:
        assert str(source) in src.files
        before = src.fingerprint()
    data = naip()
    data[0, :10, :10] = 1
    with rasterio.open(NAIP) as original:
        profile = original.profile
    with rasterio.open(source, "w", **profile) as dst:
        dst.write(data)
    with open_raster(vrt) as src:
        assert src.fingerprint() != before


def test_fingerprint_samples_big_files(tmp_path):
    from rs_vlm_app.geo.fingerprint import sampled_digest

    blob = np.random.default_rng(3).integers(0, 256, 20 << 20, dtype=np.uint8)
    first = tmp_path / "a.bin"
    first.write_bytes(blob.tobytes())
    digest = sampled_digest([first])
    blob[-10] ^= 1  # inside the last MiB
    first.write_bytes(blob.tobytes())
    assert sampled_digest([first]) != digest


# -- bad input --------------------------------------------------------------------------------------


def one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


def test_missing_file(tmp_path):
    with pytest.raises(UserError) as exc:
        open_raster(tmp_path / "nope.tif")
    assert one_line(exc) == f"{tmp_path / 'nope.tif'}: file not found"


def test_not_a_raster(tmp_path):
    path = tmp_path / "notes.tif"
    path.write_text("these are my notes, not an image")
    with pytest.raises(UserError) as exc:
        open_raster(path)
    assert one_line(exc) == f"{path}: not a raster GDAL can read"


def test_bad_band_index_names_file_index_and_count():
    with pytest.raises(UserError) as exc:
        open_raster(NAIP, bands=(5, 3, 2))
    assert one_line(exc) == f"{NAIP}: band 5 does not exist: the raster has 4 bands (numbered from 1)"
    with pytest.raises(UserError) as exc:
        open_raster(NAIP, bands=(0, 1, 2))
    assert "band 0 does not exist" in one_line(exc)
    with pytest.raises(UserError) as exc:
        open_raster(NAIP, bands=(1, 2))
    assert "choose 3 bands (R, G, B) or 1 band (grey), not 2" in one_line(exc)


def test_container_without_bands_of_its_own_names_a_subdataset(tmp_path):
    path = tmp_path / "two_tables.gpkg"
    profile = {"driver": "GPKG", "width": 20, "height": 20, "count": 3, "dtype": "uint8",
               "crs": "EPSG:3857", "transform": Affine(10, 0, 0, 0, -10, 0)}
    for table, extra in (("before", {}), ("after", {"APPEND_SUBDATASET": "YES"})):
        with rasterio.open(path, "w", RASTER_TABLE=table, **profile, **extra) as dst:
            dst.write(np.full((3, 20, 20), 9, np.uint8))
    with pytest.raises(UserError) as exc:
        open_raster(path)
    assert one_line(exc) == (f"{path}: has no raster bands of its own; it holds 2 subdatasets: "
                             f"open one of them, e.g. GPKG:{path}:before")
    with open_raster(f"GPKG:{path}:after") as src:
        assert (src.read_rgb(0, 20, 0, 20)[0] == 9).all()


def test_truncated_file_fails_on_read_with_the_rows(tmp_path):
    path = tmp_path / "cut.tif"
    path.write_bytes(NAIP.read_bytes()[: NAIP.stat().st_size // 2])
    with open_raster(path) as src, pytest.raises(UserError) as exc:
        src.read_rgb(0, 723, 0, 934)
    text = one_line(exc)
    assert text.startswith(f"{path}: cannot read rows 0-723, columns 0-934: the file may be truncated or corrupt")


def test_truncated_uint16_file_fails_at_open(tmp_path):
    full = write(tmp_path / "full.tif", ramp_uint16(600, 800), tiled=True, blockxsize=256, blockysize=256,
                 compress="deflate")
    path = tmp_path / "cut16.tif"
    path.write_bytes(full.read_bytes()[: full.stat().st_size // 3])
    with pytest.raises(UserError) as exc:
        open_raster(path)
    assert one_line(exc).startswith(f"{path}: cannot read a sample of the image")


def test_windows_outside_the_raster_are_a_bug_not_a_user_error():
    with open_raster(NAIP) as src, pytest.raises(ValueError):
        src.read_rgb(0, 800, 0, 10)


def test_transform_survives_reopen_and_geotransform_without_crs_warns(tmp_path, caplog):
    data = naip()[:3, :20, :20]
    path = write(tmp_path / "nocrs.tif", data, crs=None, transform=TRANSFORM)
    caplog.set_level(logging.WARNING)
    with open_raster(path) as src:
        assert src.transform == TRANSFORM and src.crs is None and src.georeferenced
    assert len(caplog.records) == 1 and "no CRS" in caplog.records[0].getMessage()


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")  # building the file
def test_ground_control_points_only_give_an_affine_fit(tmp_path, caplog):
    from rasterio.control import GroundControlPoint

    gcps = [GroundControlPoint(row=r, col=c, x=500000 + 10 * c, y=5200000 - 10 * r)
            for r, c in ((0, 0), (0, 60), (40, 0), (40, 60))]
    path = write(tmp_path / "gcps.tif", naip()[:3, :40, :60], crs=None, transform=None)
    with rasterio.open(path, "r+") as dst:
        dst.gcps = (gcps, rasterio.crs.CRS.from_user_input(UTM))
    caplog.set_level(logging.WARNING)
    with open_raster(path) as src:
        assert src.georeferenced and src.crs.to_epsg() == 26914
        assert src.transform @ (60, 40) == pytest.approx((500600, 5199600))
    assert len(caplog.records) == 1 and "ground control points" in caplog.records[0].getMessage()
