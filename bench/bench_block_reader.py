"""Block reader vs per-window reads on a SeLo grid: speed and memory. Prints ONE JSON line.

Scene: the NAIP sample tiled into a SIZE x SIZE, 3-band uint8, DEFLATE, 512-tiled GeoTIFF (built
in a temporary folder). Every reader cuts every SeLo window (256/512/768) and resizes it to 224 x 224
(the model input). Baseline: one GDAL windowed read per window (RasterSource.read_rgb, GDAL's default
block cache; while the decoded scene fits in that cache, 5% of RAM, each block is decoded once).
Candidates: BlockReader in "scale" order (rows read once per scale) and "rows" order (once in all).
Memory: peak RSS growth of the block reader vs the bytes of the whole image (what reading the scene
into memory, as the reference SeLo code does, costs); the ratio falls as the scene grows.

    python bench/bench_block_reader.py [--size 6000] [--workers 1]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import rasterio

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from shared_data import NAIP_SAMPLE  # noqa: E402  (bench/ is on sys.path when run as a script)

from rs_vlm_app.geo.blocks import BlockReader  # noqa: E402
from rs_vlm_app.geo.grid import SELO_GRID, build_windows  # noqa: E402
from rs_vlm_app.geo.raster import open_raster  # noqa: E402

SAMPLE = NAIP_SAMPLE


def build_scene(path: Path, size: int, sample: Path) -> None:
    with rasterio.open(sample) as src:
        tile = src.read([1, 2, 3])
        crs, transform = src.crs, src.transform
    th, tw = tile.shape[1:]
    profile = {"driver": "GTiff", "width": size, "height": size, "count": 3, "dtype": "uint8", "crs": crs,
               "transform": transform, "tiled": True, "blockxsize": 512, "blockysize": 512,
               "compress": "deflate", "predictor": 2}
    with rasterio.open(path, "w", **profile) as dst:
        for row in range(0, size, 512):
            rows = min(512, size - row)
            r = (np.arange(row, row + rows) % th)[:, None]
            c = (np.arange(size) % tw)[None, :]
            dst.write(tile[:, r, c], window=((row, row + rows), (0, size)))


def to_model(tile: np.ndarray) -> np.ndarray:
    return cv2.resize(tile, (224, 224), interpolation=cv2.INTER_CUBIC)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=6000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--sample", type=Path, default=SAMPLE)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "scene.tif"
        build_scene(path, args.size, args.sample)
        with open_raster(path) as src:
            windows = build_windows(SELO_GRID, src.height, src.width)
            results = {}
            for order in ("scale", "rows"):
                rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                start = time.perf_counter()
                block_sum = 0
                reader = BlockReader(src, windows, batch_size=64, tile_transform=to_model,
                                     workers=args.workers, order=order)
                for batch in reader:
                    block_sum += int(batch.tiles.sum(dtype=np.int64))
                growth_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
                results[order] = (time.perf_counter() - start, growth_mib)

            start = time.perf_counter()
            naive_sum = 0
            for row0, row1, col0, col1, _scale in windows.tolist():
                rgb, _valid = src.read_rgb(row0, row1, col0, col1)
                naive_sum += int(to_model(rgb).sum(dtype=np.int64))
            naive_s = time.perf_counter() - start
    assert naive_sum == block_sum, "the two readers disagree"
    whole_mib = args.size * args.size * 3 / 2**20
    print(json.dumps({
        "bench": "block_reader", "scene": f"{args.size}x{args.size}x3 uint8 deflate", "tiles": len(windows),
        "workers": args.workers, "baseline_per_window_s": round(naive_s, 3),
        "block_reader_scale_order_s": round(results["scale"][0], 3),
        "block_reader_rows_order_s": round(results["rows"][0], 3),
        "speedup_scale_order": round(naive_s / results["scale"][0], 2),
        "speedup_rows_order": round(naive_s / results["rows"][0], 2),
        "block_reader_rss_growth_mib": round(max(results["scale"][1], results["rows"][1]), 1),
        "whole_image_mib": round(whole_mib, 1),
        "memory_ratio": round(max(results["scale"][1], results["rows"][1]) / whole_mib, 3),
    }))

if __name__ == "__main__":
    main()
