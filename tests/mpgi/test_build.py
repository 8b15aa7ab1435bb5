"""End to end against a real OpenAI-compatible server (`transformers serve` with tiny local models)."""

from __future__ import annotations

import json
import tarfile

import pytest

from rs_vlm_app.mpgi import BuildConfig, build_dataset, export_dataset
from tests import tinyllm
from tests.conftest import SAMPLES
from tests.mpgi import data
from tests.mpgi.helpers import kill_build_mid_captions, ok_attempts_per_unit, outputs, query, rsvlm

pytestmark = pytest.mark.slow  # starts a server and builds tiny models (cached after the first run)


def three_sources(tmp_path):
    aid = data.class_folders(tmp_path / "AID", {"forest": 2, "DenseResidential": 1})
    coco = data.coco_dataset(tmp_path / "dior", [
        {"file_name": "a.png", "size": (120, 90), "boxes": [(1, 10, 10, 20, 10), (1, 50, 40, 10, 10), (2, 80, 50, 30, 30)]},
        {"file_name": "b.png", "size": (120, 90), "boxes": []},
    ], {1: "airplane", 2: "storagetank"})
    dota = data.dota_dataset(tmp_path / "dota", {"P1": "gsd:0.5\n10 10 30 10 30 30 10 30 ship 0\n"}, {"P1.png": (64, 64)})
    return [
        {"type": "folder", "root": str(aid)},
        {"type": "coco", "name": "dior", "annotations": str(coco), "images": str(tmp_path / "dior" / "images")},
        {"type": "dota", "name": "dota", "labels": str(dota / "labelTxt"), "images": str(dota / "images")},
    ]


def real_config(tmp_path, serve, tiny_llms, sources, **extra):
    vision = data.openai_backend(serve.base_url, str(tiny_llms["vision"]), concurrency=2)
    text = data.openai_backend(serve.base_url, str(tiny_llms["text"]), concurrency=2)
    config = data.build_config(tmp_path / "out", sources, vision, text, **extra)
    for stage in ("relay", "perspectives", "integration"):
        config[stage]["temperature"] = 0.0
    return config


