"""`rsvlm models export/import`: weights travel to an air-gapped machine in one verified ZIP."""

from __future__ import annotations

import json
import logging
import shutil
import zipfile

import pytest

from rs_vlm_app import cli, paths
from rs_vlm_app.errors import UserError
from rs_vlm_app.models.bundle import import_bundle
from rs_vlm_app.models.catalogue import get_entry
from rs_vlm_app.models.resolve import find_cached


@pytest.fixture(autouse=True)
def _restore_logging():
    logger = logging.getLogger("rs_vlm_app")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved


@pytest.fixture
def cached(tiny_clip):
    """Two catalogue models' weights in this machine's cache: a tiny real checkpoint and a safetensors file."""
    hqrs = paths.models_cache_dir() / "hqrs-clip" / "HQRS-CLIP.pt"
    hqrs.parent.mkdir(parents=True)
    shutil.copyfile(tiny_clip["checkpoint"], hqrs)
    openai = paths.models_cache_dir() / "openai-vit-b-32" / "open_clip_model.safetensors"
    openai.parent.mkdir(parents=True)
    openai.write_bytes(bytes(range(256)) * 300)
    return {"hqrs-clip": hqrs, "openai-vit-b-32": openai}


def other_machine(tmp_path, monkeypatch):
    monkeypatch.setenv("RSVLM_CACHE_DIR", str(tmp_path / "air-gapped-cache"))
    assert find_cached(get_entry("hqrs-clip")) is None


def test_export_then_import_on_another_machine(tmp_path, monkeypatch, cached, capsys):
    bundle = tmp_path / "bundle.zip"
    assert cli.main(["models", "export", "hqrs-clip", "openai-vit-b-32", "-o", str(bundle)]) == 0
    assert "written:" in capsys.readouterr().out
    with zipfile.ZipFile(bundle) as archive:
        manifest = json.loads(archive.read("manifest.json"))
        assert sorted(archive.namelist()) == ["manifest.json", "models/hqrs-clip/HQRS-CLIP.pt",
                                              "models/openai-vit-b-32/open_clip_model.safetensors"]
    assert [m["name"] for m in manifest["models"]] == ["hqrs-clip", "openai-vit-b-32"]
    other_machine(tmp_path, monkeypatch)
    assert cli.main(["models", "import", str(bundle)]) == 0
    assert capsys.readouterr().out.count(": added ->") == 2
    for name, original in cached.items():
        found = find_cached(get_entry(name))
        assert found is not None and found.read_bytes() == original.read_bytes()
        assert found.parent == paths.models_cache_dir() / name
    assert [i.status for i in import_bundle(bundle)] == ["unchanged", "unchanged"]


def test_a_corrupt_bundle_is_one_line_and_writes_nothing(tmp_path, monkeypatch, cached, capsys):
    bundle = tmp_path / "bundle.zip"
    assert cli.main(["models", "export", "openai-vit-b-32", "hqrs-clip", "-o", str(bundle)]) == 0
    data = bytearray(bundle.read_bytes())
    with zipfile.ZipFile(bundle) as archive:
        info = archive.getinfo("models/hqrs-clip/HQRS-CLIP.pt")
    offset = info.header_offset + 30 + len(info.filename) + len(info.extra) + 1000
    data[offset] ^= 0xFF  # one flipped bit pattern inside the second model's weights
    damaged = tmp_path / "damaged.zip"
    damaged.write_bytes(bytes(data))
    other_machine(tmp_path, monkeypatch)
    assert cli.main(["models", "import", str(damaged)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"rsvlm: error: {damaged}: corrupt model bundle:") and "HQRS-CLIP.pt" in err
    # checked before anything was written: not even the intact first model is in the cache
    assert find_cached(get_entry("openai-vit-b-32")) is None
    truncated = tmp_path / "truncated.zip"
    truncated.write_bytes(bundle.read_bytes()[: len(data) // 2])
    with pytest.raises(UserError, match="not a model bundle: not a readable ZIP file"):
        import_bundle(truncated)


def test_export_needs_the_weights_in_the_cache(tmp_path, capsys):
    assert cli.main(["models", "export", "georsclip-vit-b-32", "-o", str(tmp_path / "b.zip")]) == 2
    err = capsys.readouterr().err
    assert "not in this machine's cache; run `rsvlm models fetch georsclip-vit-b-32` first" in err
    assert not (tmp_path / "b.zip").exists()
    plain = tmp_path / "plain.zip"
    with zipfile.ZipFile(plain, "w") as archive:
        archive.writestr("readme.txt", "hello")
    with pytest.raises(UserError, match="not a model bundle: it has no manifest.json"):
        import_bundle(plain)
