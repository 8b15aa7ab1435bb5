"""Benchmark the MpGI dataset builder against a plain async client; prints ONE JSON line.

Server: bench/chat_stand_in.py in its own process on 127.0.0.1 (one asyncio process, as vLLM's
OpenAI server is), answering every chat request after --latency-ms (50 ms), whatever it asks: a
stand-in for a fast inference server, so that what is measured is the builder, not a model.

For each concurrency (16 and 64; the backend's ``concurrency``) one fresh build runs over
--images-per-slot x concurrency synthetic images (each: the relay, --perspectives perspective
prompts, the default 6 caption slots; the relay and perspectives send the image). The server keeps
the bodies it received; then a plain client (aiohttp.ClientSession, the builder's HTTP library,
with the same pool limits and a semaphore of the same size) sends exactly those bodies again
(``json=``), all at once, and parses every reply with the builder's own check (parse_response:
finish_reason, think tags, reasoning_content). For reference, a plain httpx client
(httpx2.AsyncClient, what the openai package uses, and what the builder used before) sends them too.

Reported per concurrency:
- requests_per_s: the builder's model stages (first request sent to last reply, from the manifest);
- baseline_requests_per_s: the plain client; httpx_requests_per_s: the plain httpx client;
- overhead_pct: how much longer the builder took than the plain client for the same requests
  (the aim: under 5 %), and overhead_ms_per_request: that difference per request;
- cpu_ms_per_request: the builder process's CPU time (all its threads) per request over the whole
  build (ingest and rule stage, model stages, quality checks); model_stage_cpu_ms_per_request: the
  same over the model stages only (prompt rendering, image encoding, the HTTP client, the manifest
  writer thread, scheduling), and model_stage_loop_cpu_ms_per_request: that of the event loop's
  thread alone (the manifest writer and image encoding run beside it, on another core if there is
  one); baseline_cpu_ms_per_request: the plain client's CPU time per request (one thread: the HTTP
  client and reply parsing, no more); httpx_cpu_ms_per_request: that of the httpx client. At high
  concurrency the event loop's time per request sets how long each reply waits to be read, so the
  loop thread's CPU per request against the baseline's is what the overhead is made of;
- build_wall_s: the whole build_dataset call;
- body_kib_per_request: the mean request body (the same for both).

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
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rs_vlm_app.mpgi import BuildConfig, build_dataset  # noqa: E402
from rs_vlm_app.mpgi.backends.openai_compat import OpenAICompatBackend, parse_response  # noqa: E402
from rs_vlm_app.mpgi.manifest import Manifest  # noqa: E402
from rs_vlm_app.reporting import NullReporter  # noqa: E402
from tests.mpgi import data  # noqa: E402

PERSPECTIVE_NAMES = ("scene", "objects", "spatial", "context")


def start_server(latency_ms: float) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    server = subprocess.Popen([sys.executable, str(REPO / "bench" / "chat_stand_in.py"), "--delay-ms", str(latency_ms),
                               "--keep-bodies"], env=env, stdout=subprocess.PIPE, text=True, cwd=REPO)
    return server, server.stdout.readline().strip()


def received_bodies(base_url: str) -> list[dict]:
    """The chat bodies the server received since the last call (in arrival order)."""
    with urllib.request.urlopen(f"{base_url}/_bodies", timeout=120) as response:
        return json.load(response)


class StageClock(NullReporter):
    """CPU times (the process's; the event loop thread's) when the model stages start (their first
    progress report) and end (the quality checks start)."""

    def __init__(self):
        self.start: tuple[float, float] | None = None
        self.end: tuple[float, float] | None = None

    def progress(self, stage: str, done: int, total: int | None = None) -> None:
        if stage in ("descriptions", "captions") and self.start is None:
            self.start = (time.process_time(), time.thread_time())
        elif stage == "quality" and self.end is None:
            self.end = (time.process_time(), time.thread_time())


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


async def plain_client(url: str, bodies: list[dict], concurrency: int) -> float:
    """Seconds for a plain aiohttp client to send every body (``json=``, at most ``concurrency`` at once)."""
    import aiohttp

    slots = asyncio.Semaphore(concurrency)
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency)
    async with aiohttp.ClientSession(connector=connector) as client:
        async def one(body):
            async with slots, client.post(url, json=body) as response:
                status, headers, content = response.status, response.headers, await response.read()
            parse_response(status, headers, content)

        start = time.perf_counter()
        await asyncio.gather(*(one(b) for b in bodies))
        return time.perf_counter() - start


async def plain_httpx_client(url: str, bodies: list[dict], concurrency: int) -> float:
    """The same with httpx (for reference: the openai package's client, and the builder's before)."""
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


def timed(client, url: str, bodies: list[dict], concurrency: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one plain client run."""
    cpu0 = time.process_time()
    wall = asyncio.run(client(url, bodies, concurrency))
    return wall, time.process_time() - cpu0


def identical_retries(config: BuildConfig) -> int:
    """Captions asked again because they came back identical to another of their image (issue 13)."""
    with Manifest(config.manifest_path, readonly=True) as manifest:
        return manifest.db.execute("SELECT COUNT(*) FROM attempts WHERE error LIKE 'identical to %'").fetchone()[0]


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
                received_bodies(base_url)  # start counting afresh
                clock = StageClock()
                cpu0, wall0 = time.process_time(), time.perf_counter()
                summary = build_dataset(config, reporter=clock)
                build_wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
                assert summary.status == "completed" and summary.failed_units == 0, summary
                span, requests = model_stage_span(config)
                bodies = received_bodies(base_url)
                assert len(bodies) == requests, (len(bodies), requests)
                body_bytes = sum(len(json.dumps(b, ensure_ascii=False, separators=(",", ":")).encode()) for b in bodies)
                url = OpenAICompatBackend("server", config.backends["server"]).url
                base, base_cpu = timed(plain_client, url, bodies, concurrency)
                received_bodies(base_url)  # let the server drop the replayed bodies
                httpx, httpx_cpu = timed(plain_httpx_client, url, bodies, concurrency)
                received_bodies(base_url)
                results[str(concurrency)] = {
                    "images": n, "requests": requests, "identical_caption_retries": identical_retries(config),
                    "requests_per_s": round(requests / span, 1),
                    "baseline_requests_per_s": round(requests / base, 1),
                    "overhead_pct": round(100 * (span / base - 1), 2),
                    "overhead_ms_per_request": round(1000 * (span - base) / requests, 3),
                    "cpu_ms_per_request": round(1000 * cpu / requests, 3),
                    "model_stage_cpu_ms_per_request": round(1000 * (clock.end[0] - clock.start[0]) / requests, 3),
                    "model_stage_loop_cpu_ms_per_request": round(1000 * (clock.end[1] - clock.start[1]) / requests, 3),
                    "baseline_cpu_ms_per_request": round(1000 * base_cpu / requests, 3),
                    "httpx_requests_per_s": round(requests / httpx, 1),
                    "httpx_cpu_ms_per_request": round(1000 * httpx_cpu / requests, 3),
                    "build_wall_s": round(build_wall, 2),
                    "body_kib_per_request": round(body_bytes / requests / 1024, 2),
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
