"""Batched CoCa captioning, our decoder with a key/value cache vs open_clip's own generate(): tiles/s.
Prints ONE JSON line.

Model (--weights): open_clip's coca_ViT-B-32 with random weights (seed 0; its text_projection
initialised, which open_clip leaves as torch.empty), "taught" (tests/taught_coca.py: a tiny CoCa
trained to write one sentence, i.e. trained weights that end their captions), or a coca_ViT-B-32
checkpoint file. Tiles: crops of the NAIP sample at the model's size, normalised with OpenAI's
mean/std. Equal decode steps: min_len = max_len in every decoder, so every caption runs exactly
--max-len steps whatever the weights (--free-length lets captions end, for reference only).

greedy: ours vs open_clip generate(generation_type="top_k", top_k=1) (its transformers-5 logits
processors rebound); the tokens are compared.
beam:   ours (--beams) vs open_clip generate(generation_type="beam_search", num_beam_groups=1), which
needs transformers' BeamSearchScorer (gone from transformers 5): it runs in a subprocess on
transformers 4.57 installed with `pip install --target .bench_cache/tf457` (the scorer rebound
into open_clip, whose 3.3.0 import misses it). When that cannot be installed (offline), the
baseline is our uncached decoder (the model's whole forward at every step) and "beam_baseline"
says so. open_clip's beam search sums raw logits and ours log-probabilities: the same steps,
possibly different captions.

    python bench/caption.py [--tiles 8] [--max-len 20] [--beams 3] [--device cpu] [--no-install]
                            [--weights random|taught|FILE] [--free-length]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CACHE = REPO / ".bench_cache"
TF457 = CACHE / "tf457"
TF457_PACKAGES = ["transformers==4.57.*", "huggingface_hub>=0.34,<1.0", "tokenizers>=0.22,<=0.23.0", "requests",
                  "urllib3", "idna", "charset-normalizer", "certifi"]
SAMPLE = REPO.parent / "shared" / "samples" / "naip_2020_5m.tif"
if not SAMPLE.exists():
    SAMPLE = REPO.parent.parent / "shared" / "samples" / "naip_2020_5m.tif"
REPEAT = 2
MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)


def build_model(device: str, weights: str | None = None, config: str | None = None):
    """coca_ViT-B-32 (or the architecture of the open_clip JSON ``config``), random weights seeded 0
    (the same in every process), or the trained ``weights`` file loaded into it."""
    import open_clip
    import torch

    torch.manual_seed(0)
    if config:
        from tests.tinymodels import build_model as build_from_config

        model = build_from_config(Path(config), seed=0)
    else:
        model = open_clip.create_model("coca_ViT-B-32", pretrained=None)
    with torch.no_grad():
        torch.nn.init.normal_(model.text_decoder.text_projection, std=model.text_decoder.width ** -0.5)
    if weights:
        from rs_vlm_app.models.loading import read_state_dict

        model.load_state_dict(read_state_dict(Path(weights)), strict=True)
    model.eval().requires_grad_(False)
    return model.to(device)


def resolve_weights(choice: str) -> tuple[str | None, str | None, str]:
    """--weights: "random" | "taught" (tests/taught_coca.py's tiny CoCa, trained on one sentence) |
    a coca_ViT-B-32 checkpoint file. Returns (weights file, config file, description)."""
    if choice == "random":
        return None, None, "coca_ViT-B-32 (random weights)"
    if choice == "taught":
        from tests.taught_coca import teach_coca

        folder = CACHE / "taught_coca"
        folder.mkdir(parents=True, exist_ok=True)
        taught = teach_coca(folder)
        return str(taught["checkpoint"]), str(taught["config"]), "tiny CoCa taught one sentence (trained weights)"
    return choice, None, f"coca_ViT-B-32 ({Path(choice).name}, trained weights)"


def checksum(model) -> float:
    return float(sum(p.double().sum().item() for p in model.parameters()))


def make_tiles(n: int, size: int = 224) -> np.ndarray:
    """(n, 3, size, size) float32 normalised tiles cut from the NAIP sample."""
    import rasterio

    with rasterio.open(SAMPLE) as src:
        rgb = src.read([1, 2, 3]).astype(np.float32) / 255.0
    tiles = []
    for i in range(n):
        r, c = divmod(i, rgb.shape[2] // size)
        r0, c0 = (r * size) % (rgb.shape[1] - size), c * size
        tiles.append(rgb[:, r0:r0 + size, c0:c0 + size])
    x = np.stack(tiles)
    return ((x - np.array(MEAN)[:, None, None]) / np.array(STD)[:, None, None]).astype(np.float32)


def open_clip_generate(model, images, **kwargs):
    import torch

    with torch.no_grad():
        return model.generate(images, **kwargs)


def tokens_of(row: list[int]) -> list[int]:
    out = []
    for token in row[1:]:
        if token in (49407, 0):
            break
        out.append(token)
    return out


def timed(fn, repeat: int = 1) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def rebind_greedy_processors() -> None:
    """open_clip 3.3.0 on transformers 5: its logits processors exist, its flag is off; turn it on."""
    import open_clip.coca_model as coca_model
    from transformers import TopKLogitsWarper

    coca_model._has_transformers = True
    coca_model.GENERATION_TYPES["top_k"] = TopKLogitsWarper


def ensure_tf457(install: bool) -> str | None:
    """A folder with transformers 4.57 for the beam baseline, or None (with why, on stderr)."""
    probe = [sys.executable, "-c", "import transformers, sys; sys.exit(transformers.__version__[:4] != '4.57')"]
    env = {**os.environ, "PYTHONPATH": str(TF457)}
    if TF457.is_dir() and subprocess.run(probe, env=env, capture_output=True).returncode == 0:
        return str(TF457)
    if not install:
        return None
    done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--target", str(TF457), "--no-deps",
                           "--upgrade", *TF457_PACKAGES], capture_output=True, text=True)
    if done.returncode != 0 or subprocess.run(probe, env=env, capture_output=True).returncode != 0:
        print(f"bench: transformers 4.57 not available ({done.stderr.strip()[-200:]}); beam baseline = "
              "our uncached decoder", file=sys.stderr)
        return None
    return str(TF457)


BEAM_CHILD = r"""
import json, sys, time
import numpy as np, torch
sys.path.insert(1, {repo!r})
import transformers
from transformers.generation.beam_search import BeamSearchScorer
import open_clip.coca_model as coca_model
coca_model.BeamSearchScorer = BeamSearchScorer
coca_model._has_transformers = True
from bench.caption import build_model, checksum
model = build_model({device!r}, {weights!r}, {config!r})
images = torch.from_numpy(np.load({tiles!r})).to({device!r})
kwargs = dict(generation_type="beam_search", num_beams={beams}, num_beam_groups=1, seq_len={seq_len},
              min_seq_len={min_seq_len})
seconds = float("inf")
with torch.no_grad():
    for _ in range({repeat}):
        start = time.perf_counter()
        out = model.generate(images, **kwargs)
        seconds = min(seconds, time.perf_counter() - start)
print(json.dumps({{"seconds": seconds, "checksum": checksum(model), "transformers": transformers.__version__,
                  "lengths": [int((row != 0).sum()) for row in out]}}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=int, default=8)
    parser.add_argument("--max-len", type=int, default=20)
    parser.add_argument("--beams", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-install", action="store_true", help="do not pip-install transformers 4.57")
    parser.add_argument("--weights", default="random",
                        help="random | taught (a tiny CoCa trained on one sentence) | a coca_ViT-B-32 checkpoint")
    parser.add_argument("--free-length", action="store_true",
                        help="let captions end at end-of-text (then decoders may run different step counts)")
    args = parser.parse_args()

    import torch

    from rs_vlm_app.models.coca_decoder import CocaDecoder, DecodingOptions

    CACHE.mkdir(exist_ok=True)
    weights, config, described = resolve_weights(args.weights)
    model = build_model(args.device, weights, config)
    size = model.visual.image_size
    tiles_np = make_tiles(args.tiles, int(size[0] if isinstance(size, tuple | list) else size))
    tiles_file = CACHE / "caption_bench_tiles.npy"
    np.save(tiles_file, tiles_np)
    images = torch.from_numpy(tiles_np).to(args.device)
    # Equal decode steps: min_len = max_len suppresses end-of-text in every decoder, so each caption
    # runs exactly max_len steps whatever the weights (trained weights end captions early, and at
    # different steps in different decoders, which would time different amounts of work).
    min_len = 2 if args.free_length else args.max_len
    decoder = CocaDecoder(model)
    uncached = CocaDecoder(model, use_cache=False)
    greedy = DecodingOptions("greedy", max_len=args.max_len, min_len=min_len)
    beam = DecodingOptions("beam", beams=args.beams, max_len=args.max_len, min_len=min_len)
    rebind_greedy_processors()
    oc_greedy = dict(generation_type="top_k", top_k=1, seq_len=args.max_len + 2, min_seq_len=min_len + 1)

    # each timing is the best of REPEAT runs: the first run of a shape pays for allocations
    ours_greedy_s, ours_greedy = timed(lambda: decoder.generate(images, greedy), REPEAT)
    oc_greedy_s, oc_out = timed(lambda: open_clip_generate(model, images, **oc_greedy), REPEAT)
    same = [list(c.tokens) for c in ours_greedy] == [tokens_of(r) for r in oc_out.tolist()]
    ours_beam_s, ours_beam = timed(lambda: decoder.generate(images, beam), REPEAT)

    baseline = "open_clip generate + transformers 4.57 BeamSearchScorer (subprocess)"
    beam_base_s, extra = None, {}
    folder = ensure_tf457(not args.no_install)
    if folder is not None:
        code = BEAM_CHILD.format(repo=str(REPO), device=args.device, tiles=str(tiles_file), beams=args.beams,
                                 weights=weights, config=config,
                                 seq_len=args.max_len + 2, min_seq_len=min_len + 1, repeat=REPEAT)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([folder, str(REPO)])}
        child = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
        if child.returncode == 0:
            report = json.loads(child.stdout.strip().splitlines()[-1])
            if abs(report["checksum"] - checksum(model)) > 1e-6 * abs(checksum(model)):
                raise SystemExit("bench: the subprocess built different weights")
            beam_base_s = report["seconds"]
            extra = {"beam_baseline_transformers": report["transformers"]}
        else:
            print(f"bench: beam baseline failed: {child.stderr.strip()[-400:]}", file=sys.stderr)
    if beam_base_s is None:
        baseline = "our uncached decoder (the model's full forward per step)"
        beam_base_s, _ = timed(lambda: uncached.generate(images, beam), REPEAT)

    n = args.tiles
    print(json.dumps({
        "benchmark": "caption", "model": described, "device": args.device,
        "equal_decode_steps": not args.free_length,
        "torch_threads": torch.get_num_threads(), "tiles": n, "max_len": args.max_len, "beams": args.beams,
        "greedy": {"ours_tiles_per_s": round(n / ours_greedy_s, 3), "open_clip_tiles_per_s": round(n / oc_greedy_s, 3),
                   "ratio": round(oc_greedy_s / ours_greedy_s, 2), "same_tokens": same,
                   "caption_tokens": sum(len(c.tokens) for c in ours_greedy)},
        "beam": {"ours_tiles_per_s": round(n / ours_beam_s, 3), "baseline_tiles_per_s": round(n / beam_base_s, 3),
                 "ratio": round(beam_base_s / ours_beam_s, 2),
                 "caption_tokens": sum(len(c.tokens) for c in ours_beam)},
        "beam_baseline": baseline, **extra,
    }))


if __name__ == "__main__":
    main()
