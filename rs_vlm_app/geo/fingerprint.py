"""A cheap content hash of files: sizes and sampled bytes, independent of names and mtimes."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

MIB = 1 << 20
#: Files up to this size are hashed whole.
WHOLE_FILE_LIMIT = 8 * MIB
#: Bigger files: the first and last MiB plus this many evenly spaced chunks of CHUNK bytes.
CHUNKS = 32
CHUNK = 64 * 1024


def sampled_digest(paths: Iterable[str | Path], extra: str = "") -> str:
    """Hex digest over each file's size and sampled bytes (in the given order) and ``extra``.

    A file that is not on the local disk (a GDAL /vsi path) contributes its name only. The digest
    changes when a file's size or any sampled byte changes; an edit that keeps the size and falls
    between the samples of a file over WHOLE_FILE_LIMIT goes unnoticed (the price of not reading it).
    """
    digest = hashlib.blake2b(digest_size=20)
    for path in paths:
        path = Path(path)
        try:
            size = path.stat().st_size
        except OSError:
            digest.update(f"missing:{path}\n".encode())
            continue
        digest.update(f"file:{size}\n".encode())
        with open(path, "rb") as handle:
            for offset, length in _sample_ranges(size):
                handle.seek(offset)
                digest.update(handle.read(length))
    digest.update(extra.encode())
    return digest.hexdigest()


def _sample_ranges(size: int) -> list[tuple[int, int]]:
    if size <= WHOLE_FILE_LIMIT:
        return [(0, size)]
    ranges = [(0, MIB)]
    span = size - 2 * MIB - CHUNK
    ranges += [(MIB + span * i // (CHUNKS - 1), CHUNK) for i in range(CHUNKS)]
    ranges.append((size - MIB, MIB))
    return ranges


def local_files(paths: Iterable[str]) -> list[str]:
    """Those of ``paths`` that are regular files on the local disk, without duplicates, in order."""
    seen: list[str] = []
    for p in paths:
        if p not in seen and not p.startswith("/vsi") and os.path.isfile(p):
            seen.append(p)
    return seen
