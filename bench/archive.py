"""Archive benchmark: indexing throughput per engine, search latency and recall, disk size. ONE JSON line.

Every figure is the median of --repeats runs (default 5); each run's value is listed beside it.

1. Scaling: --scenes scenes of --size x --size pixels, cut from ../shared/samples (mosaicked and
   resampled), indexed with a random-weight ViT-B-32 (the architecture sets the cost; no download)
   by the local engine and by the ray engine with 1 and 2 CPU workers, each run into a fresh archive.
   Reports scenes/s and the efficiency of N Ray workers: rate(ray, N) / (N x rate(local)).
2. Search: synthetic archives of --tiles sizes (512-d clustered unit vectors with real footprints,
   written one scene at a time), indexed with the default IVF-PQ settings and searched through
   rank_archive: latency per query (ann_ms; exact_ms = a full scan without the index) and recall@100
   against the exact top 100, for random queries (far from every tile, like a CLIP text query: the
   hard case) and queries near stored tiles; a new query set per repetition. The exact truth of all
   queries comes from one batched pass over the embeddings.
3. Disk: bytes of the archive folder per million tiles (embeddings, GeoParquet tables, index).

    python bench/archive.py [--scenes 8] [--size 1024] [--tiles 100000,1M,10M] [--queries 20] [--repeats 5]
    python bench/archive.py --skip-scaling --tiles 100000 --work-dir /tmp/archives   # search only, keep archives

10M tiles need ~25 GB of disk (not the RAM: archives are generated and indexed part by part); on
2 cores the index build dominates (see docs/archive.md, Sizing). Choose --tiles to fit the machine.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rs_vlm_app.archive.ann import (  # noqa: E402
    DEFAULT_NPROBE,
    DEFAULT_REFINE,
    INDEX_DIR,
    candidate_count,
    index_size,
    load_index,
    maybe_update_index,
)
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


def scaling(scenes: list[Path], spec, grid: str, repeats: int) -> dict:
    """Index ``scenes`` ``repeats`` times per engine (each run a fresh archive): median scenes/s per
    engine, every run's rate, and the efficiency of N Ray workers from the medians and per run."""
    from rs_vlm_app.archive.engines import LocalEngine
    from rs_vlm_app.archive.indexer import index_archive
    from rs_vlm_app.archive.inputs import collect_scenes
    from rs_vlm_app.archive.units import TileSettings
    from rs_vlm_app.jobs.context import JobContext

    inputs, _ = collect_scenes([str(p) for p in scenes])
    settings = TileSettings(grid=grid)
    runs: dict[str, list[float]] = {"local": [], "ray_1": [], "ray_2": []}
    encoder = JobContext().clip_encoder(spec)
    import ray

    from rs_vlm_app.archive.ray_engine import RayEngine

    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            started = time.monotonic()
            index_archive(inputs, [], Path(tmp) / "local", settings, lambda: LocalEngine(encoder, _Quiet()),
                          build_ann=False)
            runs["local"].append(len(scenes) / (time.monotonic() - started))
            for workers in (1, 2):
                ray.init(num_cpus=workers, include_dashboard=False, _node_ip_address="127.0.0.1",
                         log_to_driver=False)
                try:
                    started = time.monotonic()  # includes the workers' model loads: what a user waits for
                    index_archive(inputs, [], Path(tmp) / f"ray{workers}", settings,
                                  lambda w=workers: RayEngine(spec, _Quiet(), workers=w), build_ann=False)
                    runs[f"ray_{workers}"].append(len(scenes) / (time.monotonic() - started))
                finally:
                    ray.shutdown()
    rates = {k: statistics.median(v) for k, v in runs.items()}
    return {"scenes": len(scenes), "repeats": repeats,
            "scenes_per_s": {k: round(v, 3) for k, v in rates.items()},
            "scenes_per_s_runs": {k: [round(x, 3) for x in v] for k, v in runs.items()},
            "efficiency": {f"ray_{n}": round(rates[f"ray_{n}"] / (n * rates["local"]), 3) for n in (1, 2)},
            "efficiency_runs": {f"ray_{n}": [round(r / (n * loc), 3) for r, loc in
                                             zip(runs[f"ray_{n}"], runs["local"], strict=True)] for n in (1, 2)}}


