"""The manifest writer thread: group commits, what is on disk when a reply counts as done, errors, and
a build killed with SIGKILL in the middle of its caption stage (through the writer) resuming cleanly."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest

from rs_vlm_app.mpgi.manifest import Manifest
from rs_vlm_app.mpgi.records import ImageRecord
from rs_vlm_app.mpgi.writer import ManifestWriter
from tests.mpgi import data
from tests.mpgi.helpers import kill_build_mid_captions, ok_attempts_per_unit, outputs, query, rsvlm


def manifest_with_images(path: Path, count: int) -> list[int]:
    with Manifest(path, create=True) as manifest:
        return [manifest.add_image(ImageRecord(f"src/{i}.png", "src", Path(f"{i}.png"), 8, 8, None, None, {}),
                                   [f"fact {i}"]) for i in range(count)]


def on_disk(path: Path, sql: str) -> list[tuple]:
    """What a new connection (another process, or the build after a kill) reads."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        return db.execute(sql).fetchall()


def test_replies_are_on_disk_when_they_count_and_share_flushes(tmp_path):
    path = tmp_path / "manifest.sqlite"
    images = manifest_with_images(path, 40)
    with Manifest(path) as manifest:
        first = manifest.next_attempt_id()

    async def build():
        writer = ManifestWriter(path, flush_interval_s=0.05)
        await writer.start()
        waits = []
        for i, image in enumerate(images):
            writer.begin((first + i, image, "caption:short", 1, None, "b", "m", "h", time.time()))
        writer.end(("error", "HTTP 500", None, time.time(), 0.1, first))  # the first call failed ...
        for i, image in enumerate(images[1:], start=1):  # ... the others came back
            waits.append(writer.accept((first + i, image, "caption:short", f"caption {i}", time.time(), 0.05)))
            if i == 20:  # a reply is counted only once it is on disk
                await waits[0]
                assert on_disk(path, f"SELECT text FROM outputs WHERE attempt_id = {first + 1}") == [("caption 1",)]
        await asyncio.gather(*waits)
        rows = on_disk(path, "SELECT COUNT(*) FROM outputs WHERE stage = 'caption:short'")
        await writer.close()
        return writer, rows

    writer, rows = asyncio.run(build())
    assert rows == [(39,)] and writer.error is None
    assert writer.commits < 39  # replies arriving together share a commit (and its flush)
    statuses = dict(on_disk(path, "SELECT status, COUNT(*) FROM attempts WHERE stage != 'rules' GROUP BY status"))
    assert statuses == {"ok": 39, "error": 1}


def test_bookkeeping_alone_is_committed_without_waiting_for_a_reply(tmp_path):
    path = tmp_path / "manifest.sqlite"
    image, = manifest_with_images(path, 1)

    async def build():
        writer = ManifestWriter(path, bookkeeping_s=0.05)
        await writer.start()
        writer.begin((100, image, "relay", 1, None, "b", "m", "h", time.time()))
        for _ in range(100):
            await asyncio.sleep(0.02)
            if on_disk(path, "SELECT status FROM attempts WHERE id = 100"):
                break
        rows = on_disk(path, "SELECT status FROM attempts WHERE id = 100")
        await writer.close()
        return rows

    assert asyncio.run(build()) == [("running",)]


def test_a_failed_write_fails_the_waiting_replies_and_stops_the_writer(tmp_path):
    path = tmp_path / "manifest.sqlite"
    image, = manifest_with_images(path, 1)

    async def build():
        writer = ManifestWriter(path)
        await writer.start()
        writer.begin((100, image, "relay", 1, None, "b", "m", "h", time.time()))
        good = writer.accept((100, image, "relay", "a description", time.time(), 0.1))
        await good
        writer.begin((101, image, "relay:2", 1, None, "b", "m", "h", time.time()))
        bad = writer.accept((101, image, "relay", "the same unit again", time.time(), 0.1))  # outputs' key
        with pytest.raises(sqlite3.IntegrityError):
            await bad
        with pytest.raises(sqlite3.IntegrityError):
            writer.begin((102, image, "relay:3", 1, None, "b", "m", "h", time.time()))
        await writer.close()
        return writer

    writer = asyncio.run(build())
    assert isinstance(writer.error, sqlite3.IntegrityError)
    assert on_disk(path, "SELECT stage, text FROM outputs WHERE stage != 'rules'") == [("relay", "a description")]
    assert on_disk(path, "SELECT COUNT(*) FROM attempts WHERE id = 101") == [(0,)]  # that group was rolled back


def test_kill_9_mid_captions_resumes_with_every_unit_done_exactly_once(tmp_path, fake_server):
    fake_server.delay_s = 0.03
    images = 16
    root = data.class_folders(tmp_path / "AID", {"forest": images // 2, "river": images // 2})
    config = data.build_config(tmp_path / "out", [{"type": "folder", "root": str(root)}],
                               data.openai_backend(fake_server.base_url, "m", concurrency=4), perspectives=("scene",))
    config_path = data.write_config(tmp_path / "build.yaml", config)
    manifest = tmp_path / "out" / "manifest.sqlite"
    kill_build_mid_captions(config_path, manifest, 6, poll_s=0.02)
    before = outputs(manifest)
    assert 6 <= sum(stage.startswith("caption:") for _, stage in before) < images * 2
    interrupted_before = query(manifest, "SELECT COUNT(*) FROM attempts WHERE status = 'running'")[0][0]

    resumed = rsvlm("dataset", "build", str(config_path))
    assert resumed.returncode == 0, resumed.stderr
    after = outputs(manifest)
    assert after.items() >= before.items()  # nothing accepted was lost or rewritten
    stages = ("relay", "perspective:scene", "caption:short", "caption:long")
    assert set(after) == {(key, stage) for key in {k for k, _ in after} for stage in ("rules", *stages)}
    assert len({key for key, _ in after}) == images
    per_unit = ok_attempts_per_unit(manifest)  # every unit answered exactly once, over both runs
    assert len(per_unit) == images * (1 + len(stages)) and set(per_unit.values()) == {1}
    numbers = query(manifest, "SELECT image_id, stage, attempt FROM attempts")
    assert len(numbers) == len(set(numbers))  # attempt numbers go on counting after the kill
    assert query(manifest, "SELECT COUNT(*) FROM attempts WHERE status = 'running'") == [(0,)]
    interrupted = query(manifest, "SELECT COUNT(*) FROM attempts WHERE status = 'interrupted'")[0][0]
    assert interrupted == interrupted_before  # the calls in flight at the kill are marked, not lost
    assert query(manifest, "SELECT status FROM runs ORDER BY id") == [("interrupted",), ("completed",)]