def test_build_status_and_exports_against_transformers_serve(tmp_path, serve, tiny_llms):
    config_dict = real_config(tmp_path, serve, tiny_llms, three_sources(tmp_path))
    config_path = data.write_config(tmp_path / "build.yaml", config_dict)
    result = rsvlm("dataset", "build", str(config_path))
    assert result.returncode == 0, result.stderr
    manifest = tmp_path / "out" / "manifest.sqlite"
    done = outputs(manifest)
    keys = sorted({key for key, _ in done})
    assert keys == ["AID/DenseResidential/denseresidential_0.png", "AID/forest/forest_0.png", "AID/forest/forest_1.png",
                    "dior/a.png", "dior/b.png", "dota/P1.png"]
    stages = ["rules", "relay", "perspective:scene", "perspective:objects", "caption:short", "caption:long"]
    for key in keys:
        for stage in stages:
            assert (key, stage) in done, (key, stage)
        assert done[(key, "relay")] == tinyllm.VISION_REPLY  # the real server's MLLM answer
        assert done[(key, "caption:short")] == tinyllm.TEXT_REPLY  # ... and its LLM answer
    assert done[("dior/a.png", "rules")].startswith("The image contains two airplanes and one storage tank.")
    assert done[("dota/P1.png", "rules")].splitlines()[0] == "The image was at a ground sample distance of 0.5 m."
    # every attempt names its model and prompt hash; relay and perspectives went to the vision model
    rows = query(manifest, "SELECT stage, model, prompt_hash FROM attempts WHERE stage != 'rules'")
    assert {m for s, m, _ in rows if not s.startswith("caption")} == {str(tiny_llms["vision"])}
    assert {m for s, m, _ in rows if s.startswith("caption")} == {str(tiny_llms["text"])}
    assert all(len(h) == 16 for _, _, h in rows)

    status = rsvlm("dataset", "status", str(tmp_path / "out"), "--json")
    assert status.returncode == 0, status.stderr
    info = json.loads(status.stdout)["manifests"][0]
    assert info["images"] == 6 and info["failed_units"] == 0
    assert {r["stage"]: r["done"] for r in info["stages"]} == dict.fromkeys(stages, 6)

    csv_result = rsvlm("dataset", "export", str(tmp_path / "out"), "--format", "csv")
    assert csv_result.returncode == 0, csv_result.stderr
    lines = (tmp_path / "out" / "export" / "captions.csv").read_text().splitlines()
    assert lines[0] == "filepath,caption"
    assert len(lines) == 1 + 6 * 2
    assert lines[1] == f"{tmp_path / 'AID' / 'DenseResidential' / 'denseresidential_0.png'},{tinyllm.TEXT_REPLY}"

    export_dataset(tmp_path / "out", "jsonl")
    records = [json.loads(line) for line in (tmp_path / "out" / "export" / "captions.jsonl").read_text().splitlines()]
    a = next(r for r in records if r["key"] == "dior/a.png")
    assert a["object_counts"] == {"airplane": 2, "storage tank": 1}
    assert a["perspectives"] == {"objects": tinyllm.VISION_REPLY, "scene": tinyllm.VISION_REPLY}
    assert [c["slot"] for c in a["captions"]] == ["short", "long"]

    export_dataset(tmp_path / "out", "wds", samples_per_shard=5)
    shards = sorted((tmp_path / "out" / "export" / "wds").glob("*.tar"))
    assert [s.name for s in shards] == ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    with tarfile.open(shards[0]) as tar:
        names = tar.getnames()
        assert names[:3] == ["000000001_short.png", "000000001_short.txt", "000000001_short.json"]
        assert tar.extractfile("000000001_short.txt").read().decode() == tinyllm.TEXT_REPLY


def test_kill_9_mid_stage_then_resume_loses_nothing_and_repeats_nothing(tmp_path, serve, tiny_llms):
    data.class_folders(tmp_path / "AID", {"forest": 5, "river": 5})
    config_dict = real_config(tmp_path, serve, tiny_llms, [{"type": "folder", "root": str(tmp_path / "AID")}],
                              captions=[{"name": "short", "words": 8}, {"name": "medium", "words": 15},
                                        {"name": "long", "words": 25}])
    config_path = data.write_config(tmp_path / "build.yaml", config_dict)
    manifest = tmp_path / "out" / "manifest.sqlite"
    kill_build_mid_captions(config_path, manifest, 4, timeout_s=240)
    before = outputs(manifest)
    assert 4 <= sum(s.startswith("caption") for _, s in before) < 30  # killed in the middle of the caption stage
    resumed = rsvlm("dataset", "build", str(config_path))
    assert resumed.returncode == 0, resumed.stderr
    after = outputs(manifest)
    assert after.items() >= before.items()  # nothing lost, nothing rewritten
    keys = {key for key, _ in after}
    assert len(keys) == 10
    for key in keys:
        for slot in ("short", "medium", "long"):
            assert (key, f"caption:{slot}") in after
    # nothing generated twice: one successful attempt per image and stage
    per_unit = ok_attempts_per_unit(manifest)
    assert len(per_unit) == 10 * (1 + 1 + 2 + 3) and set(per_unit.values()) == {1}
    assert query(manifest, "SELECT COUNT(*) FROM outputs WHERE stage LIKE 'caption:%'")[0][0] == 30
    runs = query(manifest, "SELECT status FROM runs ORDER BY id")
    assert runs == [("interrupted",), ("completed",)]
    assert query(manifest, "SELECT COUNT(*) FROM attempts WHERE status = 'running'")[0][0] == 0


