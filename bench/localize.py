"""Benchmark semantic localization end to end; prints one JSON line.

Scene: a mosaic of the NAIP sample (at least 8k x 8k pixels, built once into bench/.cache/). Model:
a ViT-B-32 with random weights (same compute as a released one). Grid: the published SeLo grid.

Measured in the same run:
- end_to_end_tiles_per_s: localize() from an empty embedding cache (read, cut, preprocess, encode,
  heat map, outputs), tiles encoded / wall time;
- model_tiles_per_s: the encoder alone on the same tiles already in memory (the pipeline's ceiling);
  pipeline_efficiency = end_to_end / model (aim >= 0.9);
- reference_tiles_per_s: the published loop on a subset (crop, resize to 256, write a JPEG, read it
  back with PIL, torchvision transform, one tile per forward pass); speedup_vs_reference;
- second_query_s: a new query on the cached scene (text encoding + matrix product + writing the
  heat map GeoTIFF with overviews, the hot spots and the tile layer);
- second_query_answer_s: the answer alone (text encoding + matrix product + ranking), no files;
- peak_rss_mib of this process.

usage: python bench/localize.py [--size 8192] [--reference-tiles 48] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from shared_data import NAIP_SAMPLE  # bench/ is on sys.path when run as a script

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SAMPLE = NAIP_SAMPLE
CACHE = REPO / "bench" / ".cache"


def build_mosaic(size: int) -> Path:
    """A size x size GeoTIFF tiled from the NAIP sample's RGB bands (mirrored to avoid seams)."""
    import rasterio
    from rasterio.windows import Window

    out = CACHE / f"naip_mosaic_{size}.tif"
    if out.exists():
        return out
    CACHE.mkdir(parents=True, exist_ok=True)
    with rasterio.open(SAMPLE) as src:
        base = src.read([1, 2, 3])
        profile = src.profile
    h, w = base.shape[1:]
    profile.update(width=size, height=size, count=3, tiled=True, blockxsize=512, blockysize=512,
                   compress="deflate", nodata=None, photometric="RGB")
    tmp = out.with_suffix(".tmp.tif")
    with rasterio.open(tmp, "w", **profile) as dst:
        for row in range(0, size, 512):
            rows = min(512, size - row)
            r_idx = np.arange(row, row + rows)
            r_src = np.where((r_idx // h) % 2 == 0, r_idx % h, h - 1 - r_idx % h)
            strip = base[:, r_src, :]
            c_idx = np.arange(size)
            c_src = np.where((c_idx // w) % 2 == 0, c_idx % w, w - 1 - c_idx % w)
            dst.write(strip[:, :, c_src], window=Window(0, row, size, rows))
    tmp.rename(out)
    return out


def vit_b_32_encoder(workdir: Path, batch_size: int):
    import open_clip

    from rs_vlm_app.models.encoder import ClipEncoder
    from rs_vlm_app.models.factory import load_model
    from rs_vlm_app.models.spec import ModelSpec
    from tests.tinymodels import save_checkpoint

    checkpoint = workdir / "vit_b_32_random.safetensors"
    model = open_clip.create_model("ViT-B-32", pretrained=None)
    save_checkpoint(model, checkpoint, "safetensors")
    loaded = load_model(ModelSpec(arch="ViT-B-32", checkpoint=checkpoint), device="cpu", precision="fp32")
    return ClipEncoder(loaded, device="cpu", precision="fp32", batch_size=batch_size), model


def reference_loop(scene: Path, windows: np.ndarray, model, workdir: Path) -> float:
    """tiles/s of the published per-tile loop (JPEG files, one tile per forward pass)."""
    import cv2
    import rasterio
    import torch
    from PIL import Image
    from torchvision import transforms

    preprocess = transforms.Compose([
        transforms.Resize(224, interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.CenterCrop(224),
        transforms.ToTensor(),
        transforms.Normalize((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
    ])
    started = time.perf_counter()
    with rasterio.open(scene) as src:
        image = np.moveaxis(src.read([1, 2, 3]), 0, -1)[..., ::-1]  # the reference holds the whole image (BGR)
    with torch.inference_mode():
        for r0, r1, c0, c1, _ in windows:
            tile = cv2.resize(image[r0:r1, c0:c1], (256, 256), interpolation=cv2.INTER_CUBIC)
            path = workdir / f"{r0}_{r1}_{c0}_{c1}.jpg"
            cv2.imwrite(str(path), tile)
            x = preprocess(Image.open(path).convert("RGB")).unsqueeze(0)
            feat = model.encode_image(x)
            feat /= feat.norm(dim=-1, keepdim=True)
    return len(windows) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=8192)
    parser.add_argument("--reference-tiles", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    args = parser.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from rs_vlm_app.geo.grid import SELO_GRID, build_windows
    from rs_vlm_app.geo.raster import open_raster
    from rs_vlm_app.models.preprocess import fast_tile_transform
    from rs_vlm_app.tasks.embedding_cache import EmbeddingCache
    from rs_vlm_app.tasks.localize import localize
    from rs_vlm_app.tasks.scene_encoding import encode_scene, tile_preprocessing

    scene = build_mosaic(args.size)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        encoder, model = vit_b_32_encoder(work, args.batch_size)
        cache = EmbeddingCache(work / "embeddings")

        started = time.perf_counter()
        first = localize(scene, ["an airport with parked airplanes"], work / "out", encoder, cache=cache)
        end_to_end_s = time.perf_counter() - started
        tiles = first.encoding.tiles_encoded

        started = time.perf_counter()
        localize(scene, ["a river crossing farmland"], work / "out", encoder, cache=cache)
        second_query_s = time.perf_counter() - started

        # the answer itself (which tiles match), without writing any file: one text encoding and a
        # matrix product over the cached tile embeddings
        with open_raster(scene) as source:
            cached, stats = encode_scene(source, SELO_GRID, encoder, tile_preprocessing(encoder, None), cache=cache)
        assert stats.cache_hit
        started = time.perf_counter()
        best_tiles = np.argsort(-cached.scores(encoder.encode_texts(["a parking lot full of cars"]))[:, 0])[:10]
        second_query_answer_s = time.perf_counter() - started
        assert len(best_tiles) == 10

        with open_raster(scene) as source:
            windows = build_windows(SELO_GRID, source.height, source.width)
            transform = fast_tile_transform(encoder.image_size)
            batch = np.stack([transform(source.read_rgb(*w[:4])[0]) for w in windows[: args.batch_size * 8]])
        started = time.perf_counter()
        for i in range(0, len(batch), args.batch_size):
            encoder.encode_images(batch[i:i + args.batch_size])
        model_tiles_per_s = len(batch) / (time.perf_counter() - started)

        rng = np.random.default_rng(0)
        subset = windows[rng.choice(len(windows), size=min(args.reference_tiles, len(windows)), replace=False)]
        (work / "ref").mkdir()
        reference_tiles_per_s = reference_loop(scene, subset, model, work / "ref")

    end_to_end = tiles / end_to_end_s
    print(json.dumps({
        "benchmark": "localize",
        "scene": f"{args.size}x{args.size} NAIP mosaic",
        "model": "ViT-B-32 random weights, fp32, cpu",
        "grid": "selo",
        "torch_threads": torch.get_num_threads(),
        "tiles": tiles,
        "end_to_end_s": round(end_to_end_s, 2),
        "end_to_end_tiles_per_s": round(end_to_end, 2),
        "model_tiles_per_s": round(model_tiles_per_s, 2),
        "pipeline_efficiency": round(end_to_end / model_tiles_per_s, 3),
        "reference_tiles_per_s": round(reference_tiles_per_s, 2),
        "speedup_vs_reference": round(end_to_end / reference_tiles_per_s, 2),
        "second_query_s": round(second_query_s, 3),
        "second_query_answer_s": round(second_query_answer_s, 4),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }))


if __name__ == "__main__":
    main()
