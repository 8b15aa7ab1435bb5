"""What a front end reads of a build while it runs: progress counts, latest captions, one image's
outputs, source image counts, and the start-up check of one backend."""

from __future__ import annotations

import socket

import pytest

from rs_vlm_app.errors import UserError
from rs_vlm_app.mpgi.backends.probe import probe_backend
from rs_vlm_app.mpgi.browse import build_progress, count_images, image_outputs, latest_images
from rs_vlm_app.mpgi.config import CocoSource, FolderSource, OpenAIBackend
from rs_vlm_app.mpgi.pipeline import build_dataset
from tests.mpgi import data
from tests.mpgi.helpers import folder_config


def test_progress_latest_images_and_one_images_outputs(fake_server, tmp_path):
    config = folder_config(tmp_path, fake_server.base_url, images=3)
    assert build_progress(config.manifest_path).images == 0  # no manifest yet: nothing, no error
    build_dataset(config)
    progress = build_progress(config.manifest_path)
    assert (progress.images, progress.complete, progress.failed) == (3, 3, 0)
    assert progress.run_status == "completed" and progress.requests_recent == len(fake_server.requests)
    latest = latest_images(config.manifest_path, limit=2)
    assert len(latest) == 2 and len({i.key for i in latest}) == 2
    newest = latest[0]
    assert [c.slot for c in newest.captions] == ["short", "long"]
    assert all(c.text.startswith("Reply ") and c.verdict == "keep" and c.verdict_text == "keep" for c in newest.captions)
    detail = image_outputs(config.manifest_path, newest.key)
    assert [stage for stage, _ in detail.descriptions] == ["relay", "perspective:scene", "perspective:objects"]
    assert detail.facts and detail.path.is_file() and detail.scene_class in ("forest", "river")
    assert image_outputs(config.manifest_path, "no/such.png") is None


def test_failed_units_are_counted_and_named(fake_server, tmp_path):
    config = folder_config(tmp_path, fake_server.base_url, images=2)
    fake_server.rule = lambda body, n: ("status", 400) if "scene" in str(body.get("messages", "")).lower() else None
    build_dataset(config)
    progress = build_progress(config.manifest_path)
    assert progress.images == 2 and progress.failed == 2 and progress.complete == 0
    image = image_outputs(config.manifest_path, latest_key(config.manifest_path))
    assert image.captions == () and any("400" in error for _, error in image.failures)


def latest_key(manifest):
    from tests.mpgi.helpers import query

    return query(manifest, "SELECT key FROM images ORDER BY id LIMIT 1")[0][0]


def test_count_images_of_folder_and_coco_sources(tmp_path):
    data.class_folders(tmp_path / "AID", {"forest": 3, "river": 2})
    assert count_images(FolderSource(tmp_path / "AID")) == (5, 0)
    assert count_images(FolderSource(tmp_path / "AID"), cap=2) == (2, 0)
    (tmp_path / "empty").mkdir()
    assert count_images(FolderSource(tmp_path / "empty")) == (0, 0)
    annotations = data.coco_dataset(tmp_path / "coco", [{"file_name": "a.png", "boxes": [(1, 2, 2, 10, 10)]},
                                                        {"file_name": "b.png"}], {1: "plane"})
    assert count_images(CocoSource(annotations, tmp_path / "coco" / "images")) == (2, 0)
    with pytest.raises(UserError, match="not found"):
        count_images(FolderSource(tmp_path / "missing"))


def test_probe_shows_the_answer_or_says_the_endpoint_is_down(fake_server):
    answer = probe_backend("server", OpenAIBackend(base_url=fake_server.base_url, model="fake"))
    assert answer.reply == "OK" and answer.seconds > 0 and fake_server.base_url in answer.text()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(UserError, match="not reachable"):
        probe_backend("down", OpenAIBackend(base_url=f"http://127.0.0.1:{port}/v1", model="m", timeout_s=2))


def test_prompt_listing_of_the_shipped_set_and_a_users_folder(tmp_path):
    from rs_vlm_app.mpgi.prompts import list_prompts

    shipped = {name: description for name, description, _ in list_prompts("perspective")}
    assert {"scene", "objects", "spatial", "context"} <= set(shipped) and all(shipped.values())
    assert "relay" in [name for name, _, _ in list_prompts("relay")]
    (tmp_path / "perspectives").mkdir()
    (tmp_path / "perspectives" / "water.yaml").write_text(
        "kind: perspective\ndescription: Water bodies.\nuser: Describe the water.\n")
    (tmp_path / "perspectives" / "broken.yaml").write_text("user: [unclosed\n")
    (tmp_path / "perspectives" / "wrong.yaml").write_text("kind: integration\nuser: x\n")
    assert list_prompts("perspective", tmp_path) == [("water", "Water bodies.", tmp_path / "perspectives" / "water.yaml")]
