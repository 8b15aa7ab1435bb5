"""Finding the manifests of a dataset folder: the build's (or merged) manifest and shard manifests."""

from __future__ import annotations

import re
from pathlib import Path

from rs_vlm_app.errors import UserError

MANIFEST_NAME = "manifest.sqlite"
_SHARD = re.compile(r"^manifest-shard-(\d+)-of-(\d+)\.sqlite$")


def shard_manifests(directory: Path) -> list[tuple[int, int, Path]]:
    """(index, count, path) of the shard manifests in ``directory``, by index."""
    found = []
    if directory.is_dir():
        for path in directory.iterdir():
            match = _SHARD.match(path.name)
            if match:
                found.append((int(match.group(1)), int(match.group(2)), path))
    return sorted(found)


def parse_shard_name(path: Path) -> tuple[int, int] | None:
    match = _SHARD.match(path.name)
    return (int(match.group(1)), int(match.group(2))) if match else None


def main_manifest(target: Path) -> Path:
    """The manifest to read for ``target`` (a dataset folder or a manifest file), with clear errors."""
    if target.is_file():
        return target
    if not target.is_dir():
        raise UserError("no such dataset folder", path=target)
    path = target / MANIFEST_NAME
    if path.is_file():
        return path
    shards = shard_manifests(target)
    if shards:
        raise UserError(f"holds {len(shards)} shard manifests but no merged manifest; run `rsvlm dataset merge "
                        f"{target}` first (or pass one shard's manifest file)", path=target)
    raise UserError(f"no {MANIFEST_NAME} here; run `rsvlm dataset build CONFIG.yaml` first", path=target)
