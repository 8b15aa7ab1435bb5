"""Approximate nearest neighbours over an archive's tiles: a FAISS IVF-PQ index, exact re-rank.

Below ANN_MIN_TILES the archive is searched exactly (a matrix product per part, streamed). Above it
`rsvlm index` keeps ARCHIVE/index/ up to date: the PQ codes of every tile (D/4 bytes each: 128 bytes
for a 512-d ViT-B tile, so 10M tiles take 1.3 GB of RAM) in ~sqrt(N) (at least 1024) inverted lists,
coded by residual. A query probes ``nprobe`` lists, takes ``refine`` x k candidates (at least
MIN_CANDIDATES), reads their float32 embeddings from the parts (one gather per part) and re-ranks
them by exact cosine. Scenes added after the index was built are searched exactly
until the next `rsvlm index` adds them.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
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
MIN_NLIST = 1024
DEFAULT_NPROBE = 128
DEFAULT_REFINE = 20
#: Re-rank at least this many candidates exactly, whatever k (a top-20 search re-ranks as many as a top-100).
MIN_CANDIDATES = 1000


def _faiss():
    try:
        import faiss
    except ImportError:
        from rs_vlm_app.errors import UserError

        raise UserError("approximate search needs faiss: pip install 'rs-vlm[distributed]'") from None
    return faiss


def index_params(n: int, dim: int) -> tuple[int, int]:
    """(nlist, m): ~sqrt(N) inverted lists but at least MIN_NLIST (fewer lists merge distinct
    regions of the embedding space into one list and the probe misses them), 39 training tiles per
    list at least; m sub-quantizers of 8 bits, ~D/4 (a divisor of D: 128 bytes per 512-d tile; D/8
    codes lose too much to rank the tiles of one list against an off-data text query)."""
    nlist = int(min(65536, max(MIN_NLIST, math.sqrt(n))))
    nlist = max(1, min(nlist, n // 39))
    target = max(1, dim // 4)
    m = max(d for d in range(1, target + 1) if dim % d == 0)
    return nlist, m


@dataclass
class AnnIndex:
    index: object
    parts: list[tuple[str, int, int]]      # (scene, part, rows) in id order
    offsets: np.ndarray                    # id of each part's first row
    mapped: dict = field(default_factory=dict, repr=False)   # part ordinal -> its memory-mapped embeddings

    def embeddings(self, ordinal: int, path: Path) -> np.ndarray:
        """The memory-mapped embeddings of part ``ordinal`` (mapped once per loaded index)."""
        if ordinal not in self.mapped:
            self.mapped[ordinal] = np.load(path, mmap_mode="r")
        return self.mapped[ordinal]

    def locate(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(part ordinal, row in part) of global ids."""
        ordinal = np.searchsorted(self.offsets, ids, side="right") - 1
        return ordinal, ids - self.offsets[ordinal]

    def covers(self) -> set[tuple[str, int]]:
        return {(s, p) for s, p, _ in self.parts}


_LOADED: dict[Path, tuple[tuple, AnnIndex]] = {}


def load_index(archive: Archive) -> AnnIndex | None:
    """The archive's index, or None; kept in memory for later searches of this process until the
    index files change (a search then costs the probe, not a read of every PQ code)."""
    folder = archive.root / INDEX_DIR
    try:
        stamp = tuple((st.st_mtime_ns, st.st_size, st.st_ino) for st in
                      ((folder / MANIFEST_FILE).stat(), (folder / INDEX_FILE).stat()))
    except OSError:
        return None
    key = folder.resolve()
    cached = _LOADED.get(key)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    try:
        manifest = json.loads((folder / MANIFEST_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    faiss = _faiss()
    index = faiss.read_index(str(folder / INDEX_FILE))
    parts = [tuple(p) for p in manifest["parts"]]
    counts = np.array([p[2] for p in parts], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]) if len(counts) else np.zeros(0, np.int64)
    loaded = AnnIndex(index, parts, offsets.astype(np.int64))
    _LOADED.clear()                        # one archive's index at a time: PQ codes can be GBs
    _LOADED[key] = (stamp, loaded)
    return loaded


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
    _LOADED.clear()
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


def candidate_count(k: int, refine: int = DEFAULT_REFINE) -> int:
    """How many approximate candidates a top-``k`` search re-ranks exactly: ``refine`` x k, at least
    MIN_CANDIDATES (re-reading a few thousand rows costs milliseconds; missing a true hit costs recall)."""
    return max(int(k) * int(refine), MIN_CANDIDATES)


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
