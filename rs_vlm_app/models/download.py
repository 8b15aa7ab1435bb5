"""Streamed downloads into the model cache: a .part file renamed into place only when complete."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath

log = logging.getLogger(__name__)

_CHUNK = 1 << 20


class DownloadError(Exception):
    """A download that did not produce the file (network, HTTP, size or checksum problem)."""


def download_url(url: str, target: Path, *, sha256: str | None = None, timeout: float = 60.0) -> Path:
    """Stream ``url`` to ``target`` through ``target.part``; verify length (and sha256 when given)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(f"{target.name}.{os.getpid()}.part")
    digest = hashlib.sha256()
    written = 0
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(part, "wb") as out:
            expected = response.headers.get("Content-Length")
            expected = int(expected) if expected and expected.isdigit() else None
            log.info("downloading %s (%s) to %s", url, _size(expected), target)
            next_report = 1 << 28
            while chunk := response.read(_CHUNK):
                out.write(chunk)
                digest.update(chunk)
                written += len(chunk)
                if written >= next_report:
                    log.info("downloaded %s of %s", _size(written), _size(expected))
                    next_report += 1 << 28
        if expected is not None and written != expected:
            raise DownloadError(f"incomplete download: {written} of {expected} bytes")
        if sha256 and digest.hexdigest().lower() != sha256.lower():
            raise DownloadError(f"checksum mismatch: sha256 {digest.hexdigest()}, expected {sha256}")
        os.replace(part, target)
    except DownloadError:
        _unlink(part)
        raise
    except (OSError, ValueError) as exc:  # URLError and HTTPError are OSErrors
        _unlink(part)
        raise DownloadError(str(getattr(exc, "reason", None) or exc)) from exc
    except BaseException:
        _unlink(part)
        raise
    return target


def extract_member(archive: Path, member_name: str, target: Path) -> Path:
    """Copy the one member of zip ``archive`` whose file name is ``member_name`` to ``target``."""
    part = target.with_name(f"{target.name}.{os.getpid()}.part")
    try:
        with zipfile.ZipFile(archive) as zf:
            matches = [info for info in zf.infolist()
                       if not info.is_dir() and PurePosixPath(info.filename).name == member_name]
            if len(matches) != 1:
                found = "no" if not matches else f"{len(matches)}"
                raise DownloadError(f"{archive.name} holds {found} file(s) named {member_name}")
            with zf.open(matches[0]) as src, open(part, "wb") as out:
                shutil.copyfileobj(src, out, _CHUNK)
        os.replace(part, target)
    except zipfile.BadZipFile as exc:
        _unlink(part)
        raise DownloadError(f"{archive.name} is not a valid zip archive ({exc})") from exc
    except BaseException:
        _unlink(part)
        raise
    return target


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _size(n: int | None) -> str:
    if n is None:
        return "size unknown"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"
