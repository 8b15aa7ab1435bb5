"""Approximate nearest neighbours over an archive's tiles: a FAISS IVF-PQ index, exact re-rank.

Below ANN_MIN_TILES the archive is searched exactly (a matrix product per part, streamed). Above it
`rsvlm index` keeps ARCHIVE/index/ up to date: the PQ codes of every tile (D/8 bytes each: 64 bytes
for a 512-d ViT-B tile, so 10M tiles fit in 640 MB of RAM) in inverted lists. A query probes
``nprobe`` lists, takes ``refine`` x k candidates, reads their float32 embeddings from the parts
and re-ranks them by exact cosine. Scenes added after the index was built are searched exactly
until the next `rsvlm index` adds them.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rs_vlm_app.archive.store import Archive
from rs_vlm_app.atomic import atomic_path, write_text_atomic
from rs_vlm_app.reporting import NullReporter, Reporter

ANN_MIN_TILES = 100_000
INDEX_DIR = "index"
INDEX_FILE = "ivfpq.faiss"
MANIFEST_FILE = "index.json"
#: Rebuild (retrain) instead of adding when the index covers less than this share of the tiles.
REBUILD_BELOW = 0.5
DEFAULT_NPROBE = 64
DEFAULT_REFINE = 10


def _faiss():
    try:
        import faiss
    except ImportError:
        from rs_vlm_app.errors import UserError

        raise UserError("approximate search needs faiss: pip install 'rs-vlm[distributed]'") from None
    return faiss


def index_params(n: int, dim: int) -> tuple[int, int]:
    """(nlist, m): inverted lists ~ 4 sqrt(N); m sub-quantizers of 8 bits, ~D/8 (a divisor of D)."""
    nlist = int(min(65536, max(16, 4 * math.sqrt(n))))
    nlist = min(nlist, max(1, n // 39))
    target = max(1, dim // 8)
    m = max(d for d in range(1, target + 1) if dim % d == 0)
    return nlist, m


@dataclass
class AnnIndex:
    index: object
    parts: list[tuple[str, int, int]]      # (scene, part, rows) in id order
    offsets: np.ndarray                    # id of each part's first row

    def locate(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(part ordinal, row in part) of global ids."""
        ordinal = np.searchsorted(self.offsets, ids, side="right") - 1
        return ordinal, ids - self.offsets[ordinal]

    def covers(self) -> set[tuple[str, int]]:
        return {(s, p) for s, p, _ in self.parts}


def load_index(archive: Archive) -> AnnIndex | None:
    folder = archive.root / INDEX_DIR
    try:
        manifest = json.loads((folder / MANIFEST_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    faiss = _faiss()
    index = faiss.read_index(str(folder / INDEX_FILE))
    parts = [tuple(p) for p in manifest["parts"]]
    counts = np.array([p[2] for p in parts], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]) if len(counts) else np.zeros(0, np.int64)
    return AnnIndex(index, parts, offsets.astype(np.int64))


def build_index(archive: Archive, *, reporter: Reporter | None = None, seed: int = 0) -> dict:
    """Train and fill an IVF-PQ index over every committed part (replacing the old one)."""
    faiss = _faiss()
    reporter = reporter or NullReporter()
    parts = list(archive.parts())
    sizes = [p.scene.tiles if p.scene.parts == 1 else len(p.embeddings()) for p in parts]
    total = int(sum(sizes))
    dim = archive.require_recipe().embed_dim
    nlist, m = index_params(total, dim)
    rng = np.random.default_rng(seed)
    sample_n = min(total, max(256 * 40, nlist * 40))
    take = np.sort(rng.choice(total, size=sample_n, replace=False))
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    sample = []
    for i, part in enumerate(parts):
        rows = take[(take >= offsets[i]) & (take < offsets[i + 1])] - offsets[i]
        if len(rows):
            sample.append(np.asarray(part.embeddings()[rows], dtype=np.float32))
    reporter.progress("train ANN index", 0, 1)
    quantizer = faiss.IndexFlatIP(dim)
    index = faiss.IndexIVFPQ(quantizer, dim, nlist, m, 8, faiss.METRIC_INNER_PRODUCT)
    index.train(np.concatenate(sample))
    reporter.progress("train ANN index", 1, 1)
    covered = _add(index, parts, reporter)
    return _save(archive, index, covered, nlist, m)


def _add(index, parts, reporter: Reporter) -> list[tuple[str, int, int]]:
    covered = []
    for i, part in enumerate(parts):
        vectors = np.ascontiguousarray(part.embeddings(), dtype=np.float32)
        if len(vectors):
            index.add(vectors)
        covered.append((part.scene.id, part.index, len(vectors)))
        reporter.progress("fill ANN index", i + 1, len(parts))
    return covered


def _save(archive: Archive, index, covered, nlist: int, m: int) -> dict:
    faiss = _faiss()
    folder = archive.root / INDEX_DIR
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / INDEX_FILE) as tmp:
        faiss.write_index(index, str(tmp))
    manifest = {"parts": covered, "nlist": nlist, "m": m, "tiles": int(index.ntotal)}
    write_text_atomic(folder / MANIFEST_FILE, json.dumps(manifest))
    return {"tiles": int(index.ntotal), "nlist": nlist, "m": m}


def maybe_update_index(archive: Archive, *, reporter: Reporter | None = None,
                       min_tiles: int = ANN_MIN_TILES) -> dict | None:
    """Build the ANN index once the archive holds ``min_tiles`` tiles; afterwards add new parts
    (retrain when the index covers less than half the archive). None below the threshold."""
    total = archive.tile_count()
    if total < min_tiles:
        return None
    current = load_index(archive)
    if current is None or int(current.index.ntotal) < REBUILD_BELOW * total:
        return build_index(archive, reporter=reporter)
    covered = current.covers()
    new = [p for p in archive.parts() if (p.scene.id, p.index) not in covered]
    if not new:
        return {"tiles": int(current.index.ntotal), "nlist": int(current.index.nlist), "m": int(current.index.pq.M)}
    added = _add(current.index, new, reporter or NullReporter())
    return _save(archive, current.index, current.parts + added, int(current.index.nlist), int(current.index.pq.M))


def ann_candidates(ann: AnnIndex, query: np.ndarray, n: int, allowed: np.ndarray | None = None,
                   nprobe: int = DEFAULT_NPROBE) -> np.ndarray:
    """Global ids of up to ``n`` approximate best tiles (``allowed``: (ntotal,) bool mask or None)."""
    faiss = _faiss()
    params = faiss.SearchParametersIVF()
    params.nprobe = min(nprobe, int(ann.index.nlist))
    if allowed is not None:
        packed = np.packbits(allowed.astype(np.uint8), bitorder="little")
        params.sel = faiss.IDSelectorBitmap(len(allowed), faiss.swig_ptr(packed))
        _, ids = ann.index.search(query.reshape(1, -1).astype(np.float32), n, params=params)
        del packed
    else:
        _, ids = ann.index.search(query.reshape(1, -1).astype(np.float32), n, params=params)
    ids = ids[0]
    return ids[ids >= 0]


def index_size(archive: Archive) -> int:
    path = Path(archive.root) / INDEX_DIR / INDEX_FILE
    return os.path.getsize(path) if path.exists() else 0
