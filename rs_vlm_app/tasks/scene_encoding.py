"""Encode every tile of a scene once, through the embedding cache, with checkpoints."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from rs_vlm_app.errors import UserError
from rs_vlm_app.geo.blocks import BlockReader
from rs_vlm_app.geo.grid import GridSpec, build_windows
from rs_vlm_app.geo.raster import RasterSource
from rs_vlm_app.reporting import NullReporter, Reporter, check_cancelled
from rs_vlm_app.tasks.embedding_cache import EmbeddingCache, SceneEmbeddings, cache_key

log = logging.getLogger(__name__)

#: Persist progress at least this often while encoding (seconds).
CHECKPOINT_EVERY_S = 20.0


@dataclass(frozen=True)
class TilePreprocessing:
    """How a cut tile becomes model input; ``name`` enters the cache key."""

    name: str                                      # "fast" or "selo"
    transform: Callable[[np.ndarray], np.ndarray]  # (h, w, 3) uint8 -> (S, S, 3) uint8


@dataclass
class EncodingStats:
    cache_hit: bool
    tiles_encoded: int
    tiles_skipped: int
    seconds: float


def encode_scene(
    source: RasterSource,
    grid: GridSpec,
    encoder,
    preprocessing: TilePreprocessing,
    *,
    min_valid: float = 0.5,
    cache: EmbeddingCache | None = None,
    reporter: Reporter | None = None,
) -> tuple[SceneEmbeddings, EncodingStats]:
    """Embeddings of all tiles of ``source`` on ``grid``: from the cache, or encoded now (resumably).

    ``encoder`` is a rs_vlm_app.models.encoder.ClipEncoder. The cache key covers the scene's content,
    the model's weights, the grid, the band choice and stretch, the tile preprocessing and min_valid,
    so a second query on the same scene re-encodes nothing.
    """
    reporter = reporter or NullReporter()
    cache = cache or EmbeddingCache()
    windows = build_windows(grid, source.height, source.width, path=source.path)
    key = cache_key(
        scene=source.fingerprint(),
        model=encoder.fingerprint,
        preprocess=encoder.preprocess_key(),
        precision=getattr(encoder, "precision", "fp32"),  # fp16/bf16 embeddings differ from fp32 ones
        tiles=preprocessing.name,
        windows=windows,
        min_valid=min_valid,
    )
    started = time.monotonic()
    found = cache.load(key)
    if found is not None:
        log.debug("embedding cache hit %s", key)
        return _nonempty(found, source), EncodingStats(
            True, int(found.encoded.sum()), int((~found.encoded).sum()), 0.0)

    meta = {
        "scene": str(source.path),
        "width": source.width,
        "height": source.height,
        "grid": grid.key(),
        "model": encoder.fingerprint,
        "tiles": preprocessing.name,
        "min_valid": min_valid,
        "read_order": "rows",  # resume positions count windows in this order
    }
    entry = cache.begin(key, windows, encoder.embed_dim, meta)
    if entry.done:
        reporter.log(f"resuming tile encoding at {entry.done} of {len(windows)} tiles")
    # "rows" order reads every pixel once for all scales; the cache entry does not depend on order.
    reader = BlockReader(
        source, windows, batch_size=encoder.batch_size, tile_transform=preprocessing.transform,
        min_valid=min_valid, start=entry.done, order="rows",
    )
    last_checkpoint = time.monotonic()
    total = len(windows)
    done = entry.done
    reporter.progress("encode tiles", done, total)
    try:
        for batch in reader:
            check_cancelled(reporter)
            entry.record(batch.indexes, encoder.encode_images(batch.tiles))
            done = batch.next_start
            reporter.progress("encode tiles", done, total)
            if time.monotonic() - last_checkpoint > CHECKPOINT_EVERY_S:
                entry.checkpoint(done)
                last_checkpoint = time.monotonic()
    except BaseException:
        entry.checkpoint(done)  # keep what is finished: the next run resumes here
        raise
    result = cache.finish(key, entry)
    reporter.progress("encode tiles", total, total)
    encoded = int(result.encoded.sum())
    return _nonempty(result, source), EncodingStats(False, encoded, total - encoded, time.monotonic() - started)


def _nonempty(scene: SceneEmbeddings, source: RasterSource) -> SceneEmbeddings:
    if not scene.encoded.any():
        raise UserError("every tile is (mostly) nodata or masked; nothing to encode", path=source.path)
    return scene