def test_local_transformers_backends_batched(tmp_path, tiny_llms):
    vision = {"type": "transformers", "model": str(tiny_llms["vision"]), "batch_size": 4, "batch_wait_ms": 50}
    text = {"type": "transformers", "model": str(tiny_llms["text"]), "batch_size": 4, "batch_wait_ms": 50}
    config_dict = data.build_config(tmp_path / "out", [{"type": "folder", "root": str(
        data.class_folders(tmp_path / "AID", {"forest": 2, "river": 2}))}], vision, text)
    for stage in ("relay", "perspectives", "integration"):
        config_dict[stage]["temperature"] = 0.0
    summary = build_dataset(BuildConfig.from_dict(config_dict))
    assert summary.status == "completed" and summary.captions == 8
    done = outputs(tmp_path / "out" / "manifest.sqlite")
    assert {t for (_, s), t in done.items() if s.startswith("caption")} == {tinyllm.TEXT_REPLY}
    assert {t for (_, s), t in done.items() if s.startswith("perspective")} == {tinyllm.VISION_REPLY}


def test_local_backend_groups_concurrent_requests_into_batches(tiny_llms):
    import asyncio

    from rs_vlm_app.mpgi.backends import ChatRequest
    from rs_vlm_app.mpgi.backends.local_transformers import LocalTransformersBackend
    from rs_vlm_app.mpgi.config import TransformersBackend
    from rs_vlm_app.mpgi.imagefiles import encode, load_rgb

    async def run():
        backend = LocalTransformersBackend("v", TransformersBackend(model=tiny_llms["vision"], batch_size=3,
                                                                    batch_wait_ms=100))
        await backend.start()
        try:
            image = encode(load_rgb(SAMPLES / "naip_2020_5m.tif", max_side=112))
            requests = [ChatRequest("You describe images.", f"Describe image {i}.", image, 20, 0.0) for i in range(5)]
            requests.append(ChatRequest(None, "Just text.", None, 20, 0.0))
            replies = [reply.text for reply in await asyncio.gather(*(backend.complete(r) for r in requests))]
        finally:
            await backend.close()
        return replies, backend.batch_sizes

    replies, sizes = asyncio.run(run())
    assert replies == [tinyllm.VISION_REPLY] * 6
    assert sorted(sizes) == [1, 2, 3]  # 3 + 2 image requests, the text one apart (other settings)


def test_faults_injected_in_front_of_the_real_server_are_retried(tmp_path, serve, tiny_llms):
    from tests.mpgi.fakechat import FakeChatServer

    with FakeChatServer(upstream=serve.base_url) as proxy:
        proxy.script(("status", 502), "garbage", ("status", 429, 0), "drop")
        config_dict = real_config(tmp_path, serve, tiny_llms, [{"type": "folder", "root": str(
            data.class_folders(tmp_path / "AID", {"forest": 2}))}], perspectives=("scene",))
        for backend in config_dict["backends"].values():
            backend.update(base_url=proxy.base_url, retries=3)
        config_dict["integration"]["identical_retries"] = 0  # the tiny model says one sentence to everything
        summary = build_dataset(BuildConfig.from_dict(config_dict))
    assert summary.status == "completed" and summary.retried == 4
    manifest = tmp_path / "out" / "manifest.sqlite"
    errors = [e for (e,) in query(manifest, "SELECT error FROM attempts WHERE status = 'error' ORDER BY id")]
    assert sorted(e.split(":")[0] for e in errors) == sorted(
        ["HTTP 502", "malformed reply (not JSON)", "HTTP 429", "connection failed"])  # arrival order may vary
    done = outputs(manifest)
    assert {t for (_, s), t in done.items() if s.startswith("caption")} == {tinyllm.TEXT_REPLY}
    assert {t for (_, s), t in done.items() if s in ("relay", "perspective:scene")} == {tinyllm.VISION_REPLY}
    assert set(ok_attempts_per_unit(manifest).values()) == {1}
