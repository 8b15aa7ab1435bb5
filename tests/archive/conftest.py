"""Fixtures of the archive tests: seven small scenes in four CRSs (one with nodata), cut and
reprojected from ../shared/samples; an archive indexed once with the local engine; one local Ray
cluster with two CPU workers for the whole session."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rs_vlm_app.cli import main
from tests.conftest import SAMPLES

GRID = "64"

#: name -> (sample, row0, col0, target CRS or None = keep, nodata left half)
SCENES = {
    "naip_20200831_a": ("naip_2020_5m", 0, 0, None, False),
    "naip_20200831_b": ("naip_2020_5m", 256, 256, "EPSG:3857", False),
    "naip_20120731_a": ("naip_2012_5m", 0, 0, "EPSG:4326", False),
    "naip_20120731_b": ("naip_2012_5m", 256, 256, None, False),
    "landsat_20200601_utm": ("landsat_2020_4326", 0, 0, "EPSG:32718", False),
    "landsat_20200701_nodata": ("landsat_2020_4326", 100, 300, None, True),
    "naip_2020_c": ("naip_2020_5m", 400, 600, "EPSG:32614", False),
}


def make_scene(folder: Path, name: str, sample: str, row0: int, col0: int, crs: str | None, nodata_half: bool,
               size: int = 256) -> Path:
    """A ``size`` x ``size`` RGB crop of a sample, reprojected to ``crs`` when given."""
    import rasterio
    from rasterio.warp import Resampling, calculate_default_transform, reproject
    from rasterio.windows import Window

    with rasterio.open(SAMPLES / f"{sample}.tif") as src:
        window = Window(col0, row0, size, size)
        data = src.read([1, 2, 3], window=window)
        transform = src.window_transform(window)
        src_crs = src.crs
    data[data == 0] = 1  # 0 is nodata below: keep real pixels valid
    if nodata_half:
        data[:, :, : size // 2] = 0
    if crs is not None:
        bounds = rasterio.transform.array_bounds(size, size, transform)
        dst_transform, width, height = calculate_default_transform(src_crs, crs, size, size, *bounds,
                                                                   dst_width=size, dst_height=size)
        out = np.zeros((3, height, width), np.uint8)
        reproject(data, out, src_transform=transform, src_crs=src_crs, dst_transform=dst_transform, dst_crs=crs,
                  resampling=Resampling.nearest, src_nodata=0, dst_nodata=0)
        data, transform, src_crs = out, dst_transform, crs
    path = folder / f"{name}.tif"
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1], count=3,
                       dtype="uint8", crs=src_crs, transform=transform, nodata=0) as dst:
        dst.write(data)
    return path


@pytest.fixture(scope="session")
def scenes(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("archive-scenes")
    return {name: make_scene(folder, name, *args) for name, args in SCENES.items()}


def model_args(tiny_clip) -> list[str]:
    return ["--checkpoint", str(tiny_clip["checkpoint"]), "--model-config", str(tiny_clip["config"]),
            "--device", "cpu"]


def run_cli(args: list[str], capfd) -> tuple[int, dict | None, str]:
    """Run rsvlm in this process with --json; (exit status, the result summary or None, stderr)."""
    capfd.readouterr()
    code = main([*args, "--json"])
    out, err = capfd.readouterr()
    summary = None
    # --json moves fd 1 aside for events once per process (jobs/worker.protect_stdout); a later run's
    # events then arrive on stderr
    for line in (out + err).splitlines():
        if not line.startswith("{"):
            continue
        event = json.loads(line)
        if event.get("event") == "result":
            summary = event["summary"]
        elif event.get("event") == "error":
            err += event["message"]
    return code, summary, err


@pytest.fixture(scope="session")
def local_archive(tmp_path_factory, scenes, tiny_clip) -> Path:
    """The seven scenes indexed with the local engine (built once; tests must not write to it)."""
    archive = tmp_path_factory.mktemp("archives") / "local"
    code = main(["index", *map(str, scenes.values()), "-o", str(archive), "--grid", GRID, *model_args(tiny_clip)])
    assert code == 0
    return archive


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray instance with two CPU workers for the whole session; its GCS address."""
    ray = pytest.importorskip("ray")
    import logging

    context = ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
                       object_store_memory=100 * 1024 * 1024, logging_level=logging.ERROR, log_to_driver=False)
    yield context.address_info["gcs_address"]
    ray.shutdown()
