"""Archive benchmark: indexing throughput per engine, search latency and recall, disk size. ONE JSON line.

1. Scaling: --scenes scenes of --size x --size pixels, cut from ../shared/samples (mosaicked and
   resampled), indexed with a random-weight ViT-B-32 (the architecture sets the cost; no download)
   by the local engine and by the ray engine with 1 and 2 CPU workers. Reports scenes/s and the
   efficiency of N Ray workers: rate(ray, N) / (N x rate(local)).
2. Search: synthetic archives of --tiles sizes (512-d clustered unit vectors with real footprints),
   searched exactly and through the IVF-PQ index with exact re-rank: median latency per query and
   recall@100 against exact, over --queries queries.
3. Disk: bytes of the archive folder per million tiles (embeddings + GeoParquet tables + index).

    python bench/archive.py [--scenes 8] [--size 1024] [--tiles 100000,1000000,10000000] [--queries 20]
    python bench/archive.py --skip-scaling --tiles 100000        # the search part only

10M tiles need ~25 GB of disk and a few hours of CPU to build; choose --tiles to fit the machine.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rs_vlm_app.archive.ann import maybe_update_index  # noqa: E402
from rs_vlm_app.archive.search import rank_archive  # noqa: E402
from rs_vlm_app.archive.store import Archive, Recipe, SceneInfo  # noqa: E402

DIM = 512
SAMPLES = Path(os.environ.get("RSVLM_SHARED", REPO.parent / "shared")) / "samples"


def make_scenes(folder: Path, count: int, size: int) -> list[Path]:
    """``count`` RGB scenes of size x size, resampled from the NAIP samples (alternating years/offsets)."""
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.windows import Window

    paths = []
    for i in range(count):
        sample = SAMPLES / ("naip_2020_5m.tif" if i % 2 == 0 else "naip_2012_5m.tif")
        with rasterio.open(sample) as src:
            off = (i * 37) % 200
            window = Window(off, off, src.width - 200, src.height - 200)
            data = src.read([1, 2, 3], window=window, out_shape=(3, size, size), resampling=Resampling.bilinear)
            transform = src.window_transform(window) * rasterio.Affine.scale(window.width / size, window.height / size)
            profile = dict(driver="GTiff", width=size, height=size, count=3, dtype="uint8", crs=src.crs,
                           transform=transform, tiled=True)
        path = folder / f"scene_{i:03d}.tif"
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(data)
        paths.append(path)
    return paths


def vit_b32(folder: Path):
    """A ViT-B-32 with random weights saved as a checkpoint, and its ModelSpec."""
    import open_clip
    import torch

    from rs_vlm_app.models.spec import ModelSpec

    model = open_clip.create_model("ViT-B-32", pretrained=None)
    path = folder / "vit_b32_random.pt"
    torch.save(model.state_dict(), path)
    return ModelSpec(checkpoint=path, arch="ViT-B-32", device="cpu", allow_download=False)


def scaling(scenes: list[Path], spec, grid: str) -> dict:
    from rs_vlm_app.archive.engines import LocalEngine
    from rs_vlm_app.archive.indexer import index_archive
    from rs_vlm_app.archive.inputs import collect_scenes
    from rs_vlm_app.archive.units import TileSettings
    from rs_vlm_app.jobs.context import JobContext

    inputs, _ = collect_scenes([str(p) for p in scenes])
    settings = TileSettings(grid=grid)
    rates: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        encoder = JobContext().clip_encoder(spec)
        started = time.monotonic()
        index_archive(inputs, [], Path(tmp) / "local", settings, lambda: LocalEngine(encoder, _Quiet()),
                      build_ann=False)
        rates["local"] = len(scenes) / (time.monotonic() - started)
        import ray

        from rs_vlm_app.archive.ray_engine import RayEngine

        for workers in (1, 2):
            ray.init(num_cpus=workers, include_dashboard=False, _node_ip_address="127.0.0.1",
                     log_to_driver=False)
            try:
                started = time.monotonic()  # includes the workers' model loads: what a user waits for
                index_archive(inputs, [], Path(tmp) / f"ray{workers}", settings,
                              lambda w=workers: RayEngine(spec, _Quiet(), workers=w), build_ann=False)
                rates[f"ray_{workers}"] = len(scenes) / (time.monotonic() - started)
            finally:
                ray.shutdown()
    return {"scenes": len(scenes), "scenes_per_s": {k: round(v, 3) for k, v in rates.items()},
            "efficiency": {f"ray_{n}": round(rates[f"ray_{n}"] / (n * rates["local"]), 3) for n in (1, 2)}}


class _Quiet:
    def progress(self, stage, done, total=None):
        pass

    def log(self, message, level="info"):
        pass

    def cancel_requested(self):
        return False


def synthetic_archive(root: Path, tiles: int, rng: np.random.Generator, per_scene: int = 50_000) -> Archive:
    from pyproj import CRS

    archive = Archive(root)
    recipe = Recipe(model="synthetic", model_name="synthetic", embed_dim=DIM, preprocess="p", precision="fp32",
                    grid="regular:256@0")
    archive.adopt(recipe)
    centres = rng.normal(size=(1024, DIM)).astype(np.float32)
    wkt = CRS.from_epsg(32614).to_wkt()
    for s in range(math.ceil(tiles / per_scene)):
        n = min(per_scene, tiles - s * per_scene)
        side = math.ceil(math.sqrt(n))
        idx = np.arange(n)
        windows = np.column_stack([256 * (idx // side), 256 * (idx // side) + 256, 256 * (idx % side),
                                   256 * (idx % side) + 256, np.full(n, 256)])
        vectors = centres[rng.integers(0, len(centres), n)] + 0.5 * rng.normal(size=(n, DIM)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        info = SceneInfo(id=f"s{s:05d}", path=f"s{s}.tif", fingerprint=f"f{s}", width=256 * side, height=256 * side,
                         crs_wkt=wkt, transform=[1.0, 0, 400000.0 + 1e4 * (s % 50), 0, -1.0, 5e6 - 1e4 * (s // 50)],
                         bounds=[-99, 45, -98, 46], date=f"20{10 + s % 15}-06-01", tiles=n)
        archive.commit_part(info, 0, windows, vectors, recipe)
        archive.commit_scene(info)
    return archive


def folder_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def search(sizes: list[int], queries: int, k: int = 100) -> list[dict]:
    rng = np.random.default_rng(0)
    out = []
    for size in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            archive = synthetic_archive(Path(tmp) / "a", size, rng)
            started = time.monotonic()
            maybe_update_index(archive, min_tiles=0)
            build_s = time.monotonic() - started
            exact_ms, ann_ms, recalls = [], [], []
            for _ in range(queries):
                q = rng.normal(size=DIM).astype(np.float32)
                q /= np.linalg.norm(q)
                t = time.perf_counter()
                exact, _ = rank_archive(archive, q, k, exact=True)
                exact_ms.append(1000 * (time.perf_counter() - t))
                t = time.perf_counter()
                approx, _ = rank_archive(archive, q, k)
                ann_ms.append(1000 * (time.perf_counter() - t))
                truth = {(h.scene.id, h.row) for h in exact}
                recalls.append(len(truth & {(h.scene.id, h.row) for h in approx}) / k)
            total = folder_bytes(archive.root)
            out.append({"tiles": size, "index_build_s": round(build_s, 1),
                        "exact_ms": round(statistics.median(exact_ms), 2),
                        "ann_ms": round(statistics.median(ann_ms), 2),
                        "recall_at_100": round(float(np.mean(recalls)), 4),
                        "disk_bytes_per_million_tiles": int(total / size * 1e6)})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=8)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--grid", default="256")
    parser.add_argument("--tiles", default="100000,1000000,10000000")
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--skip-scaling", action="store_true")
    args = parser.parse_args()
    result: dict = {"bench": "archive"}
    if not args.skip_scaling:
        with tempfile.TemporaryDirectory() as tmp:
            scenes = make_scenes(Path(tmp), args.scenes, args.size)
            result["scaling"] = scaling(scenes, vit_b32(Path(tmp)), args.grid)
    result["search"] = search([int(t) for t in args.tiles.split(",") if t], args.queries)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
