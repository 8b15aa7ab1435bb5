"""Weight resolution: rs-vlm cache, then the Hugging Face cache, then downloads only when allowed.

No test touches the network: downloads use file:// URLs or a replaced hf_hub_download.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from pathlib import Path

import pytest

from rs_vlm_app import paths
from rs_vlm_app.errors import UserError
from rs_vlm_app.models import resolve
from rs_vlm_app.models.catalogue import HubFile, ModelEntry, OpenClipPretrained, UrlFile, UserFile
from rs_vlm_app.models.resolve import expected_path, find_cached, resolve_checkpoint


def entry(source, name="test-model", arch="ViT-B-32") -> ModelEntry:
    return ModelEntry(name=name, family="clip", arch=arch, quick_gelu=False, source=source,
                      description="d", paper="p", license="l")


def fill_hf_cache(repo: str, filename: str, payload: bytes = b"weights") -> Path:
    """Lay a file out as huggingface_hub's cache does (refs/main -> snapshots/REV/FILE)."""
    root = Path(os.environ["HF_HUB_CACHE"]) / f"models--{repo.replace('/', '--')}"
    revision = "0123456789abcdef0123456789abcdef01234567"
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(revision)
    target = root / "snapshots" / revision / filename
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(payload)
    return target


HUB = entry(HubFile("org/repo", "ckpt/model.pt"))


@pytest.fixture(autouse=True)
def reachable_hub(request, monkeypatch):
    """The hub counts as reachable (its client is replaced), except in the unreachable-hub test."""
    if "unreachable_hub" not in request.node.name:
        monkeypatch.setattr(resolve, "check_reachable", lambda url, timeout=None: None)


def test_expected_path_is_in_the_rsvlm_cache():
    assert expected_path(HUB) == paths.models_cache_dir() / "test-model" / "model.pt"


def test_cache_file_wins_over_the_hf_cache():
    in_hf_cache = fill_hf_cache("org/repo", "ckpt/model.pt")
    assert resolve_checkpoint(HUB, allow_download=False) == in_hf_cache
    local = expected_path(HUB)
    local.parent.mkdir(parents=True)
    local.write_bytes(b"local weights")
    assert resolve_checkpoint(HUB, allow_download=False) == local


def test_hf_cache_layout_is_found():
    cached = fill_hf_cache("org/repo", "ckpt/model.pt")
    assert find_cached(HUB) == cached
    assert resolve_checkpoint(HUB, allow_download=False) == cached


def test_empty_cache_file_is_ignored():
    local = expected_path(HUB)
    local.parent.mkdir(parents=True)
    local.write_bytes(b"")
    assert find_cached(HUB) is None


def test_offline_missing_model_is_one_line_saying_where_to_put_it(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError) as err:
        resolve_checkpoint(HUB)
    target = paths.models_cache_dir() / "test-model" / "model.pt"
    assert str(err.value) == (
        f"model 'test-model' is not in the cache and downloads are off (HF_HUB_OFFLINE is set): put model.pt "
        f"from https://huggingface.co/org/repo/blob/main/ckpt/model.pt at {target}, or give that file as the checkpoint"
    )


def test_rsvlm_offline_variable_and_explicit_refusal(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("RSVLM_OFFLINE", "1")
    with pytest.raises(UserError, match=r"downloads are off \(RSVLM_OFFLINE is set\)"):
        resolve_checkpoint(HUB)
    monkeypatch.delenv("RSVLM_OFFLINE")
    with pytest.raises(UserError, match=r"not in the cache and downloads are off \(offline\)"):
        resolve_checkpoint(HUB, allow_download=False)


def test_hub_download_when_allowed(monkeypatch, tmp_path):
    calls = []

    def fake_download(repo_id, filename, revision=None, cache_dir=None, **_kwargs):
        calls.append((repo_id, filename, revision))
        path = tmp_path / "downloaded.pt"
        path.write_bytes(b"weights")
        return str(path)

    monkeypatch.setattr("huggingface_hub.hf_hub_download", fake_download)
    assert resolve_checkpoint(HUB, allow_download=True) == tmp_path / "downloaded.pt"
    assert calls == [("org/repo", "ckpt/model.pt", None)]


def test_failed_download_is_a_one_line_error(monkeypatch):
    def failing(**kwargs):
        raise ConnectionError("Name or service not known\n(more detail)")

    monkeypatch.setattr("huggingface_hub.hf_hub_download", failing)
    with pytest.raises(UserError) as err:
        resolve_checkpoint(HUB, allow_download=True)
    message = str(err.value)
    assert "its download failed (ConnectionError: Name or service not known (more detail))" in message
    assert str(expected_path(HUB)) in message and "give that file as the checkpoint" in message and "\n" not in message


def test_open_clip_source_tries_safetensors_then_bin(monkeypatch, tmp_path):
    calls = []

    def fake_download(repo_id, filename, revision=None, cache_dir=None, **_kwargs):
        calls.append(filename)
        if filename.endswith(".safetensors"):
            raise FileNotFoundError("404")
        (tmp_path / filename).write_bytes(b"weights")
        return str(tmp_path / filename)

    monkeypatch.setattr("huggingface_hub.hf_hub_download", fake_download)
    source = OpenClipPretrained(tag="openai", hf_hub="timm/vit_base_patch32_clip_224.openai/")
    path = resolve_checkpoint(entry(source), allow_download=True)
    assert path == tmp_path / "open_clip_pytorch_model.bin"
    assert calls == ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]


