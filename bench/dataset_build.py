"""Benchmark the MpGI dataset builder against a plain async client; prints ONE JSON line.

Server: tests/mpgi/fakechat.py in its own process on 127.0.0.1, answering every chat request after
--latency-ms (50 ms), whatever it asks: a stand-in for a fast inference server, so that what is
measured is the builder, not a model.

For each concurrency (16 and 64; the backend's ``concurrency``) one fresh build runs over
--images-per-slot x concurrency synthetic images (each: the relay, --perspectives perspective
prompts, the default 6 caption slots; the relay and perspectives send the image). Then a plain
client (httpx2.AsyncClient, a semaphore of the same size) sends the same number of requests with the
same kind of bodies (the image requests carry the same encoded images), all at once.

Reported per concurrency:
- requests_per_s: the builder's model stages (first request sent to last reply, from the manifest);
- baseline_requests_per_s: the plain client;
- overhead_pct: how much longer the builder took than the plain client for the same requests
  (the aim: under 5 %), and overhead_ms_per_request: that difference per request;
- cpu_ms_per_request: the builder process's CPU time per request during the build (prompt
  rendering, image reading and encoding, SQLite commits, scheduling);
- build_wall_s: the whole build_dataset call (ingest, rule stage, model stages, quality checks).

usage: python bench/dataset_build.py [--images-per-slot 20] [--perspectives 1] [--latency-ms 50]
       [--concurrency 16 64]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rs_vlm_app.mpgi import BuildConfig, build_dataset  # noqa: E402
from rs_vlm_app.mpgi.backends import ChatRequest  # noqa: E402
from rs_vlm_app.mpgi.backends.openai_compat import OpenAICompatBackend, parse_response  # noqa: E402
from rs_vlm_app.mpgi.imagefiles import encode, load_rgb  # noqa: E402
from rs_vlm_app.mpgi.manifest import Manifest  # noqa: E402
from tests.mpgi import data  # noqa: E402

PERSPECTIVE_NAMES = ("scene", "objects", "spatial", "context")


def start_server(latency_ms: float) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    server = subprocess.Popen([sys.executable, "-m", "tests.mpgi.fakechat", "--delay-ms", str(latency_ms)],
                              env=env, stdout=subprocess.PIPE, text=True, cwd=REPO)
    return server, server.stdout.readline().strip()


def make_config(out: Path, images: Path, base_url: str, concurrency: int, perspectives: int) -> BuildConfig:
    backend = {"type": "openai", "base_url": base_url, "model": "bench", "concurrency": concurrency,
               "timeout_s": 60, "retries": 2}
    return BuildConfig.from_dict({
        "output": str(out),
        "sources": [{"type": "folder", "root": str(images)}],
        "backends": {"server": backend},
        "relay": {"backend": "server", "max_tokens": 64},
        "perspectives": {"backend": "server", "prompts": list(PERSPECTIVE_NAMES[:perspectives]), "max_tokens": 64},
        "integration": {"backend": "server", "max_tokens": 64},
        "quality": {"duplicates": "off", "length": "off"},
        "image": {"max_side": 128},
    })


def model_stage_span(config: BuildConfig) -> tuple[float, int]:
    """(first model call's start to the last one's end, number of model calls) from the manifest."""
    with Manifest(config.manifest_path, readonly=True) as manifest:
        first, last, count = manifest.db.execute(
            "SELECT MIN(started_at), MAX(finished_at), COUNT(*) FROM attempts WHERE stage != 'rules'").fetchone()
    return last - first, count


def baseline_bodies(config: BuildConfig, per_image_images: int) -> list[dict]:
    """Request bodies like the build's: per image, the image requests (with the encoded image) and
    the caption requests (text), with the prompts the build sent (taken from its attempts' outputs)."""
    backend = OpenAICompatBackend("server", config.backends["server"])
    bodies = []
    with Manifest(config.manifest_path, readonly=True) as manifest:
        for row in manifest.iter_images():
            image = encode(load_rgb(row.record.path, max_side=config.image.max_side), config.image.format,
                           config.image.quality)
            facts = "\n".join(row.facts)
            outputs = manifest.outputs_for([row.id])[row.id]
            descriptions = "\n\n".join(text for stage, text in outputs.items() if stage != "rules")
            for _ in range(per_image_images):
                bodies.append(backend.body(ChatRequest("You describe images.", facts, image, 64, 0.2)))
            for name, _slot in config.integration.slots():
                bodies.append(backend.body(ChatRequest("You write captions.", f"{facts}\n{descriptions}\n{name}",
                                                       None, 64, 0.7, seed=1)))
    return bodies


async def plain_client(url: str, bodies: list[dict], concurrency: int) -> float:
    import httpx2

    slots = asyncio.Semaphore(concurrency)
    limits = httpx2.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx2.AsyncClient(timeout=60, limits=limits) as client:
        async def one(body):
            async with slots:
                response = await client.post(url, json=body)
            parse_response(response.status_code, response.headers, response.content)

        start = time.perf_counter()
        await asyncio.gather(*(one(b) for b in bodies))
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images-per-slot", type=int, default=20, help="images per unit of concurrency")
    parser.add_argument("--perspectives", type=int, default=1, choices=range(0, len(PERSPECTIVE_NAMES) + 1))
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[16, 64])
    args = parser.parse_args()
    server, base_url = start_server(args.latency_ms)
    results = {}
    try:
        with tempfile.TemporaryDirectory(prefix="rsvlm-bench-") as tmp_name:
            tmp = Path(tmp_name)
            for concurrency in args.concurrency:
                n = args.images_per_slot * concurrency
                images = data.class_folders(tmp / f"images-{concurrency}", {"forest": n // 2, "harbor": n - n // 2},
                                            size=(128, 128))
                config = make_config(tmp / f"out-{concurrency}", images, base_url, concurrency, args.perspectives)
                cpu0, wall0 = time.process_time(), time.perf_counter()
                summary = build_dataset(config)
                build_wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
                assert summary.status == "completed" and summary.failed_units == 0, summary
                span, requests = model_stage_span(config)
                bodies = baseline_bodies(config, 1 + args.perspectives)
                # A caption that came back identical to another of its image is asked again warmer
                # (issue 13): those retries are caption requests the plain client must send too.
                retries = requests - len(bodies)
                assert retries >= 0, (len(bodies), requests)
                captions = [b for b in bodies if "image_url" not in json.dumps(b)]
                bodies += [captions[i % len(captions)] for i in range(retries)]
                url = OpenAICompatBackend("server", config.backends["server"]).url
                base = asyncio.run(plain_client(url, bodies, concurrency))
                results[str(concurrency)] = {
                    "images": n, "requests": requests, "identical_caption_retries": retries,
                    "requests_per_s": round(requests / span, 1),
                    "baseline_requests_per_s": round(requests / base, 1),
                    "overhead_pct": round(100 * (span / base - 1), 2),
                    "overhead_ms_per_request": round(1000 * (span - base) / requests, 3),
                    "cpu_ms_per_request": round(1000 * cpu / requests, 3),
                    "build_wall_s": round(build_wall, 2),
                }
    finally:
        server.terminate()
        server.wait(timeout=10)
    print(json.dumps({
        "benchmark": "dataset_build",
        "latency_ms": args.latency_ms,
        "requests_per_image": 1 + args.perspectives + 6,
        "by_concurrency": results,
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }))


if __name__ == "__main__":
    main()
