"""MpGI as the paper does it: distinct captions from deterministic servers, a relay chain on several
MLLMs, perspectives on their own backends, integration that sees every description, whole replies."""

from __future__ import annotations

import hashlib
import json
import re
import threading

import pytest

from rs_vlm_app.mpgi import BuildConfig, build_dataset, export_dataset
from tests.mpgi import data
from tests.mpgi.fakechat import FakeChatServer, has_image, user_text
from tests.mpgi.helpers import outputs, query, rsvlm

DEFAULT_SLOTS = ["short-1", "short-2", "medium-1", "medium-2", "detailed-1", "detailed-2"]


def default_plan_config(tmp_path, base_url, images=3, **extra) -> dict:
    config = data.build_config(tmp_path / "out", [{"type": "folder", "root": str(
        data.class_folders(tmp_path / "AID", {"forest": (images + 1) // 2, "river": images // 2}))}],
        data.openai_backend(base_url, "greedy", retries=3), perspectives=("scene",), **extra)
    del config["integration"]["captions"]  # the default plan: 2 short, 2 medium, 2 detailed
    return config


def test_a_deterministic_server_with_faults_keeps_every_caption(tmp_path, fake_server):
    # a greedy server: the same request always gets the same reply (the seed and temperature ignored)
    fake_server.responder = lambda body: "Scene " + hashlib.sha256(json.dumps(body["messages"]).encode()).hexdigest()[:12] + "."
    seen: set[str] = set()
    lock = threading.Lock()

    def fault_on_first_sight(body, number):  # about a third of all requests fail once, deterministically
        key = hashlib.sha256(json.dumps(body["messages"], sort_keys=True).encode()).hexdigest()
        with lock:
            first = key not in seen
            seen.add(key)
        return ("status", 503) if first and int(key, 16) % 3 == 0 else None

    fake_server.rule = fault_on_first_sight
    config = BuildConfig.from_dict(default_plan_config(tmp_path, fake_server.base_url, images=3,
                                                       quality={"duplicates": "drop", "length": "off"}))
    summary = build_dataset(config)
    assert summary.status == "completed" and summary.failed_units == 0 and fake_server.faults
    assert summary.captions == 3 * 6 and summary.verdicts == {"keep": 18}
    done = outputs(config.manifest_path)
    for key in {k for k, _ in done}:
        captions = [done[(key, f"caption:{slot}")] for slot in DEFAULT_SLOTS]
        assert len(set(captions)) == 6, captions  # identical slots never collapse
    # the slots of one length asked different things: the slot number, the captions before, a seed of their own
    integration = [b for b in fake_server.requests if " caption " in user_text(b) and " of 2 for this image" in
                   user_text(b)]
    second = [b for b in integration if "short caption 2 of 2" in user_text(b)]
    assert len(second) >= 3
    assert all("already written for this image" in user_text(b) and "Write a different one" in user_text(b)
               for b in second)
    seeds = {(b["seed"], re.search(r"classified as \w+", user_text(b)).group(0)) for b in integration}
    assert len({s for s, _ in seeds}) >= 6
    export_dataset(config.output, "csv")
    assert len((config.output / "export" / "captions.csv").read_text().splitlines()) == 1 + 18


def test_an_identical_caption_is_asked_again_warmer_before_it_is_dropped(tmp_path, fake_server):
    def responder(body):
        if " caption " not in user_text(body) or "for this image" not in user_text(body):
            return "A description."
        temperature = body["temperature"]
        return "Always the same caption." if temperature < 0.9 else f"A caption written at {temperature:.1f}."

    fake_server.responder = responder
    config = data.build_config(tmp_path / "out", [{"type": "folder", "root": str(
        data.class_folders(tmp_path / "AID", {"forest": 1}))}], data.openai_backend(fake_server.base_url, "m"),
        perspectives=(), captions=[{"name": "short", "words": 8, "count": 3}],
        quality={"duplicates": "drop", "length": "off"})
    config["integration"]["temperature"] = 0.7
    summary = build_dataset(BuildConfig.from_dict(config))
    captions = {s: t for (_, s), t in outputs(tmp_path / "out" / "manifest.sqlite").items() if s.startswith("caption")}
    assert captions == {"caption:short-1": "Always the same caption.", "caption:short-2": "A caption written at 1.0.",
                        "caption:short-3": "A caption written at 1.3."}
    errors = query(tmp_path / "out" / "manifest.sqlite",
                   "SELECT stage, error, output FROM attempts WHERE status = 'error' ORDER BY id")
    assert errors == [
        ("caption:short-2", "identical to caption:short-1; asked again warmer", "Always the same caption."),
        ("caption:short-3", "identical to caption:short-1; asked again warmer", "Always the same caption."),
        ("caption:short-3", "identical to caption:short-2; asked again warmer", "A caption written at 1.0."),
    ]
    assert summary.verdicts == {"keep": 3}

    # a server that never varies: the slot is kept after its retries and the duplicate check drops it
    fake_server.responder = lambda body: "A description." if "for this image" not in user_text(body) else "Same."
    config["output"] = str(tmp_path / "out2")
    summary = build_dataset(BuildConfig.from_dict(config))
    assert summary.captions == 3 and summary.verdicts == {"keep": 1, "drop": 2}


def test_relay_chain_perspectives_on_their_own_backends_and_what_integration_sees(tmp_path):
    counter = iter(range(10**6))

    def echo(body):  # a unique, traceable text per request
        return f"{body['model']} text {next(counter)}."

    after = tmp_path / "prompts" / "after_relay.yaml"
    after.parent.mkdir()
    after.write_text("name: refine\nkind: perspective\nplaceholders: [relay]\n"
                     "user: |\n  Given this description: {relay}\n  Name the land cover.\n")
    with FakeChatServer(responder=echo) as qwen, FakeChatServer(responder=echo) as intern:
        config = data.build_config(tmp_path / "out", [{"type": "folder", "root": str(
            data.class_folders(tmp_path / "AID", {"forest": 1, "river": 1}))}],
            data.openai_backend(qwen.base_url, "qwen"), data.openai_backend(qwen.base_url, "llm"))
        config["backends"]["internvl"] = data.openai_backend(intern.base_url, "internvl")
        config["relay"] = {"chain": ["mllm", "internvl"], "max_tokens": 24}
        config["perspectives"] = [{"prompt": "scene", "backend": "mllm"}, {"prompt": "objects", "backend": "internvl"},
                                  {"prompt": str(after), "backend": "internvl"}]
        summary = build_dataset(BuildConfig.from_dict(config))
    assert summary.status == "completed"
    manifest = tmp_path / "out" / "manifest.sqlite"
    done = outputs(manifest)
    # each step went to its configured backend: two servers, two logs
    assert {b["model"] for b in qwen.requests} == {"qwen", "llm"} and {b["model"] for b in intern.requests} == {"internvl"}
    writers = dict(query(manifest, "SELECT DISTINCT o.stage, a.backend || '/' || a.model FROM outputs o "
                                   "JOIN attempts a ON a.id = o.attempt_id WHERE o.stage != 'rules'"))
    assert writers == {"relay": "mllm/qwen", "relay:2": "internvl/internvl", "perspective:scene": "mllm/qwen",
                       "perspective:objects": "internvl/internvl", "perspective:refine": "internvl/internvl",
                       "caption:short": "llm/llm", "caption:long": "llm/llm"}
    for key in ("AID/forest/forest_0.png", "AID/river/river_0.png"):
        first, final = done[(key, "relay")], done[(key, "relay:2")]
        # the chain's second request holds the first model's text, and the image
        chained = [b for b in intern.requests if first in user_text(b)]
        assert len(chained) == 1 and has_image(chained[0]) and "Another model described the image" in user_text(chained[0])
        # the {relay} perspective saw the chain's final text
        refine = [b for b in intern.requests if f"Given this description: {final}" in user_text(b)]
        assert len(refine) == 1
        # every integration request of this image holds the relay's text and every perspective's text
        texts = [final] + [done[(key, f"perspective:{p}")] for p in ("scene", "objects", "refine")]
        integration = [b for b in qwen.requests if b["model"] == "llm" and final in user_text(b)]
        assert len(integration) == 2
        for body in integration:
            assert all(t in user_text(body) for t in texts), user_text(body)
    status = rsvlm("dataset", "status", str(tmp_path / "out"), "--json")
    stages = {r["stage"]: r["written_by"] for r in json.loads(status.stdout)["manifests"][0]["stages"]}
    assert stages["relay:2"] == {"backend": "internvl", "model": "internvl"}
    export_dataset(tmp_path / "out", "jsonl")
    line = json.loads((tmp_path / "out" / "export" / "captions.jsonl").read_text().splitlines()[0])
    assert line["relay_chain"] == [done[(line["key"], "relay")], done[(line["key"], "relay:2")]]
    assert line["relay"] == done[(line["key"], "relay:2")]
    assert line["written_by"]["relay:2"] == "internvl (internvl)" and line["written_by"]["caption:short"] == "llm (llm)"


def test_only_whole_replies_become_outputs(tmp_path, fake_server):
    def responder(body):
        text, tokens = user_text(body), body["max_tokens"]
        if " caption " in text and "for this image" in text:
            length = re.search(r"Write (\w+) caption", text).group(1)
            return {"content": f"<think>Which {tokens} words?</think> A {length} caption from the model."}
        for scene, reply in SCENARIOS.items():
            if f"classified as {scene}." in text:
                return reply(tokens)
        raise AssertionError(text)

    SCENARIOS = {  # noqa: N806 - read by the responder above
        "forest": lambda tokens: {"content": "A cut off desc", "finish_reason": "length"} if tokens < 40 else
        "A forest description that needed more tokens.",
        "river": lambda tokens: {"content": "A river that never ends", "finish_reason": "length"},
        "harbor": lambda tokens: "A harbor seen from above. <think>but wait, is that a ship",
        "desert": lambda tokens: {"content": "<think>Dunes. Dunes? Let me count the dunes"},
        "beach": lambda tokens: {"content": None},
        "farmland": lambda tokens: {"content": "", "reasoning_content": "Fields, maybe wheat"},
    }
    fake_server.responder = responder
    config = data.build_config(tmp_path / "out", [{"type": "folder", "root": str(
        data.class_folders(tmp_path / "AID", dict.fromkeys(SCENARIOS, 1)))}],
        data.openai_backend(fake_server.base_url, "m", retries=2), perspectives=())
    config["relay"]["max_tokens"] = 24
    summary = build_dataset(BuildConfig.from_dict(config))
    manifest = tmp_path / "out" / "manifest.sqlite"
    done = outputs(manifest)
    assert done[("AID/forest/forest_0.png", "relay")] == "A forest description that needed more tokens."
    assert done[("AID/harbor/harbor_0.png", "relay")] == "A harbor seen from above."
    assert {t for (_, s), t in done.items() if s.startswith("caption")} == {"A short caption from the model.",
                                                                             "A long caption from the model."}
    assert summary.failed_units == 4
    relay_tokens = [b["max_tokens"] for b in fake_server.requests if "classified as river." in user_text(b)]
    assert relay_tokens == [24, 48]  # asked once more with twice the tokens, then failed
    export_dataset(tmp_path / "out", "jsonl")
    exported = (tmp_path / "out" / "export" / "captions.jsonl").read_text()
    assert "<think>" not in exported and "cut off" not in exported and "never ends" not in exported
    status = rsvlm("dataset", "status", str(tmp_path / "out"))
    assert status.returncode == 0, status.stderr
    assert "failed (4, retried on the next build):" in status.stdout
    assert "by reason: content null 1, reasoning only 2, truncated 1" in status.stdout
    assert ("AID/river/river_0.png relay: truncated: the reply was cut off at max_tokens (finish_reason \"length\") "
            "(48 tokens)") in status.stdout
    assert "AID/beach/beach_0.png relay: content null: the reply has no message content" in status.stdout
    assert "AID/farmland/farmland_0.png relay: reasoning only: the reply has reasoning_content and no content; " \
           "raise max_tokens" in status.stdout
    assert "AID/desert/desert_0.png relay: reasoning only: the reply has a <think> block and no answer" in status.stdout
    attempts = dict(query(manifest, "SELECT i.key, COUNT(*) FROM attempts a JOIN images i ON i.id = a.image_id "
                                    "WHERE a.stage = 'relay' GROUP BY i.key"))
    assert attempts["AID/beach/beach_0.png"] == 1 and attempts["AID/desert/desert_0.png"] == 1  # not retried


def test_accepted_outputs_are_flushed_to_disk_in_groups(tmp_path, fake_server):
    from rs_vlm_app.mpgi.manifest import Manifest

    statements: list[str] = []
    real_init = Manifest.__init__

    def tracing_init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        self.db.set_trace_callback(statements.append)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Manifest, "__init__", tracing_init)
        config = data.build_config(tmp_path / "out", [{"type": "folder", "root": str(
            data.class_folders(tmp_path / "AID", {"forest": 4}))}],
            data.openai_backend(fake_server.base_url, "m", concurrency=8), perspectives=())
        summary = build_dataset(BuildConfig.from_dict(config))
    assert summary.status == "completed"
    assert "PRAGMA synchronous = NORMAL" in statements  # bookkeeping commits need no flush of their own
    # every output is inserted inside a FULL (fsynced) transaction
    mode, inserted, flushes = None, 0, 0
    for sql in statements:
        if sql.startswith("PRAGMA synchronous"):
            mode = sql.rsplit(" ", 1)[1]
            flushes += mode == "FULL"
        elif sql.startswith("INSERT INTO outputs") and "'rules'" not in sql:  # ingest is redone if lost
            assert mode == "FULL", sql
            inserted += sql.count("'caption:") + sql.count("'relay'")  # one statement holds many rows
    assert inserted == 4 * 3  # relay and 2 captions per image
    assert query(tmp_path / "out" / "manifest.sqlite", "PRAGMA journal_mode") == [("wal",)]
    assert flushes < 4 * 3  # replies arriving together share a flush