def test_open_clip_source_found_in_hf_cache():
    cached = fill_hf_cache("timm/vit_base_patch32_clip_224.openai", "open_clip_pytorch_model.bin")
    source = OpenClipPretrained(tag="openai", hf_hub="timm/vit_base_patch32_clip_224.openai/")
    assert resolve_checkpoint(entry(source), allow_download=False) == cached


def test_user_file_never_downloads_and_says_where_to_copy_it(monkeypatch):
    monkeypatch.setattr("huggingface_hub.hf_hub_download", lambda **kw: pytest.fail("must not download"))
    user = entry(UserFile("HQRS-CLIP.pt", hint="from the authors"), name="hqrs-clip")
    with pytest.raises(UserError) as err:
        resolve_checkpoint(user, allow_download=True)
    target = paths.models_cache_dir() / "hqrs-clip" / "HQRS-CLIP.pt"
    assert str(err.value) == (f"model 'hqrs-clip' is a file you supply (from the authors) and it is not in the "
                              f"cache: copy it to {target}, or give that file as the checkpoint")


def test_user_file_under_another_name_is_found_when_it_is_the_only_checkpoint():
    user = entry(UserFile("HQRS-CLIP.pt"), name="hqrs-clip")
    folder = paths.models_cache_dir() / "hqrs-clip"
    folder.mkdir(parents=True)
    (folder / "notes.txt").write_text("downloaded from Baidu")
    (folder / "epoch_10.pt").write_bytes(b"weights")
    assert resolve_checkpoint(user) == folder / "epoch_10.pt"
    (folder / "epoch_20.pt").write_bytes(b"weights")
    with pytest.raises(UserError, match="file you supply"):  # ambiguous: never guess between two
        resolve_checkpoint(user)


def make_zip(path: Path, member: str, payload: bytes) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("README.txt", "SkyCLIP")
        zf.writestr(member, payload)
    return path


def test_url_archive_download_extracts_the_member(tmp_path):
    archive = make_zip(tmp_path / "SkyCLIP_ViT_B32_top50pct.zip", "SkyCLIP_ViT_B32_top50pct/epoch_20.pt", b"ckpt")
    sky = entry(UrlFile(url=archive.as_uri(), file="epoch_20.pt", archive_member="epoch_20.pt"), name="sky")
    path = resolve_checkpoint(sky, allow_download=True)
    folder = paths.models_cache_dir() / "sky"
    assert path == folder / "epoch_20.pt" and path.read_bytes() == b"ckpt"
    assert sorted(p.name for p in folder.iterdir()) == ["epoch_20.pt"]  # no archive, no .part left


def test_url_archive_dropped_by_hand_is_extracted_offline(tmp_path):
    sky = entry(UrlFile(url="https://example.invalid/ckpt/Sky.zip", file="epoch_20.pt",
                        archive_member="epoch_20.pt"), name="sky")
    folder = paths.models_cache_dir() / "sky"
    folder.mkdir(parents=True)
    make_zip(folder / "Sky.zip", "Sky/epoch_20.pt", b"ckpt")
    assert resolve_checkpoint(sky, allow_download=False).read_bytes() == b"ckpt"


def test_plain_url_download_checks_the_sha256(tmp_path):
    source_file = tmp_path / "weights.pt"
    source_file.write_bytes(b"0123456789" * 1000)
    good = hashlib.sha256(source_file.read_bytes()).hexdigest()
    ok = entry(UrlFile(url=source_file.as_uri(), file="weights.pt", sha256=good), name="ok")
    assert resolve_checkpoint(ok, allow_download=True).read_bytes() == source_file.read_bytes()

    bad = entry(UrlFile(url=source_file.as_uri(), file="weights.pt", sha256="0" * 64), name="bad")
    with pytest.raises(UserError, match="checksum mismatch"):
        resolve_checkpoint(bad, allow_download=True)
    assert list((paths.models_cache_dir() / "bad").iterdir()) == []  # the .part file is gone


def test_unreachable_url_is_a_download_error(tmp_path):
    gone = entry(UrlFile(url=(tmp_path / "missing.pt").as_uri(), file="missing.pt"), name="gone")
    with pytest.raises(UserError, match=r"'gone' is not in the cache and its download failed"):
        resolve_checkpoint(gone, allow_download=True)


def test_offline_reason(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("RSVLM_OFFLINE", raising=False)
    assert resolve.offline_reason() is None
    monkeypatch.setenv("RSVLM_OFFLINE", "0")
    assert resolve.offline_reason() is None
    monkeypatch.setenv("RSVLM_OFFLINE", "true")
    assert resolve.offline_reason() == "RSVLM_OFFLINE is set"


@pytest.mark.parametrize("endpoint", ["http://127.0.0.1:9", "http://rsvlm-no-such-host.invalid"])
def test_an_unreachable_hub_fails_at_once_without_retries(monkeypatch, endpoint):
    """A closed port (connection refused) or a name that does not resolve: the one-line error comes in
    well under the hub client's retry loop (five retries with back-off: 38 s)."""
    import time

    from rs_vlm_app.models import download

    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(download, "_probed", {})
    calls = []
    monkeypatch.setattr("huggingface_hub.hf_hub_download", lambda **kwargs: calls.append(kwargs))
    started = time.monotonic()
    with pytest.raises(UserError) as err:
        resolve_checkpoint(HUB, allow_download=True)
    message = str(err.value)
    assert "its download failed (" in message and "\n" not in message
    assert ("refused the connection" in message) if "127.0.0.1" in endpoint else ("cannot resolve" in message)
    assert time.monotonic() - started < 5
    assert calls == []  # the hub client was never asked
