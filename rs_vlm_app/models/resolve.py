"""Turn a catalogue entry into a weights file: local cache, then the Hugging Face cache, then download.

The local cache is ``paths.models_cache_dir()/<entry name>/<file name>``; people may put files there
by hand. Downloads happen only when allowed (never when HF_HUB_OFFLINE or RSVLM_OFFLINE is set);
otherwise a missing model is a one-line UserError saying exactly where the file must go.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path, PurePosixPath

from rs_vlm_app import paths
from rs_vlm_app.errors import UserError
from rs_vlm_app.models.catalogue import HubFile, ModelEntry, OpenClipPretrained, UrlFile, UserFile
from rs_vlm_app.models.download import DownloadError, check_reachable, download_url, extract_member

log = logging.getLogger(__name__)

_OFFLINE_VARIABLES = ("RSVLM_OFFLINE", "HF_HUB_OFFLINE")
_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")
# open_clip's Hugging Face exports: safetensors first, the pickled state_dict as fallback.
_OPEN_CLIP_HUB_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


def offline_reason() -> str | None:
    """The environment variable that forbids downloads ("HF_HUB_OFFLINE is set"), or None."""
    for name in _OFFLINE_VARIABLES:
        if os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on"):
            return f"{name} is set"
    return None


def cache_folder(entry: ModelEntry) -> Path:
    """The entry's folder in rs-vlm's model cache."""
    return paths.models_cache_dir() / entry.name


def expected_path(entry: ModelEntry) -> Path:
    """Where a person should put the entry's weights file by hand."""
    return cache_folder(entry) / _local_filenames(entry)[0]


def find_cached(entry: ModelEntry) -> Path | None:
    """The entry's weights if already on this machine (rs-vlm cache, then the HF cache); no network."""
    folder = cache_folder(entry)
    for name in _local_filenames(entry):
        candidate = folder / name
        if candidate.is_file() and candidate.stat().st_size > 0:
            return candidate
    if isinstance(entry.source, UserFile):
        found = _single_checkpoint_in(folder)
        if found is not None:
            return found
    for repo, filename, revision in _hub_locations(entry):
        hit = _hf_cached(repo, filename, revision)
        if hit is not None:
            return hit
    return None


def resolve_checkpoint(entry: ModelEntry, *, allow_download: bool | None = None) -> Path:
    """Path of ``entry``'s weights, downloading them only when allowed.

    allow_download None means "allowed unless HF_HUB_OFFLINE or RSVLM_OFFLINE is set".
    """
    found = find_cached(entry)
    if found is not None:
        log.debug("model %s: using %s", entry.name, found)
        return found
    target = expected_path(entry)
    source = entry.source
    if isinstance(source, UserFile):
        hint = f" ({source.hint})" if source.hint else ""
        raise UserError(
            f"model {entry.name!r} is a file you supply{hint} and it is not in the cache: copy it to {target}, "
            f"or give that file as the checkpoint"
        )
    if isinstance(source, UrlFile) and source.archive_member:
        archive = cache_folder(entry) / _url_basename(source.url)
        if archive.is_file():  # a complete archive dropped by hand or left by an earlier run
            return _extract(entry, source, archive, target)
    if allow_download is None:
        reason = offline_reason()
        allow_download = reason is None
    else:
        reason = None if allow_download else "offline"
    if not allow_download:
        raise UserError(
            f"model {entry.name!r} is not in the cache and downloads are off ({reason}): put "
            f"{_wanted(entry)} from {_where_from(entry)} at {target}, or give that file as the checkpoint"
        )
    try:
        return _download(entry, target)
    except DownloadError as exc:
        problem = " ".join(str(exc).split())[:240]
        raise UserError(
            f"model {entry.name!r} is not in the cache and its download failed ({problem}): put "
            f"{_wanted(entry)} from {_where_from(entry)} at {target}, or give that file as the checkpoint"
        ) from None


def _download(entry: ModelEntry, target: Path) -> Path:
    source = entry.source
    if isinstance(source, HubFile):
        return _hf_download(source.repo, source.file, source.revision)
    if isinstance(source, UrlFile):
        if source.archive_member:
            archive = cache_folder(entry) / _url_basename(source.url)
            download_url(source.url, archive, sha256=source.sha256)
            return _extract(entry, source, archive, target)
        return download_url(source.url, target, sha256=source.sha256)
    if isinstance(source, OpenClipPretrained):
        errors = []
        for repo, filename, revision in _hub_locations(entry):
            try:
                return _hf_download(repo, filename, revision)
            except DownloadError as exc:
                errors.append(str(exc))
        url = _open_clip_cfg(entry).get("url")
        if url:
            return download_url(url, cache_folder(entry) / _url_basename(url))
        raise DownloadError("; ".join(errors) or f"open_clip has no download for {entry.arch} {source.tag!r}")
    raise DownloadError(f"{type(source).__name__} sources are never downloaded")


