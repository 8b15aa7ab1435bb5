"""Memory of `rsvlm localize` does not grow with the raster: a 40,000 x 40,000 px scene (a VRT that
stretches one of the shared samples) with 4096 px windows peaks within the budget, and within 25 % of
the same job on a 10,000 x 10,000 px scene. Peak RSS is the operating system's figure for the child."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.geo.rasters import NAIP

#: Side of the square of real pixels in the middle of each test scene.
CONTENT = 8192
#: Budget of the issue: 1.5 GiB peak RSS for a tiny model on the CPU.
PEAK_LIMIT_MIB = 1536

#: Runs one command and prints the peak RSS of its process tree (ru_maxrss of the waited child), so the
#: figure is this command's own, not the test runner's earlier children's.
MEASURE = r"""
import json, resource, subprocess, sys
done = subprocess.run(sys.argv[1:], capture_output=True, text=True)
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(json.dumps({"rc": done.returncode, "peak_mib": peak, "stderr": done.stderr[-3000:]}))
"""


def stretched_vrt(path: Path, source: Path, size: int, content: int = CONTENT) -> Path:
    """A ``size`` x ``size`` VRT: ``source`` stretched over a ``content`` x ``content`` square in its
    middle, nodata (0) around it. Every pixel is still read (GDAL fills the nodata), which is what
    the memory depends on; only the middle's tiles reach the model, which keeps the test short."""
    import rasterio

    with rasterio.open(source) as src:
        width, height = src.width, src.height
        a, _, c, _, e, f = src.transform[:6]
        crs = src.crs.to_wkt()
        dtype = {"uint8": "Byte"}[src.dtypes[0]]
    scale_x, scale_y = width / content, height / content
    offset = (size - content) // 2
    transform = f"{c - offset * a * scale_x}, {a * scale_x}, 0, {f - offset * e * scale_y}, 0, {e * scale_y}"
    bands = "".join(f"""
  <VRTRasterBand dataType="{dtype}" band="{b}">
    <NoDataValue>0</NoDataValue>
    <ColorInterp>{("Red", "Green", "Blue")[b - 1]}</ColorInterp>
    <SimpleSource>
      <SourceFilename relativeToVRT="0">{source}</SourceFilename>
      <SourceBand>{b}</SourceBand>
      <SrcRect xOff="0" yOff="0" xSize="{width}" ySize="{height}"/>
      <DstRect xOff="{offset}" yOff="{offset}" xSize="{content}" ySize="{content}"/>
    </SimpleSource>
  </VRTRasterBand>""" for b in (1, 2, 3))
    path.write_text(f"""<VRTDataset rasterXSize="{size}" rasterYSize="{size}">
  <SRS>{crs.replace("&", "&amp;").replace("<", "&lt;")}</SRS>
  <GeoTransform>{transform}</GeoTransform>{bands}
</VRTDataset>
""")
    return path


def localize_peak(tmp_path: Path, tiny_clip: dict, size: int) -> dict:
    scene = stretched_vrt(tmp_path / f"scene_{size}.vrt", NAIP, size)
    command = [
        sys.executable, "-m", "rs_vlm_app", "localize", str(scene), "a lake", "-o", str(tmp_path / f"out_{size}"),
        "--model-config", str(tiny_clip["config"]), "--checkpoint", str(tiny_clip["checkpoint"]),
        "--device", "cpu", "--grid", "4096", "--heatmap-pixel", "256", "--json",
    ]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-c", MEASURE, *command], capture_output=True, text=True, env=env,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["rc"] == 0, report["stderr"]
    heatmap = tmp_path / f"out_{size}" / "a_lake_heatmap.tif"
    assert heatmap.is_file()
    return report


@pytest.mark.slow
def test_localize_memory_is_flat_from_10k_to_40k_pixels(tmp_path, tiny_clip):
    import rasterio

    small = localize_peak(tmp_path, tiny_clip, 10_000)
    big = localize_peak(tmp_path, tiny_clip, 40_000)
    with rasterio.open(tmp_path / "out_40000" / "a_lake_heatmap.tif") as heat:
        assert (heat.width, heat.height) == (40_000 // 256 + 1, 40_000 // 256 + 1)
        assert heat.read(1, masked=True).count() > 0
    assert big["peak_mib"] <= PEAK_LIMIT_MIB, big
    assert big["peak_mib"] <= 1.25 * small["peak_mib"], (small, big)
