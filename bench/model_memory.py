"""Benchmark a model job's memory; prints one JSON line.

A ViT-B-32 with random weights is saved as a local checkpoint (safetensors), then a fresh process
loads it through rs-vlm's loader and encodes one batch of tiles on the CPU. Figures (MiB):
- baseline_mib: peak RSS of a process that only imports torch, open_clip and rs-vlm's model code;
- weights_mib: the parameters' bytes; activations_mib: the RSS a forward pass of one batch adds
  (measured on a second batch, once the first has touched every memory-mapped weight);
- job_peak_mib: peak RSS of the job; overhead = (job_peak - baseline) / (weights + activations),
  aim <= 1.3 (a second full copy of the weights while loading would put it near 2).

usage: python bench/model_memory.py [--batch-size 32] [--arch ViT-B-32] [--format safetensors|pt]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _status_mib(field: str) -> float:
    """VmRSS / VmHWM of this process from /proc (ru_maxrss would carry the parent's size over the
    fork that started this process)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    return 0.0


def child(mode: str, arch: str, checkpoint: str, batch_size: int) -> None:
    from rs_vlm_app.runtime import configure_process

    configure_process()
    import numpy as np
    import open_clip  # noqa: F401  (the baseline pays the same imports)

    from rs_vlm_app.models.encoder import ClipEncoder
    from rs_vlm_app.models.factory import load_model
    from rs_vlm_app.models.spec import ModelSpec

    out: dict = {}
    if mode == "job":
        loaded = load_model(ModelSpec(arch=arch, checkpoint=Path(checkpoint)), device="cpu", precision="fp32")
        encoder = ClipEncoder(loaded, device="cpu", precision="fp32", batch_size=batch_size)
        out["weights_mib"] = sum(p.numel() * p.element_size() for p in loaded.model.parameters()) / 2**20
        tiles = np.random.default_rng(0).integers(0, 256, (batch_size, encoder.image_size, encoder.image_size, 3),
                                                  dtype=np.uint8)
        out["load_peak_mib"] = _status_mib("VmHWM")
        encoder.encode_images(tiles)  # the first pass touches every (memory-mapped) weight
        out["first_batch_peak_mib"] = _status_mib("VmHWM")
        with open("/proc/self/clear_refs", "w") as clear:  # reset VmHWM to the current RSS (Linux)
            clear.write("5")
        before = _status_mib("VmRSS")
        encoder.encode_images(tiles)
        out["activations_mib"] = _status_mib("VmHWM") - before
        out["peak_mib"] = max(out["first_batch_peak_mib"], _status_mib("VmHWM"))
        print(json.dumps(out))
        return
    out["peak_mib"] = _status_mib("VmHWM")
    print(json.dumps(out))


def run_child(*args: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--arch", default="ViT-B-32")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--format", default="safetensors", choices=("safetensors", "pt"))
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, arch, checkpoint, batch = args.child
        child(mode, arch, checkpoint, int(batch))
        return
    import open_clip

    from tests.tinymodels import save_checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = Path(tmp) / f"random.{'safetensors' if args.format == 'safetensors' else 'pt'}"
        save_checkpoint(open_clip.create_model(args.arch, pretrained=None), checkpoint,
                        "safetensors" if args.format == "safetensors" else "state_dict")
        baseline = run_child("baseline", args.arch, str(checkpoint), str(args.batch_size))
        job = run_child("job", args.arch, str(checkpoint), str(args.batch_size))
    needed = job["weights_mib"] + job["activations_mib"]
    print(json.dumps({
        "benchmark": "model_memory", "arch": args.arch, "format": args.format, "batch_size": args.batch_size,
        "baseline_mib": round(baseline["peak_mib"], 1), "weights_mib": round(job["weights_mib"], 1),
        "activations_mib": round(job["activations_mib"], 1), "load_peak_mib": round(job["load_peak_mib"], 1),
        "job_peak_mib": round(job["peak_mib"], 1),
        "overhead": round((job["peak_mib"] - baseline["peak_mib"]) / needed, 2),
    }))


if __name__ == "__main__":
    main()