def _extract(entry: ModelEntry, source: UrlFile, archive: Path, target: Path) -> Path:
    log.info("model %s: extracting %s from %s", entry.name, source.archive_member, archive.name)
    try:
        extract_member(archive, source.archive_member, target)
    except DownloadError as exc:
        raise UserError(
            f"model {entry.name!r}: {exc}; put {source.filename} from {_where_from(entry)} at {target}, "
            f"or give that file as the checkpoint", path=archive
        ) from None
    archive.unlink()
    return target


def _where_from(entry: ModelEntry) -> str:
    source = entry.source
    if isinstance(source, OpenClipPretrained):
        hub = _hub_locations(entry)
        return f"https://huggingface.co/{hub[0][0]}" if hub else source.describe()
    return source.describe()


def _local_filenames(entry: ModelEntry) -> list[str]:
    source = entry.source
    if isinstance(source, OpenClipPretrained):
        names = [PurePosixPath(f).name for _, f, _ in _hub_locations(entry)]
        if source.hf_hub is None and _open_clip_cfg(entry).get("url"):
            names.append(_url_basename(_open_clip_cfg(entry)["url"]))
        return names
    return [source.filename]


def _wanted(entry: ModelEntry) -> str:
    """The file name(s) a person should put in the cache, for messages."""
    names = _local_filenames(entry)
    return names[0] if len(names) == 1 else f"{names[0]} (or {', '.join(names[1:])})"


def _hub_locations(entry: ModelEntry) -> list[tuple[str, str, str | None]]:
    """(repo, filename, revision) pairs on the Hugging Face hub holding the entry's weights."""
    source = entry.source
    if isinstance(source, HubFile):
        return [(source.repo, source.file, source.revision)]
    if isinstance(source, OpenClipPretrained):
        hub = source.hf_hub if source.hf_hub is not None else _open_clip_cfg(entry).get("hf_hub", "")
        if not hub:
            return []
        repo, filename = os.path.split(hub)  # open_clip's convention: "org/repo/" = the default files
        files = [filename] if filename else list(_OPEN_CLIP_HUB_FILES)
        return [(repo, f, None) for f in files]
    return []


def _open_clip_cfg(entry: ModelEntry) -> dict:
    from rs_vlm_app.models.open_clip_import import import_open_clip

    cfg = import_open_clip().pretrained.get_pretrained_cfg(entry.arch, entry.source.tag)
    if not cfg:
        raise UserError(f"model {entry.name!r}: open_clip has no pretrained tag {entry.source.tag!r} "
                        f"for {entry.arch} (the catalogue is out of date)")
    return cfg


def _hf_cache_dir() -> str | None:
    """The Hugging Face hub cache, read from the environment at call time (tests redirect it)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return os.path.join(os.environ["HF_HOME"], "hub")
    return None


def _hf_cached(repo: str, filename: str, revision: str | None) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    try:
        hit = try_to_load_from_cache(repo, filename, cache_dir=_hf_cache_dir(), revision=revision)
    except Exception as exc:  # a malformed cache folder must not stop a run that can go on
        log.debug("Hugging Face cache lookup of %s/%s failed: %s", repo, filename, exc)
        return None
    if isinstance(hit, str) and Path(hit).is_file():
        return Path(hit)
    return None


def _hf_download(repo: str, filename: str, revision: str | None) -> Path:
    from huggingface_hub import hf_hub_download

    endpoint = hub_endpoint()
    check_reachable(endpoint)  # unreachable: fail now, not after the hub client's retries
    log.info("downloading %s from %s/%s", filename, endpoint, repo)
    try:
        return Path(hf_hub_download(repo_id=repo, filename=filename, revision=revision, cache_dir=_hf_cache_dir(),
                                    endpoint=endpoint))
    except Exception as exc:  # network, HTTP, offline mode, missing file: all mean "not downloaded"
        raise DownloadError(f"{type(exc).__name__}: {exc}") from exc


def hub_endpoint() -> str:
    """The Hugging Face endpoint downloads use (HF_ENDPOINT, read now, or the hub's default)."""
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def _single_checkpoint_in(folder: Path) -> Path | None:
    if not folder.is_dir():
        return None
    found = [p for p in folder.iterdir()
             if p.is_file() and p.suffix.lower() in _CHECKPOINT_SUFFIXES and p.stat().st_size > 0]
    if len(found) == 1:
        log.info("using %s, the only checkpoint in %s", found[0].name, folder)
        return found[0]
    return None


def _url_basename(url: str) -> str:
    return PurePosixPath(url.split("?", 1)[0]).name
