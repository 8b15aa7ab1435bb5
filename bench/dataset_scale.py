"""Memory of the MpGI builder as the dataset grows: peak RSS at N and 10 x N images; prints ONE JSON line.

Endpoint: an instant fake OpenAI-compatible server (tests/mpgi/fakechat.py) in its own process, so
the builder, not a model, is measured. Images: N (and 10 N) tiny PNGs in class folders. Each build
runs `rsvlm dataset build` in a subprocess (relay and one caption per image, quality checks) and
its peak resident memory is read from the kernel. Then `export --format csv` on the big dataset.
Flat memory: peak_rss_ratio (big / small) near 1 while the image count grows 10 x.

usage: python bench/dataset_scale.py [--images 500]
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

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.mpgi import data  # noqa: E402


def make_images(root: Path, count: int) -> Path:
    pixels = np.zeros((16, 16, 3), dtype=np.uint8)
    for i in range(count):
        folder = root / f"class_{i % 10}"
        folder.mkdir(parents=True, exist_ok=True)
        pixels[:] = (i % 251, (i // 251) % 251, 90)
        Image.fromarray(pixels).save(folder / f"img_{i:07d}.png")
    return root


def run(args: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS MiB) of `python -m rs_vlm_app ARGS`."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "rs_vlm_app", *args], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"rsvlm {' '.join(args)} failed: {process.stderr.read().decode()[-2000:]}")
    return wall, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=500)
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    server = subprocess.Popen([sys.executable, "-m", "tests.mpgi.fakechat"], env=env, stdout=subprocess.PIPE, text=True)
    try:
        base_url = server.stdout.readline().strip()
        results = {}
        with tempfile.TemporaryDirectory(prefix="rsvlm-scale-") as tmp_name:
            tmp = Path(tmp_name)
            for count in (args.images, 10 * args.images):
                images = make_images(tmp / f"images-{count}", count)
                backend = data.openai_backend(base_url, "fake", concurrency=8)
                config = data.build_config(tmp / f"out-{count}", [{"type": "folder", "root": str(images)}], backend,
                                           perspectives=(), captions=[{"name": "short", "words": 10}])
                path = data.write_config(tmp / f"build-{count}.yaml", config)
                results[count] = run(["dataset", "build", str(path)])
            big = 10 * args.images
            export = run(["dataset", "export", str(tmp / f"out-{big}"), "--format", "csv"])
    finally:
        server.terminate()
        server.wait(timeout=10)
    small, large = results[args.images], results[10 * args.images]
    print(json.dumps({
        "benchmark": "dataset_scale",
        "images": [args.images, 10 * args.images],
        "build_s": [round(small[0], 1), round(large[0], 1)],
        "images_per_s": [round(args.images / small[0], 1), round(10 * args.images / large[0], 1)],
        "peak_rss_mib": [round(small[1], 1), round(large[1], 1)],
        "peak_rss_ratio": round(large[1] / small[1], 3),
        "export_csv_peak_rss_mib": round(export[1], 1),
    }))


if __name__ == "__main__":
    main()