class _Quiet:
    def progress(self, stage, done, total=None):
        pass

    def log(self, message, level="info"):
        pass

    def cancel_requested(self):
        return False


def synthetic_archive(root: Path, tiles: int, seed: int = 0, per_scene: int = 50_000) -> Archive:
    """``tiles`` 512-d unit vectors around 1024 random centres (noise 0.5 per dimension), in scenes of
    ``per_scene`` tiles with real footprints; generated one scene at a time (10M tiles never sit in
    RAM). An archive already complete at ``root`` (same size) is reused."""
    from pyproj import CRS

    archive = Archive(root)
    done = root / "synthetic.json"
    if done.is_file() and json.loads(done.read_text())["tiles"] == tiles:
        return archive
    if root.exists():
        shutil.rmtree(root)
    rng = np.random.default_rng(seed)
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
    done.write_text(json.dumps({"tiles": tiles}))
    return archive


def folder_bytes(root: Path, pattern: str = "*") -> int:
    return sum(p.stat().st_size for p in root.rglob(pattern) if p.is_file())


def query_sets(archive: Archive, repeats: int, queries: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """(repeats, queries, D) unit queries of two kinds. "random": uniform on the sphere, near no tile
    (like a CLIP text query: the modality gap), the hard case. "near_data": a stored tile plus
    Gaussian noise (sigma 0.05 per dimension), like an image query."""
    shape = (repeats, queries, DIM)
    random = rng.normal(size=shape).astype(np.float32)
    parts = list(archive.parts())
    near = np.empty(shape, np.float32)
    for r in range(repeats):
        for q in range(queries):
            part = parts[rng.integers(len(parts))]
            embeddings = part.embeddings()
            near[r, q] = embeddings[rng.integers(len(embeddings))] + 0.05 * rng.normal(size=DIM)
    out = {"random": random, "near_data": near}
    for v in out.values():
        v /= np.linalg.norm(v, axis=-1, keepdims=True)
    return out


def exact_truth(archive: Archive, queries: np.ndarray, k: int) -> list[set[tuple[str, int, int]]]:
    """The exact top ``k`` (scene, part, row) of every query (Q, D), in ONE pass over the parts: a
    (rows, Q) score block per part, merged into a running (Q, k) best."""
    nq = len(queries)
    best_s = np.full((nq, k), -np.inf, np.float32)
    best_id = np.zeros((nq, k, 3), np.int64)
    parts = list(archive.parts())
    for ordinal, part in enumerate(parts):
        scores = np.asarray(part.embeddings() @ queries.T, dtype=np.float32).T     # (Q, rows)
        take = min(k, scores.shape[1])
        top = np.argpartition(-scores, take - 1, axis=1)[:, :take]
        cand_s = np.concatenate([best_s, np.take_along_axis(scores, top, 1)], axis=1)
        ids = np.stack([np.full_like(top, ordinal), np.full_like(top, part.index), top], axis=-1)
        cand_id = np.concatenate([best_id, ids], axis=1)
        keep = np.argpartition(-cand_s, k - 1, axis=1)[:, :k]
        best_s = np.take_along_axis(cand_s, keep, 1)
        best_id = np.take_along_axis(cand_id, keep[..., None], 1)
    return [{(parts[o].scene.id, int(p), int(r)) for o, p, r in row} for row in best_id]


def search_size(size: int, work: Path, repeats: int, queries: int, exact_queries: int, k: int = 100) -> dict:
    """One archive of ``size`` tiles: build time, disk, exact and ANN latency, recall@k per query kind."""
    started = time.monotonic()
    archive = synthetic_archive(work / f"tiles_{size}", size)
    generate_s = time.monotonic() - started
    shutil.rmtree(archive.root / INDEX_DIR, ignore_errors=True)
    started = time.monotonic()
    info = maybe_update_index(archive, min_tiles=0)
    build_s = time.monotonic() - started
    started = time.perf_counter()
    load_index(archive)
    load_ms = 1000 * (time.perf_counter() - started)
    sets = query_sets(archive, repeats, queries, np.random.default_rng(size))
    flat = np.concatenate([v.reshape(-1, DIM) for v in sets.values()])
    started = time.perf_counter()
    truth = exact_truth(archive, flat, k)
    truth_ms = 1000 * (time.perf_counter() - started) / len(flat)
    exact_ms = []
    for q in flat[:exact_queries]:
        started = time.perf_counter()
        rank_archive(archive, q, k, exact=True)
        exact_ms.append(1000 * (time.perf_counter() - started))
    out: dict = {"tiles": size, "index": info, "generate_s": round(generate_s, 1), "index_build_s": round(build_s, 1),
                 "index_load_ms": round(load_ms, 1), "nprobe": DEFAULT_NPROBE, "refine": DEFAULT_REFINE,
                 "candidates": candidate_count(k, DEFAULT_REFINE),
                 "exact_ms": round(statistics.median(exact_ms), 1) if exact_ms else None,
                 "exact_ms_runs": [round(v, 1) for v in exact_ms],
                 "batched_truth_ms_per_query": round(truth_ms, 2)}
    offset = 0
    for kind, qs in sets.items():
        ms_reps, recall_reps = [], []
        for rep in qs:
            ms, recalls = [], []
            for j, q in enumerate(rep):
                started = time.perf_counter()
                hits, _ = rank_archive(archive, q, k)
                ms.append(1000 * (time.perf_counter() - started))
                got = {(h.scene.id, h.part, h.row) for h in hits}
                recalls.append(len(truth[offset + j] & got) / k)
            offset += len(rep)
            ms_reps.append(statistics.median(ms))
            recall_reps.append(float(np.mean(recalls)))
        out[kind] = {"ann_ms": round(statistics.median(ms_reps), 2), "ann_ms_runs": [round(v, 2) for v in ms_reps],
                     f"recall_at_{k}": round(statistics.median(recall_reps), 4),
                     f"recall_at_{k}_runs": [round(v, 4) for v in recall_reps]}
    total = folder_bytes(archive.root)
    out["disk_bytes_per_million_tiles"] = {
        "total": int(total / size * 1e6),
        "embeddings": int(folder_bytes(archive.root, "*.npy") / size * 1e6),
        "tables": int(folder_bytes(archive.root, "*.parquet") / size * 1e6),
        "index": int(index_size(archive) / size * 1e6)}
    return out


def search(sizes: list[int], work: Path, repeats: int, queries: int, exact_queries: int) -> list[dict]:
    return [search_size(size, work, repeats, queries, exact_queries) for size in sizes]


def parse_sizes(text: str) -> list[int]:
    """"100000,1M,1e7" -> [100000, 1000000, 10000000]."""
    sizes = []
    for item in (t.strip().upper() for t in text.split(",") if t.strip()):
        scale = {"K": 1_000, "M": 1_000_000}.get(item[-1], 1)
        try:
            value = int(float(item[:-1] if scale > 1 else item) * scale)
        except ValueError:
            raise SystemExit(f"--tiles: {item!r} is no tile count (e.g. 100000,1M,10M)") from None
        if value < 1000:
            raise SystemExit(f"--tiles: {value} is too few tiles (at least 1000)")
        sizes.append(value)
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=8)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--grid", default="256")
    parser.add_argument("--tiles", default="100000,1000000,10000000")
    parser.add_argument("--queries", type=int, default=20, help="queries of each kind per repetition")
    parser.add_argument("--exact-queries", type=int, default=3, help="queries timed by exact (index-less) search")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="keep the synthetic archives here and reuse them (default: a temporary folder)")
    parser.add_argument("--skip-scaling", action="store_true")
    args = parser.parse_args()
    if args.repeats < 1 or args.queries < 1:
        raise SystemExit("--repeats and --queries must be at least 1")
    sizes = parse_sizes(args.tiles)
    result: dict = {"bench": "archive", "repeats": args.repeats, "cpus": os.cpu_count()}
    if not args.skip_scaling:
        with tempfile.TemporaryDirectory() as tmp:
            scenes = make_scenes(Path(tmp), args.scenes, args.size)
            result["scaling"] = scaling(scenes, vit_b32(Path(tmp)), args.grid, args.repeats)
    if args.work_dir is not None:
        args.work_dir.mkdir(parents=True, exist_ok=True)
        result["search"] = search(sizes, args.work_dir, args.repeats, args.queries, args.exact_queries)
    else:
        with tempfile.TemporaryDirectory(dir=os.environ.get("RSVLM_BENCH_TMP")) as tmp:
            result["search"] = search(sizes, Path(tmp), args.repeats, args.queries, args.exact_queries)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
