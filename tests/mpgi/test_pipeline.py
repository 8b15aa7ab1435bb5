"""The build with a fake endpoint: bad input goes on, cancel, lock, shards and merge, georeferenced input."""

from __future__ import annotations

import base64
import io
import itertools
import json
import re
import shutil

import pytest
from PIL import Image

from rs_vlm_app.errors import Cancelled, UserError
from rs_vlm_app.mpgi import Shard, build_dataset, export_dataset, merge_shards
from rs_vlm_app.mpgi.pipeline import build_lock
from tests.conftest import SAMPLES
from tests.mpgi import data
from tests.mpgi.fakechat import has_image, user_text
from tests.mpgi.helpers import folder_config, ok_attempts_per_unit, outputs, query, rsvlm


def test_bad_input_is_one_line_each_and_the_build_goes_on(tmp_path, fake_server):
    coco = data.coco_dataset(tmp_path / "dior", [
        {"file_name": "good.png", "size": (100, 80), "boxes": [(1, 10, 10, 20, 10), (1, 300, 300, 10, 10)]},
        {"file_name": "missing.png", "boxes": [(1, 10, 10, 5, 5)], "make": False},
        {"file_name": "broken.png", "size": (100, 80)},
    ], {1: "airplane"})
    (tmp_path / "dior" / "images" / "broken.png").write_bytes(b"\x89PNG but not really")
    config = data.build_config(tmp_path / "out", [
        {"type": "coco", "name": "dior", "annotations": str(coco), "images": str(tmp_path / "dior" / "images")}],
        data.openai_backend(fake_server.base_url, "fake"), perspectives=())
    config_path = data.write_config(tmp_path / "build.yaml", config)
    result = rsvlm("dataset", "build", str(config_path))
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("rsvlm: warning: ")]
    images = tmp_path / "dior" / "images"
    assert warnings == [
        f"rsvlm: warning: {coco}: image 'good.png' (id 1), annotation 2: airplane box (300, 300)-(310, 310) lies "
        "outside the 100x80 image; ignored",
        f"rsvlm: warning: {coco}: image 'missing.png' (id 2): image file {images / 'missing.png'} not found; "
        "its 1 boxes are skipped",
        f"rsvlm: warning: {images / 'broken.png'}: cannot read image (cannot identify image file "
        f"'{images / 'broken.png'}'); skipped",
    ]
    assert {key for key, _ in outputs(tmp_path / "out" / "manifest.sqlite")} == {"dior/good.png"}
    assert outputs(tmp_path / "out" / "manifest.sqlite")[("dior/good.png", "rules")].startswith(
        "The image contains one airplane.")
    status = rsvlm("dataset", "status", str(tmp_path / "out"))
    assert "images: 1 ingested, 2 input errors (skipped), 1 input warnings (corrected)" in status.stdout
    for line in warnings:
        severity = "warning" if "ignored" in line else "error"
        assert f"  {severity}: {line.removeprefix('rsvlm: warning: ')}" in status.stdout


def test_a_prompt_with_a_missing_placeholder_stops_the_build_before_it_starts(tmp_path, fake_server):
    prompt = tmp_path / "my_relay.yaml"
    prompt.write_text("placeholders: [metadata]\nuser: 'Describe this image. {metadata}'\n")
    config = folder_config(tmp_path, fake_server.base_url, images=1).to_dict()
    config["relay"]["prompt"] = str(prompt)
    result = rsvlm("dataset", "build", str(data.write_config(tmp_path / "build.yaml", config)))
    assert result.returncode == 2
    assert result.stderr.strip() == (f"rsvlm: error: {prompt}: a relay prompt must use the placeholder {{facts}} (the "
                                     "rule facts it relays to the model); add it to 'user' and to 'placeholders'")
    assert not fake_server.requests and not (tmp_path / "out" / "manifest.sqlite").exists()


class CancelAfter:
    """A reporter that asks to stop once ``n`` descriptions are done."""

    def __init__(self, n: int):
        self.n = n
        self.stop = False
        self.events: list[tuple] = []

    def progress(self, stage, done, total=None):
        self.events.append((stage, done, total))
        if stage == "descriptions" and done >= self.n:
            self.stop = True

    def log(self, message, level="info"):
        pass

    def cancel_requested(self):
        return self.stop


