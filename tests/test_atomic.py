"""Atomic outputs are durable: the data is flushed before the rename, the folder after it."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from rs_vlm_app import atomic

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/fd")


@pytest.fixture
def journal(monkeypatch):
    """Every fsync (the path it flushed) and every rename, in order."""
    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src, dst):
        events.append(("rename", str(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "fsync", fsync)
    monkeypatch.setattr(atomic.os, "replace", replace)
    return events


def test_a_file_is_flushed_then_renamed_then_its_folder_flushed(tmp_path, journal):
    target = tmp_path / "out" / "result.json"
    atomic.write_text_atomic(target, "{}")
    assert target.read_text() == "{}"
    kinds = [kind for kind, _ in journal]
    assert kinds == ["fsync", "rename", "fsync"]
    assert Path(journal[0][1]).parent == target.parent and journal[0][1] != str(target)  # the temporary file
    assert journal[1][1] == str(target)
    assert journal[2][1] == str(target.parent)


def test_a_folder_is_flushed_file_by_file_before_it_replaces_the_old_one(tmp_path, journal):
    target = tmp_path / "shards"
    target.mkdir()
    (target / "old.tar").write_text("old")
    with atomic.atomic_dir(target) as tmp:
        (tmp / "a.tar").write_text("a")
        (tmp / "sub").mkdir()
        (tmp / "sub" / "b.tar").write_text("b")
    assert sorted(p.name for p in target.rglob("*")) == ["a.tar", "b.tar", "sub"]
    flushed = [Path(p).name for kind, p in journal[:-2]]
    assert {"a.tar", "b.tar"} <= set(flushed) and journal[-2] == ("rename", str(target))
    assert journal[-1] == ("fsync", str(tmp_path))


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, journal):
    target = tmp_path / "keep.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic.atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == "old" and list(tmp_path.iterdir()) == [target]
    assert not any(kind == "rename" for kind, _ in journal)
