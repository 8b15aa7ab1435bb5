"""Tile search latency over 100k cached tile embeddings. Prints ONE JSON line.

Builds --scenes embedding-cache entries (EmbeddingCache, the on-disk format `rsvlm search` reads)
holding --tiles tile embeddings in total (512-d, L2-normalised, 2% of tiles marked as not encoded),
then answers --queries random queries (top --k):
- ours: rs_vlm_app.tasks.search.rank_tiles over the memory-mapped cache entries (one matrix-vector
  product per scene, a partial sort, a merge of k candidates per scene);
- baseline: the plain way: the scenes' embeddings concatenated in memory, all scores computed and
  fully sorted.
Both return the same tiles (checked). Latency: median per query, after the entries are opened.

    python bench/search.py [--tiles 100000] [--scenes 10] [--k 20] [--queries 50]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rs_vlm_app.tasks.embedding_cache import EmbeddingCache  # noqa: E402
from rs_vlm_app.tasks.search import rank_tiles  # noqa: E402

DIM = 512


def build_cache(root: Path, scenes: int, tiles: int, rng: np.random.Generator) -> list[str]:
    cache = EmbeddingCache(root)
    keys = []
    per_scene = [tiles // scenes + (1 if i < tiles % scenes else 0) for i in range(scenes)]
    for s, n in enumerate(per_scene):
        key = f"bench-scene-{s}"
        windows = np.stack([np.arange(n) * 256, np.arange(n) * 256 + 256, np.zeros(n), np.full(n, 256),
                            np.full(n, 256)], axis=1).astype(np.int64)
        entry = cache.begin(key, windows, DIM, {"scene": f"scene{s}"})
        encoded = rng.random(n) > 0.02
        vectors = rng.standard_normal((n, DIM)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        entry.record(np.flatnonzero(encoded), vectors[encoded])
        cache.finish(key, entry)
        keys.append(key)
    return keys


def baseline(matrix: np.ndarray, owners: np.ndarray, rows: np.ndarray, text: np.ndarray, k: int):
    scores = matrix @ text
    order = np.argsort(-scores, kind="stable")[:k]
    return [(int(owners[i]), int(rows[i])) for i in order]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=int, default=100_000)
    parser.add_argument("--scenes", type=int, default=10)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--queries", type=int, default=50)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as folder:
        keys = build_cache(Path(folder), args.scenes, args.tiles, rng)
        cache = EmbeddingCache(Path(folder))
        start = time.perf_counter()
        entries = [cache.load(key) for key in keys]
        open_s = time.perf_counter() - start
        texts = rng.standard_normal((args.queries, DIM)).astype(np.float32)
        texts /= np.linalg.norm(texts, axis=1, keepdims=True)

        ours, ours_hits = [], []
        for text in texts:
            t = time.perf_counter()
            hits = rank_tiles(entries, text, args.k)
            ours.append(time.perf_counter() - t)
            ours_hits.append([(h.scene, int(h.window[0]) // 256) for h in hits])

        start = time.perf_counter()
        matrix = np.concatenate([np.asarray(e.embeddings[e.encoded]) for e in entries])
        owners = np.concatenate([np.full(int(e.encoded.sum()), s) for s, e in enumerate(entries)])
        rows = np.concatenate([np.flatnonzero(e.encoded) for e in entries])
        load_s = time.perf_counter() - start
        base, same = [], True
        for text, expected in zip(texts, ours_hits, strict=True):
            t = time.perf_counter()
            got = baseline(matrix, owners, rows, text, args.k)
            base.append(time.perf_counter() - t)
            same &= got == expected
        ours_ms, base_ms = 1000 * statistics.median(ours), 1000 * statistics.median(base)
        print(json.dumps({
            "benchmark": "search", "tiles": args.tiles, "encoded_tiles": int(len(matrix)), "scenes": args.scenes,
            "dim": DIM, "k": args.k, "queries": args.queries,
            "ours_ms_per_query": round(ours_ms, 3), "baseline_ms_per_query": round(base_ms, 3),
            "ratio": round(base_ms / ours_ms, 2), "same_results": bool(same),
            "open_cache_ms": round(1000 * open_s, 3), "baseline_load_into_memory_ms": round(1000 * load_s, 3),
        }))


if __name__ == "__main__":
    main()
