"""Benchmark start-up; prints one JSON line.

Whole-process wall times (median of --runs, each a fresh interpreter):
- help_s: `rsvlm --help` (imports no torch);
- import_torch_s: `python -c "import torch"`, the floor any torch program pays;
- cached_query_s: a second `rsvlm localize` query on a scene whose tile embeddings are cached (a
  ViT-B-32 with random weights on the CPU, the NAIP sample): start-up, model load, one text encoding,
  writing the heat map and hot spots; cached_query_vs_import_torch = cached_query_s / import_torch_s
  (aim <= 1.5).

The same for CPU time (user + system of the child, median): on a shared machine the CPU a process
uses varies less than its wall time, so ``cpu_ratio`` (cached query / import torch) is the steadier
figure there; on an idle machine the two ratios agree.

``--breakdown`` adds, from one more cached query: ``imports``, its top-level imports (python -X
importtime, cumulative seconds, at least 20 ms), and ``imported``, whether each of WATCHED was in
sys.modules when it ended.

usage: python bench/startup.py [--runs 5] [--breakdown]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

#: modules whose presence the breakdown reports (each costs a noticeable share of a start-up)
WATCHED = ("transformers", "timm", "huggingface_hub", "torch._dynamo", "scipy.ndimage", "geopandas")


def run(command: list[str], env: dict[str, str]) -> tuple[float, float, subprocess.CompletedProcess]:
    """(wall seconds, CPU seconds of the child, the finished process)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command[:4])} ... failed: {done.stderr.strip()[-500:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return elapsed, cpu, done


def medians(commands: list[list[str]], env: dict[str, str]) -> tuple[float, float]:
    """Median wall and CPU seconds over ``commands`` (each run once)."""
    runs = [run(command, env)[:2] for command in commands]
    return (round(statistics.median(r[0] for r in runs), 3), round(statistics.median(r[1] for r in runs), 3))


def import_breakdown(stderr: str, floor_s: float = 0.02) -> dict[str, float]:
    """Top-level imports (cumulative seconds, at least ``floor_s``) from python -X importtime's report."""
    top: dict[str, float] = {}
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        _, cumulative, name = line.split("|", 2)  # "import time: self | cumulative | <indent>name"
        module = name.strip()
        seconds = int(cumulative) / 1e6
        if not name[1:].startswith(" ") and seconds >= floor_s:  # no indent: imported by the program itself
            top[module] = round(seconds, 3)
    return dict(sorted(top.items(), key=lambda kv: -kv[1]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--breakdown", action="store_true", help="add the cached query's import breakdown")
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
        run([*query[:5], "a lake", *query[6:]], env)  # first query: encodes and caches the tiles
        cached, cached_cpu = medians([[*query[:5], f"a road {i}", *query[6:]] for i in range(args.runs)], env)
        help_s, help_cpu = medians([[python, "-m", "rs_vlm_app", "--help"]] * args.runs, env)
        torch_s, torch_cpu = medians([[python, "-c", "import torch"]] * args.runs, env)
        breakdown = {}
        if args.breakdown:
            report = (f"import atexit, runpy, sys; atexit.register(lambda: print('WATCHED', "
                      f"[m in sys.modules for m in {WATCHED!r}], file=sys.stderr)); "
                      f"sys.argv = {['rs_vlm_app', *query[3:5], 'a river', *query[6:]]!r}; "
                      "runpy.run_module('rs_vlm_app', run_name='__main__')")
            _, _, done = run([python, "-X", "importtime", "-c", report], env)
            present = next(line for line in done.stderr.splitlines() if line.startswith("WATCHED"))
            breakdown = {"imports": import_breakdown(done.stderr),
                         "imported": dict(zip(WATCHED, json.loads(present.split(" ", 1)[1].lower()), strict=True))}
    print(json.dumps({
        "benchmark": "startup", "runs": args.runs, "help_s": help_s, "import_torch_s": torch_s,
        "cached_query_s": cached, "cached_query_vs_import_torch": round(cached / torch_s, 2),
        "cpu_s": {"help": help_cpu, "import_torch": torch_cpu, "cached_query": cached_cpu},
        "cpu_ratio": round(cached_cpu / torch_cpu, 2), **breakdown,
    }))


if __name__ == "__main__":
    main()
