"""Benchmark start-up; prints one JSON line.

Whole-process wall times (median of --runs, each a fresh interpreter):
- help_s: `rsvlm --help` (imports no torch);
- import_torch_s: `python -c "import torch"`, the floor any torch program pays;
- cached_query_s: a second `rsvlm localize` query on a scene whose tile embeddings are cached (a
  ViT-B-32 with random weights on the CPU, the NAIP sample): start-up, model load, one text encoding,
  writing the heat map and hot spots; cached_query_vs_import_torch = cached_query_s / import_torch_s
  (aim <= 1.5).

usage: python bench/startup.py [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))


def wall(command: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command[:4])} ... failed: {done.stderr.strip()[-500:]}")
    return elapsed


def median_wall(command: list[str], env: dict[str, str], runs: int) -> float:
    return round(statistics.median(wall(command, env) for _ in range(runs)), 3)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    from shared_data import NAIP_SAMPLE

    python = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        env = dict(os.environ, RSVLM_CACHE_DIR=str(work / "cache"), HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO))
        import open_clip

        from tests.tinymodels import save_checkpoint

        checkpoint = work / "vit_b_32_random.safetensors"
        save_checkpoint(open_clip.create_model("ViT-B-32", pretrained=None), checkpoint, "safetensors")
        query = [python, "-m", "rs_vlm_app", "localize", str(NAIP_SAMPLE), "QUERY", "-o", str(work / "out"),
                 "--arch", "ViT-B-32", "--checkpoint", str(checkpoint), "--device", "cpu", "--json"]
        wall([*query[:5], "a lake", *query[6:]], env)  # first query: encodes and caches the tiles
        cached = statistics.median(wall([*query[:5], f"a road {i}", *query[6:]], env) for i in range(args.runs))
        help_s = median_wall([python, "-m", "rs_vlm_app", "--help"], env, args.runs)
        torch_s = median_wall([python, "-c", "import torch"], env, args.runs)
    print(json.dumps({
        "benchmark": "startup", "runs": args.runs, "help_s": help_s, "import_torch_s": torch_s,
        "cached_query_s": round(cached, 3), "cached_query_vs_import_torch": round(cached / torch_s, 2),
    }))


if __name__ == "__main__":
    main()
