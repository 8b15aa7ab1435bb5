"""Streamed downloads into the model cache: a .part file renamed into place only when complete."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import socket
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath

log = logging.getLogger(__name__)

_CHUNK = 1 << 20


class DownloadError(Exception):
    """A download that did not produce the file (network, HTTP, size or checksum problem)."""


#: Seconds to wait for a TCP connection when checking that a download host is reachable.
PROBE_TIMEOUT = 4.0
_probed: dict[tuple[str, int], str | None] = {}


def check_reachable(url: str, timeout: float = PROBE_TIMEOUT) -> None:
    """Fail at once (DownloadError) when ``url``'s host cannot be resolved or refuses connections.

    Download libraries retry such failures with back-off (huggingface_hub: five times, 38 s offline)
    although no retry can help; one resolution and one connection attempt tell. The answer is kept
    for the process. Skipped when a proxy serves the host (the proxy decides).
    """
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname
    if not host or _proxied(host, parts.scheme):
        return
    port = parts.port or (443 if parts.scheme == "https" else 80)
    key = (host, port)
    if key not in _probed:
        _probed[key] = _probe(host, port, timeout)
    if _probed[key] is not None:
        raise DownloadError(_probed[key])


def _probe(host: str, port: int, timeout: float) -> str | None:
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        return f"cannot resolve {host}: no network or no name server ({exc.strerror or exc})"
    problem = None
    for family, kind, proto, _name, address in addresses:
        try:
            with socket.socket(family, kind, proto) as sock:
                sock.settimeout(timeout)
                sock.connect(address)
            return None
        except ConnectionRefusedError:
            problem = f"{host}:{port} refused the connection"
        except OSError as exc:  # timeout, network unreachable
            problem = problem or f"cannot connect to {host}:{port} ({exc.strerror or exc})"
    return problem or f"cannot connect to {host}:{port}"


def _proxied(host: str, scheme: str) -> bool:
    proxies = urllib.request.getproxies()
    if not (proxies.get(scheme) or proxies.get("all")):
        return False
    return not urllib.request.proxy_bypass(host)


def download_url(url: str, target: Path, *, sha256: str | None = None, timeout: float = 60.0) -> Path:
    """Stream ``url`` to ``target`` through ``target.part``; verify length (and sha256 when given)."""
    check_reachable(url)
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
