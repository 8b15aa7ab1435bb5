"""Benchmark the GPU path in one command; prints one JSON line.

Needs a CUDA device; models are built from open_clip's configs with random weights (same compute as
released ones; nothing is downloaded) and loaded through rs-vlm's own loader from a local
safetensors file. Measured:
- ViT-B-32 and ViT-L-14: model_tiles_per_s (synthetic uint8 tiles already in memory, through
  ClipEncoder: pinned copy, normalisation on the device, autocast) and end_to_end_tiles_per_s
  (localize() on an 8192 px scene from an empty embedding cache: read, cut, resize on the feeding
  pool, encode, heat map, outputs), their ratio (aim >= 0.9), the batch size used;
- CoCa (coca_ViT-B-32): captions_per_s, greedy decoding of max_len tokens;
- peak device memory per model (torch.cuda.max_memory_allocated).
`--compile` runs the encoders through torch.compile.

usage: python bench/gpu.py [--size 8192] [--seconds 10] [--precision auto] [--compile]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))


def random_checkpoint(arch: str, folder: Path) -> Path:
    import open_clip
    from safetensors.torch import save_file

    model = open_clip.create_model(arch, pretrained=None)
    path = folder / f"{arch}.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    del model
    return path


def timed(function, seconds: float) -> tuple[int, float]:
    """Call ``function`` (returns items done) repeatedly for about ``seconds``; (items, elapsed)."""
    import torch

    function()  # warm-up (kernels, autotuning, compile)
    torch.cuda.synchronize()
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        done += function()
    torch.cuda.synchronize()
    return done, time.perf_counter() - started


def clip_figures(arch: str, scene: Path, work: Path, args) -> dict:
    import torch

    from rs_vlm_app.geo.grid import GridSpec
    from rs_vlm_app.models.encoder import ClipEncoder
    from rs_vlm_app.models.factory import load_model
    from rs_vlm_app.models.spec import ModelSpec
    from rs_vlm_app.tasks.embedding_cache import EmbeddingCache
    from rs_vlm_app.tasks.localize import LocalizeOptions, localize

    torch.cuda.reset_peak_memory_stats()
    loaded = load_model(ModelSpec(arch=arch, checkpoint=random_checkpoint(arch, work)), device="cuda",
                        precision=args.precision)
    encoder = ClipEncoder(loaded, device="cuda", precision=args.precision)
    if args.compile:
        loaded.model.encode_image = torch.compile(loaded.model.encode_image)
    size = encoder.image_size
    tiles = np.random.default_rng(0).integers(0, 256, (encoder.batch_size * 4, size, size, 3), dtype=np.uint8)
    done, elapsed = timed(lambda: len(encoder.encode_images(tiles)), args.seconds)
    model_rate = done / elapsed

    grid = GridSpec("regular", (size,), 0.5)  # tiles at the model's size: resizing is not what is measured
    options = LocalizeOptions(grid=grid)
    started = time.perf_counter()
    result = localize(scene, ["an airport with parked airplanes"], work / f"out-{arch}", encoder, options,
                      cache=EmbeddingCache(work / f"embeddings-{arch}"))
    torch.cuda.synchronize()
    whole_s = time.perf_counter() - started
    encoded = result.encoding.tiles_encoded
    end_to_end = encoded / result.encoding.seconds
    return {
        "model_tiles_per_s": round(model_rate, 1),
        "end_to_end_tiles_per_s": round(end_to_end, 1),
        "pipeline_efficiency": round(end_to_end / model_rate, 3),
        "localize_s": round(whole_s, 2),
        "tiles": encoded,
        "batch_size": encoder.batch_size,
        "precision": encoder.precision,
        "peak_device_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1),
    }


def coca_figures(work: Path, args) -> dict:
    import torch

    from rs_vlm_app.models.captioner import CocaCaptioner
    from rs_vlm_app.models.coca_decoder import DecodingOptions
    from rs_vlm_app.models.factory import load_model
    from rs_vlm_app.models.spec import ModelSpec

    arch = "coca_ViT-B-32"
    torch.cuda.reset_peak_memory_stats()
    loaded = load_model(ModelSpec(arch=arch, checkpoint=random_checkpoint(arch, work)), device="cuda",
                        precision=args.precision)
    captioner = CocaCaptioner(loaded, device="cuda", precision=args.precision)
    size = captioner.image_size
    tiles = np.random.default_rng(1).integers(0, 256, (captioner.batch_size, size, size, 3), dtype=np.uint8)
    # min_len = max_len: every caption decodes exactly max_len steps, so runs compare step for step
    options = DecodingOptions(method="greedy", max_len=args.caption_tokens, min_len=args.caption_tokens)
    done, elapsed = timed(lambda: len(captioner.caption_tiles(tiles, options)), args.seconds)
    return {
        "captions_per_s": round(done / elapsed, 1),
        "decode_steps": args.caption_tokens,
        "batch_size": captioner.batch_size,
        "peak_device_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=8192, help="side of the end-to-end scene in pixels")
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of each model-only measurement")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"))
    parser.add_argument("--caption-tokens", type=int, default=20)
    parser.add_argument("--compile", action="store_true", help="torch.compile the image encoders")
    parser.add_argument("--archs", default="ViT-B-32,ViT-L-14")
    args = parser.parse_args()

    from rs_vlm_app.runtime import configure_process

    configure_process()
    import torch

    if not torch.cuda.is_available():
        print(json.dumps({"benchmark": "gpu", "error": "no CUDA device: this benchmark needs one"}))
        return 2
    from localize import build_mosaic  # bench/localize.py: the NAIP mosaic, built once into bench/.cache

    scene = build_mosaic(args.size)
    out = {"benchmark": "gpu", "device": torch.cuda.get_device_name(0), "torch": torch.__version__,
           "scene": f"{args.size}x{args.size} NAIP mosaic", "compile": args.compile}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for arch in args.archs.split(","):
            out[arch] = clip_figures(arch, scene, work, args)
        out["coca_ViT-B-32"] = coca_figures(work, args)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