def test_cancel_stops_at_the_next_image_and_resumes_cleanly(tmp_path, fake_server):
    config = folder_config(tmp_path, fake_server.base_url, images=8)
    reporter = CancelAfter(3)
    fake_server.delay_s = 0.2  # a model's pace: the cancel (looked at every 0.2 s) comes mid-build
    with pytest.raises(Cancelled):
        build_dataset(config, reporter=reporter)
    fake_server.delay_s = 0.0
    assert query(config.manifest_path, "SELECT status FROM runs") == [("cancelled",)]
    partial = outputs(config.manifest_path)
    assert 3 <= sum(stage != "rules" for _, stage in partial) < 8 * 5
    summary = build_dataset(config)
    assert summary.status == "completed" and summary.captions == 16
    assert outputs(config.manifest_path).items() >= partial.items()
    assert set(ok_attempts_per_unit(config.manifest_path).values()) == {1}
    assert ("ingest", 8, 8) in reporter.events and ("descriptions", 0, 24) in reporter.events


def test_one_build_per_manifest_at_a_time(tmp_path):
    manifest = tmp_path / "manifest.sqlite"
    with build_lock(manifest), pytest.raises(UserError, match="another build is running on this manifest"), \
            build_lock(manifest):
        pass
    with build_lock(manifest):  # released
        pass


def test_shards_build_separately_and_merge(tmp_path, fake_server):
    counter = itertools.count()  # next() is atomic: every other reply is unique
    fake_server.responder = lambda body: ("The same short caption." if "Write short caption" in user_text(body)
                                          else f"Unique text {next(counter)}.")
    config = folder_config(tmp_path, fake_server.base_url, images=12, perspectives=(),
                           quality={"duplicates": "drop", "length": "off"})
    for i in (1, 2, 3):
        build_dataset(config.with_shard(Shard(i, 3)))
    shard_files = sorted(config.output.glob("manifest-shard-*-of-3.sqlite"))
    assert [p.name for p in shard_files] == [f"manifest-shard-{i}-of-3.sqlite" for i in (1, 2, 3)]
    keys = [{k for k, _ in outputs(p)} for p in shard_files]
    assert sum(len(k) for k in keys) == 12 and len(set().union(*keys)) == 12
    # export refuses an unmerged folder, and says what to do
    with pytest.raises(UserError, match="holds 3 shard manifests but no merged manifest; run `rsvlm dataset merge"):
        export_dataset(config.output, "csv")
    # a missing shard is named
    moved = shard_files[1].rename(tmp_path / shard_files[1].name)
    with pytest.raises(UserError, match="shards 2/3 are missing"):
        merge_shards(config.output)
    summary = merge_shards(config.output, [moved])
    assert summary.images == 12 and summary.captions == 24
    # each shard kept one copy of the shared short caption; across shards only the first survives
    assert summary.cross_shard_duplicates == 2
    merged = config.output / "manifest.sqlite"
    kept = query(merged, "SELECT COUNT(*) FROM outputs WHERE stage = 'caption:short' AND verdict = 'keep'")[0][0]
    assert kept == 1
    assert set(ok_attempts_per_unit(merged).values()) == {1}
    assert len(ok_attempts_per_unit(merged)) == 12 * 4
    status = json.loads(rsvlm("dataset", "status", str(config.output), "--json").stdout)
    assert [m["manifest"].rsplit("/", 1)[1] for m in status["manifests"]] == [
        "manifest.sqlite", "manifest-shard-1-of-3.sqlite", "manifest-shard-3-of-3.sqlite"]
    assert status["manifests"][0]["images"] == 12
    assert len(status["manifests"][0]["merged_from"]) == 3
    csv_rows = export_dataset(config.output, "csv").captions
    assert csv_rows == 12 + 1


def test_merge_refuses_shards_of_different_builds_and_an_unsharded_manifest(tmp_path, fake_server):
    config = folder_config(tmp_path, fake_server.base_url, images=4, perspectives=())
    build_dataset(config.with_shard(Shard(1, 2)))
    other = folder_config(tmp_path, fake_server.base_url, images=4, perspectives=("scene",))
    build_dataset(other.with_shard(Shard(2, 2)))
    with pytest.raises(UserError, match="was built with different prompt digests"):
        merge_shards(config.output)
    build_dataset(other.with_shard(Shard(1, 2)))  # now both shards of `other`
    build_dataset(other)  # and an unsharded build in the same folder
    with pytest.raises(UserError, match="already holds a manifest from an unsharded build"):
        merge_shards(config.output)
    assert merge_shards(config.output, force=True).images == 4


