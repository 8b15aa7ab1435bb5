"""Benchmark the MpGI dataset builder against a real local server; prints ONE JSON line.

Server: `transformers serve` on 127.0.0.1 with the tiny Qwen2-VL chat model of tests/tinyllm.py
(built once into .bench_cache/). Every stage runs on it: relay, PERSPECTIVES perspective prompts and
SLOTS caption slots, so each image costs 1 + PERSPECTIVES + SLOTS requests and yields SLOTS captions.

Measured in the same run:
- captions_per_s at concurrency 1, 4 and 16: a fresh build of IMAGES synthetic images each (ingest,
  rule stage, model stages, quality), final captions / wall time;
- overhead_ms_per_request: at concurrency 1 (one request at a time), the model stages' span minus
  the time spent inside HTTP calls, per request (the manifest times every attempt): what the builder
  adds outside the server (prompt rendering, image reading and encoding, SQLite commits, scheduling);
- baseline: the same requests (same bodies, images encoded beforehand) replayed one after another by
  a bare HTTP client: the server's own pace; builder_vs_baseline = baseline wall / the builder's
  model-stage span at concurrency 1 (1.0 = the builder adds nothing);
- peak_rss_mib of this process.

usage: python bench/dataset_build.py [--images 24] [--perspectives 2] [--slots 3]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rs_vlm_app.mpgi import BuildConfig, build_dataset  # noqa: E402
from rs_vlm_app.mpgi.backends import ChatRequest  # noqa: E402
from rs_vlm_app.mpgi.backends.openai_compat import OpenAICompatBackend, parse_response  # noqa: E402
from rs_vlm_app.mpgi.generate import prompt_values  # noqa: E402
from rs_vlm_app.mpgi.imagefiles import encode, load_rgb  # noqa: E402
from rs_vlm_app.mpgi.manifest import Manifest  # noqa: E402
from rs_vlm_app.mpgi.plan import CAPTION_PREFIX, PERSPECTIVE_PREFIX, RELAY, load_plan  # noqa: E402
from tests import tinyllm  # noqa: E402
from tests.mpgi import data  # noqa: E402

PERSPECTIVE_NAMES = ("scene", "objects", "spatial", "context")


def make_config(root: Path, images: Path, base_url: str, model: Path, concurrency: int, perspectives: int,
                slots: int) -> BuildConfig:
    backend = {"type": "openai", "base_url": base_url, "model": str(model), "concurrency": concurrency,
               "timeout_s": 300, "retries": 3}
    config = {
        "output": str(root),
        "sources": [{"type": "folder", "root": str(images)}],
        "backends": {"server": backend},
        "relay": {"backend": "server", "max_tokens": 32, "temperature": 0.0},
        "perspectives": {"backend": "server", "prompts": list(PERSPECTIVE_NAMES[:perspectives]), "max_tokens": 32,
                         "temperature": 0.0},
        "integration": {"backend": "server", "max_tokens": 32, "temperature": 0.0,
                        "captions": [{"name": f"len{i}", "words": 8 + 8 * i} for i in range(slots)]},
        "quality": {"duplicates": "off", "length": "off"},
        "image": {"max_side": 112},
    }
    return BuildConfig.from_dict(config)


def timed_build(config: BuildConfig) -> tuple[float, int, int]:
    start = time.perf_counter()
    summary = build_dataset(config)
    wall = time.perf_counter() - start
    assert summary.status == "completed", summary
    return wall, summary.captions, summary.requests


def model_stage_times(config: BuildConfig) -> tuple[float, float]:
    """(span from the first model call's start to the last one's end, sum of the calls' durations)."""
    with Manifest(config.manifest_path, readonly=True) as manifest:
        first, last, inside = manifest.db.execute(
            "SELECT MIN(started_at), MAX(finished_at), SUM(latency_s) FROM attempts WHERE stage != 'rules'").fetchone()
    return last - first, inside


def replay_requests(config: BuildConfig) -> list[ChatRequest]:
    """The chat requests the build sent, rebuilt from its manifest (same prompts, same images)."""
    plan = load_plan(config)
    requests = []
    with Manifest(config.manifest_path, readonly=True) as manifest:
        for row in manifest.iter_images():
            values = prompt_values(row)
            image = encode(load_rgb(row.record.path, max_side=config.image.max_side), config.image.format,
                           config.image.quality)
            done = manifest.outputs_for([row.id])[row.id]
            description_units = [(RELAY, plan.relay, config.relay)] + [
                (PERSPECTIVE_PREFIX + p.name, p, config.perspectives) for p in plan.perspectives]
            for _, prompt, stage in description_units:
                system, user = prompt.render(values)
                requests.append(ChatRequest(system, user, image, stage.max_tokens, stage.temperature))
            parts = [f"Grounded description:\n{done[RELAY]}"] + [
                f"Perspective '{p.name}' ({p.description.rstrip('.') or p.name}):\n{done[PERSPECTIVE_PREFIX + p.name]}"
                for p in plan.perspectives]
            for name, slot in plan.slots:
                assert CAPTION_PREFIX + name in done
                system, user = plan.integration.render({**values, "descriptions": "\n\n".join(parts),
                                                        "length_name": slot.name, "length_words": str(slot.words)})
                requests.append(ChatRequest(system, user, None, config.integration.max_tokens_for(slot),
                                            config.integration.temperature))
    return requests


def baseline(config: BuildConfig, requests: list[ChatRequest]) -> float:
    """Send the requests one after another with a bare client; wall time."""
    import httpx2

    backend = OpenAICompatBackend("server", config.backends["server"])
    bodies = [backend.body(r) for r in requests]
    with httpx2.Client(timeout=300) as client:
        start = time.perf_counter()
        for body in bodies:
            response = client.post(backend.url, json=body)
            parse_response(response.status_code, response.headers, response.content)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--perspectives", type=int, default=2, choices=range(0, len(PERSPECTIVE_NAMES) + 1))
    parser.add_argument("--slots", type=int, default=3)
    args = parser.parse_args()
    cache = REPO / ".bench_cache"
    models = tinyllm.cached_models(cache / "tinyllm")
    with tempfile.TemporaryDirectory(prefix="rsvlm-bench-") as tmp_name:
        tmp = Path(tmp_name)
        images = data.class_folders(tmp / "images", {"forest": args.images // 2, "harbor": args.images - args.images // 2},
                                    size=(128, 128))
        with tinyllm.TransformersServe(hf_home=tmp / "hf") as server:
            server.chat(models["vision"], "Reply with OK.", max_tokens=4)  # load the model
            results = {}
            for concurrency in (1, 4, 16):
                config = make_config(tmp / f"out-c{concurrency}", images, server.base_url, models["vision"],
                                     concurrency, args.perspectives, args.slots)
                wall, captions, requests = timed_build(config)
                results[concurrency] = (wall, captions, requests, config)
            wall1, captions1, requests1, config1 = results[1]
            span, inside = model_stage_times(config1)
            replay = replay_requests(config1)
            assert len(replay) == requests1, (len(replay), requests1)
            base_wall = baseline(config1, replay)
    print(json.dumps({
        "benchmark": "dataset_build",
        "images": args.images,
        "requests_per_image": 1 + args.perspectives + args.slots,
        "captions_per_image": args.slots,
        "captions_per_s": {str(c): round(r[1] / r[0], 2) for c, r in results.items()},
        "requests_per_s": {str(c): round(r[2] / r[0], 2) for c, r in results.items()},
        "baseline_requests_per_s": round(requests1 / base_wall, 2),
        "overhead_ms_per_request": round(1000 * (span - inside) / requests1, 2),
        "http_call_ms_per_request": round(1000 * inside / requests1, 2),
        "builder_vs_baseline": round(base_wall / span, 3),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }))


if __name__ == "__main__":
    main()
