"""Image folders with class labels: ``root/<class>/<image>`` (AID, RESISC45, EuroSAT)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from rs_vlm_app.errors import UserError
from rs_vlm_app.mpgi.config import FolderSource
from rs_vlm_app.mpgi.records import SourceIssue, SourceItem
from rs_vlm_app.mpgi.wording import humanise


def iter_folder(source: FolderSource, name: str) -> Iterator[SourceItem | SourceIssue]:
    """Images directly under the root (no class), then each class folder's images, sorted by name."""
    root = source.root
    if not root.is_dir():
        raise UserError("image folder not found (sources: root)", path=root)
    extensions = {e.lower() if e.startswith(".") else f".{e.lower()}" for e in source.extensions}
    top_files, class_dirs = _listing(root)
    for entry in top_files:
        if Path(entry).suffix.lower() in extensions:
            yield SourceItem(name, entry, root / entry, scene_class=None)
    for class_dir in class_dirs:
        label = humanise(class_dir, source.class_names)
        for relpath in _walk(root, class_dir):
            if Path(relpath).suffix.lower() in extensions:
                yield SourceItem(name, relpath, root / relpath, scene_class=label)


def _listing(folder: Path) -> tuple[list[str], list[str]]:
    files, dirs = [], []
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_dir():
                dirs.append(entry.name)
            elif entry.is_file():
                files.append(entry.name)
    return sorted(files), sorted(dirs)


def _walk(root: Path, relative: str) -> Iterator[str]:
    files, dirs = _listing(root / relative)
    for name in files:
        yield f"{relative}/{name}"
    for name in dirs:
        yield from _walk(root, f"{relative}/{name}")