def test_a_georeferenced_image_keeps_its_footprint_and_is_sent_as_rgb(tmp_path, fake_server):
    scenes = tmp_path / "scenes" / "farmland"
    scenes.mkdir(parents=True)
    shutil.copy(SAMPLES / "naip_2020_5m.tif", scenes / "naip.tif")
    config = data.build_config(tmp_path / "out", [{"type": "folder", "root": str(tmp_path / "scenes")}],
                               data.openai_backend(fake_server.base_url, "fake"), perspectives=())
    config["image"] = {"max_side": 256, "format": "png"}
    from rs_vlm_app.mpgi import BuildConfig

    build_dataset(BuildConfig.from_dict(config))
    sent = [body for body in fake_server.requests if has_image(body)]
    assert len(sent) == 1
    url = sent[0]["messages"][-1]["content"][1]["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    picture = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert picture.mode == "RGB" and picture.size == (256, 198)
    relay = user_text(sent[0])
    assert "- The image covers about 4.7 km by 3.6 km on the ground." in relay
    assert "- location: 47.0204 N, 99.1548 W" in relay
    export_dataset(tmp_path / "out", "jsonl")
    line = json.loads((tmp_path / "out" / "export" / "captions.jsonl").read_text())
    assert line["footprint"]["crs"] == "EPSG:26914"
    assert line["footprint"]["bounds"] == [485899.0, 5205631.0, 490569.0, 5209246.0]
    export_dataset(tmp_path / "out", "wds", wds_layout="per-image")
    import tarfile

    with tarfile.open(tmp_path / "out" / "export" / "wds" / "shard-000000.tar") as tar:
        assert tar.getnames() == ["000000001.png", "000000001.txt", "000000001.json"]
        png = Image.open(io.BytesIO(tar.extractfile("000000001.png").read()))
        assert png.size == (934, 723) and png.mode == "RGB"
        assert len(tar.extractfile("000000001.txt").read().decode().splitlines()) == 2


def test_concurrency_is_bounded_per_backend(tmp_path, fake_server):
    fake_server.delay_s = 0.05
    backend = data.openai_backend(fake_server.base_url, "fake", concurrency=3)
    config = data.build_config(tmp_path / "out", [{"type": "folder", "root": str(
        data.class_folders(tmp_path / "AID", {"forest": 10}))}], backend, perspectives=("scene", "objects"))
    config["integration"]["backend"] = "mllm"  # every stage on one backend of 3 slots
    from rs_vlm_app.mpgi import BuildConfig

    summary = build_dataset(BuildConfig.from_dict(config))
    assert summary.requests == 10 * 5
    assert fake_server.max_in_flight == 3


def test_each_stage_on_its_own_endpoint(tmp_path, fake_server):
    from tests.mpgi.fakechat import FakeChatServer

    def second_responder(body):
        length = re.search(r"Write (\w+) caption", user_text(body)).group(1)
        return f"A {length} caption from the second server."

    with FakeChatServer(responder=second_responder) as second:
        config = data.build_config(tmp_path / "out", [{"type": "folder", "root": str(
            data.class_folders(tmp_path / "AID", {"forest": 2}))}], data.openai_backend(fake_server.base_url, "vl-model"),
            data.openai_backend(second.base_url, "text-model"))
        from rs_vlm_app.mpgi import BuildConfig

        build_dataset(BuildConfig.from_dict(config))
    assert len(fake_server.requests) == 2 * 3 and len(second.requests) == 2 * 2
    assert {b["model"] for b in fake_server.requests} == {"vl-model"}
    assert all(has_image(b) for b in fake_server.requests)
    assert {b["model"] for b in second.requests} == {"text-model"}
    assert not any(has_image(b) for b in second.requests)
    captions = query(tmp_path / "out" / "manifest.sqlite", "SELECT DISTINCT text FROM outputs WHERE stage LIKE 'caption:%'")
    assert sorted(captions) == [("A long caption from the second server.",), ("A short caption from the second server.",)]


def test_a_fixed_or_added_image_joins_the_next_build(tmp_path, fake_server):
    coco = data.coco_dataset(tmp_path / "dior", [
        {"file_name": "a.png", "size": (60, 40), "boxes": [(1, 5, 5, 10, 10)]},
        {"file_name": "late.png", "size": (60, 40), "boxes": [(1, 5, 5, 10, 10)], "make": False},
    ], {1: "ship"})
    config = data.build_config(tmp_path / "out", [
        {"type": "coco", "name": "dior", "annotations": str(coco), "images": str(tmp_path / "dior" / "images")}],
        data.openai_backend(fake_server.base_url, "fake"), perspectives=())
    from rs_vlm_app.mpgi import BuildConfig

    config = BuildConfig.from_dict(config)
    first = build_dataset(config)
    assert (first.images, first.inputs_skipped) == (1, 1)
    assert query(config.manifest_path, "SELECT severity FROM issues") == [("error",)]
    data.make_image(tmp_path / "dior" / "images" / "late.png", (60, 40))
    second = build_dataset(config)
    assert (second.images, second.images_added, second.inputs_skipped, second.status) == (2, 1, 0, "completed")
    assert query(config.manifest_path, "SELECT COUNT(*) FROM issues")[0][0] == 0
