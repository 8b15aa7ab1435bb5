"""On-disk tile embeddings per scene x model x grid x preprocessing, resumable while being built.

An entry is a folder ``<root>/<key>/`` with ``windows.npy`` (N, 5), ``encoded.npy`` (N,) bool,
``embeddings.npy`` (N, D) float32 (zeros where not encoded) and ``meta.json``. While a scene is
being encoded the folder is ``<key>.partial/`` with a ``progress.json`` checkpoint; it is renamed to
the final name only when complete. Arrays are memory-mapped, so a 100k-tile scene costs no RAM
until used.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rs_vlm_app.atomic import write_text_atomic
from rs_vlm_app.paths import embeddings_cache_dir

FORMAT_VERSION = 1


def cache_key(**parts: object) -> str:
    """A stable key from named parts (strings, numbers, arrays)."""
    digest = hashlib.blake2b(digest_size=16)
    for name in sorted(parts):
        value = parts[name]
        digest.update(name.encode())
        if isinstance(value, np.ndarray):
            digest.update(np.ascontiguousarray(value).tobytes())
            digest.update(str(value.shape).encode())
        else:
            digest.update(json.dumps(value, sort_keys=True, default=str).encode())
    digest.update(f"v{FORMAT_VERSION}".encode())
    return digest.hexdigest()


@dataclass
class SceneEmbeddings:
    """Complete embeddings of one scene's tiles."""

    key: str
    folder: Path
    windows: np.ndarray       # (N, 5) row0, row1, col0, col1, scale
    encoded: np.ndarray       # (N,) bool: False for tiles skipped as mostly nodata
    embeddings: np.ndarray    # (N, D) float32, L2-normalised rows where encoded
    meta: dict

    def scores(self, text_embeddings: np.ndarray) -> np.ndarray:
        """Cosine similarity of every encoded tile to each text: (n_encoded, K)."""
        return np.asarray(self.embeddings[self.encoded] @ np.asarray(text_embeddings, np.float32).T)

    @property
    def encoded_windows(self) -> np.ndarray:
        return self.windows[self.encoded]


class PartialEntry:
    """An entry being built; survives a crash and resumes from its last checkpoint."""

    def __init__(self, folder: Path, windows: np.ndarray, dim: int, meta: dict):
        self.folder = folder
        self.meta = meta
        fresh = not self._consistent(windows, dim, meta)
        if fresh:
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            np.save(folder / "windows.npy", windows)
            (folder / "meta.json").write_text(json.dumps(meta, indent=1))
            np.lib.format.open_memmap(folder / "embeddings.npy", "w+", np.float32, (len(windows), dim)).flush()
            np.lib.format.open_memmap(folder / "encoded.npy", "w+", np.bool_, (len(windows),)).flush()
            write_text_atomic(folder / "progress.json", json.dumps({"done": 0}))
        self.windows = np.load(folder / "windows.npy")
        self._embeddings = np.load(folder / "embeddings.npy", mmap_mode="r+")
        self._encoded = np.load(folder / "encoded.npy", mmap_mode="r+")
        self.done = int(json.loads((folder / "progress.json").read_text())["done"])

    def _consistent(self, windows: np.ndarray, dim: int, meta: dict) -> bool:
        try:
            old_meta = json.loads((self.folder / "meta.json").read_text())
            old_windows = np.load(self.folder / "windows.npy")
            emb = np.load(self.folder / "embeddings.npy", mmap_mode="r")
            json.loads((self.folder / "progress.json").read_text())["done"]
        except (OSError, ValueError, KeyError):
            return False
        return old_meta == meta and np.array_equal(old_windows, windows) and emb.shape == (len(windows), dim)

    def record(self, indexes: np.ndarray, embeddings: np.ndarray) -> None:
        """Store the embeddings of encoded tiles (indexes into the windows array)."""
        self._embeddings[indexes] = embeddings
        self._encoded[indexes] = True

    def checkpoint(self, done: int) -> None:
        """Everything before window ``done`` (in order) is final; persist that."""
        self._embeddings.flush()
        self._encoded.flush()
        self.done = done
        write_text_atomic(self.folder / "progress.json", json.dumps({"done": done}))

    def finalize(self, final_folder: Path) -> None:
        self.checkpoint(len(self.windows))
        del self._embeddings, self._encoded
        if final_folder.exists():
            shutil.rmtree(final_folder)
        os.replace(self.folder, final_folder)


class EmbeddingCache:
    """The folder of scene embeddings (default: <rs-vlm cache>/embeddings)."""

    def __init__(self, root: Path | None = None):
        self.root = Path(root) if root is not None else embeddings_cache_dir()

    def load(self, key: str) -> SceneEmbeddings | None:
        folder = self.root / key
        try:
            meta = json.loads((folder / "meta.json").read_text())
            return SceneEmbeddings(
                key=key,
                folder=folder,
                windows=np.load(folder / "windows.npy"),
                encoded=np.load(folder / "encoded.npy"),
                embeddings=np.load(folder / "embeddings.npy", mmap_mode="r"),
                meta=meta,
            )
        except (OSError, ValueError):
            return None

    def begin(self, key: str, windows: np.ndarray, dim: int, meta: dict) -> PartialEntry:
        """Start (or resume) building the entry ``key``."""
        self.root.mkdir(parents=True, exist_ok=True)
        return PartialEntry(self.root / f"{key}.partial", windows, dim, meta)

    def finish(self, key: str, entry: PartialEntry) -> SceneEmbeddings:
        entry.finalize(self.root / key)
        loaded = self.load(key)
        assert loaded is not None
        return loaded
