"""Benchmark: training throughput of rs-vlm's loop against open_clip's own training script.

Both train the same open_clip architecture from random weights on the same synthetic caption CSV,
with the same batch size, precision, data-loading workers and torch threads, each in its own
process (open_clip_train.main, shipped in the open_clip_torch wheel, is called as a library with its
command-line arguments). A global optimizer-step hook time-stamps every optimizer step in both, so
the two are measured the same way: samples/s over the steps after a warm-up, data loading, logging
and everything else included. Each side runs ``--repeats`` times; the best run counts (the machine
may be shared). Prints ONE JSON line with both numbers and their ratio (ours / open_clip).

    python bench/train.py                       # tiny CLIP at 64 px on the CPU
    python bench/train.py --model ViT-B-32 --device cuda --precision amp --batch-size 256 --steps 60

Needs open_clip_train's own dependencies: pip install pandas webdataset braceexpand (extra "bench").
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 1, "width": 64, "patch_size": 16, "head_width": 32},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1},
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="tiny", help="open_clip architecture, or 'tiny' (a 1-layer CLIP at 64 px)")
    parser.add_argument("--steps", type=int, default=40, help="optimizer steps per run")
    parser.add_argument("--warmup-steps", type=int, default=5, help="first steps left out of the measurement")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2, help="data-loading processes")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per process (default: torch's)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--precision", choices=("fp32", "amp", "amp_bf16"), default="fp32")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--worker", choices=("rsvlm", "open_clip"), help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# --- the measured processes ------------------------------------------------------------------------

def worker(kind: str, spec: dict) -> None:
    """Train as ``kind`` does and print the optimizer-step time stamps as the last stdout line."""
    import torch
    from torch.optim.optimizer import register_optimizer_step_post_hook

    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    stamps: list[float] = []

    def stamp(_optimizer, _args, _kwargs) -> None:
        if spec["device"] == "cuda":
            torch.cuda.synchronize()
        stamps.append(time.perf_counter())

    register_optimizer_step_post_hook(stamp)
    if kind == "rsvlm":
        from rs_vlm_app.training import TrainConfig, train

        train(TrainConfig(
            task="clip", data=spec["csv"], output_dir=spec["out"], model=spec["model"],
            model_config=spec.get("model_config"), epochs=1, batch_size=spec["batch_size"], lr=1e-4, warmup=10,
            workers=spec["workers"], device=spec["device"], precision=spec["precision"], log_every=10,
            save_every=0, tensorboard=False,
        ))
    else:
        from open_clip_train.main import main

        main([
            "--train-data", spec["csv"], "--dataset-type", "csv", "--csv-separator", ",",
            "--csv-img-key", "filepath", "--csv-caption-key", "caption",
            "--model", spec.get("local_dir") or spec["model"], "--batch-size", str(spec["batch_size"]),
            "--epochs", "1", "--lr", "1e-4", "--warmup", "10", "--workers", str(spec["workers"]),
            "--device", spec["device"], "--precision", spec["precision"], "--save-frequency", "0",
            "--log-every-n-steps", "10", "--logs", spec["out"], "--name", "bench",
        ])
    print(json.dumps({"stamps": stamps}))


def samples_per_second(stamps: list[float], warmup: int, batch_size: int) -> float:
    measured = stamps[warmup:]
    if len(measured) < 2:
        raise RuntimeError(f"only {len(stamps)} optimizer steps were recorded")
    return (len(measured) - 1) * batch_size / (measured[-1] - measured[0])


def run_worker(kind: str, spec: dict) -> list[float]:
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1")
    if spec["threads"]:
        env["OMP_NUM_THREADS"] = str(spec["threads"])
    done = subprocess.run([sys.executable, __file__, "--worker", kind, "--spec", json.dumps(spec)],
                          env=env, capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(f"{kind} run failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])["stamps"]


# --- data and models -------------------------------------------------------------------------------

def write_data(folder: Path, n: int, size: int) -> Path:
    """``n`` synthetic shape images with captions, as a CSV of absolute paths (open_clip reads them as is)."""
    import numpy as np
    from PIL import Image

    sys.path.insert(0, str(REPO))
    from tests.training.synthetic import samples

    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    lines = ["filepath,caption"]
    for i, (_label, caption, pixels) in enumerate(samples(n, seed=0, size=size)):
        path = images / f"{i:06d}.png"
        Image.fromarray(np.ascontiguousarray(pixels)).save(path)
        lines.append(f"{path},{caption}")
    csv_path = folder / "train.csv"
    csv_path.write_text("\n".join(lines) + "\n")
    return csv_path


def model_spec(model: str, folder: Path) -> tuple[dict, int]:
    """How each side names the architecture, and its image size."""
    if model != "tiny":
        import open_clip

        config = open_clip.get_model_config(model)
        if config is None:
            raise SystemExit(f"unknown open_clip architecture {model!r}")
        size = config["vision_cfg"]["image_size"]
        return {"model": model}, size if isinstance(size, int) else size[0]
    local = folder / "tiny-model"
    local.mkdir(parents=True, exist_ok=True)
    (local / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_CLIP, "preprocess_cfg": {}}))
    plain = folder / "bench-tiny-clip.json"
    plain.write_text(json.dumps(TINY_CLIP))
    return {"model": "bench-tiny-clip", "model_config": str(plain), "local_dir": f"local-dir:{local}"}, 64


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        worker(args.worker, json.loads(args.spec))
        return 0
    if args.steps <= args.warmup_steps + 1:
        raise SystemExit("--steps must exceed --warmup-steps by at least 2")
    with tempfile.TemporaryDirectory(prefix="rsvlm-bench-train-") as tmp:
        folder = Path(tmp)
        names, size = model_spec(args.model, folder)
        csv_path = write_data(folder / "data", args.steps * args.batch_size, size)
        spec = {"csv": str(csv_path), "batch_size": args.batch_size, "workers": args.workers, "device": args.device,
                "precision": args.precision, "threads": args.threads, **names}
        best = {"rsvlm": 0.0, "open_clip": 0.0}
        for repeat in range(args.repeats):
            for kind in ("open_clip", "rsvlm"):
                stamps = run_worker(kind, {**spec, "out": str(folder / f"{kind}-{repeat}")})
                if len(stamps) != args.steps:
                    raise RuntimeError(f"{kind} made {len(stamps)} optimizer steps, expected {args.steps}")
                best[kind] = max(best[kind], samples_per_second(stamps, args.warmup_steps, args.batch_size))
    import torch

    print(json.dumps({
        "benchmark": "train", "what": "training samples/s, rs-vlm loop vs open_clip_train.main",
        "device": torch.cuda.get_device_name() if args.device == "cuda" else f"cpu ({os.cpu_count()} cores)",
        "model": args.model, "batch_size": args.batch_size, "steps": args.steps, "warmup_steps": args.warmup_steps,
        "workers": args.workers, "threads": args.threads, "precision": args.precision, "repeats": args.repeats,
        "rsvlm_samples_per_s": round(best["rsvlm"], 2), "open_clip_samples_per_s": round(best["open_clip"], 2),
        "ratio": round(best["rsvlm"] / best["open_clip"], 3),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
