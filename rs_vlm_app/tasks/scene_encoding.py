"""Encode every tile of a scene once, through the embedding cache, with checkpoints."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from rs_vlm_app.errors import UserError
from rs_vlm_app.geo.aoi import Aoi
from rs_vlm_app.geo.blocks import BlockReader, feed_prefetch, feed_workers
from rs_vlm_app.geo.grid import GridSpec, build_windows
from rs_vlm_app.geo.raster import RasterSource
from rs_vlm_app.models.tile_encoder import TileEncoder
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


def tile_preprocessing(encoder: TileEncoder, compat: str | None = None) -> TilePreprocessing:
    """The tile preprocessing of a mode: "fast" (default; tiles resized straight to the model's input)
    or ``compat="selo"`` (the published protocol's resize, JPEG, resize)."""
    from rs_vlm_app.models.preprocess import fast_tile_transform, selo_tile_transform

    if compat == "selo":
        return TilePreprocessing("selo", selo_tile_transform(encoder.image_size))
    return TilePreprocessing("fast", fast_tile_transform(encoder.image_size))


def fast_preprocessing(encoder: TileEncoder) -> TilePreprocessing:
    """The default ("fast") tile preprocessing, as `rsvlm localize` uses it, so every command shares
    one embedding cache entry per scene x model x grid."""
    return tile_preprocessing(encoder, None)


@dataclass
class EncodingStats:
    cache_hit: bool
    tiles_encoded: int
    tiles_skipped: int
    seconds: float


def encode_scene(
    source: RasterSource,
    grid: GridSpec,
    encoder: TileEncoder,
    preprocessing: TilePreprocessing,
    *,
    min_valid: float = 0.5,
    cache: EmbeddingCache | None = None,
    reporter: Reporter | None = None,
    aoi: Aoi | None = None,
) -> tuple[SceneEmbeddings, EncodingStats]:
    """Embeddings of all tiles of ``source`` on ``grid``: from the cache, or encoded now (resumably).

    ``aoi``: only the windows overlapping this area of interest are read and encoded (or taken from
    a cached encoding of the whole scene when there is one); UserError when it misses the scene.

    ``encoder`` is a rs_vlm_app.models.encoder.ClipEncoder. The cache key covers the scene's content,
    the model's weights, the grid, the band choice and stretch, the tile preprocessing and min_valid,
    so a second query on the same scene re-encodes nothing.
    """
    reporter = reporter or NullReporter()
    cache = cache or EmbeddingCache()
    windows = build_windows(grid, source.height, source.width, path=source.path)
    if aoi is not None:
        whole = cache.load(_key(source, encoder, preprocessing, windows, min_valid))
        keep = aoi.window_mask(windows, source.transform, source.crs)
        windows = aoi.select_windows(windows, source.transform, source.crs, scene=source.path)
        if whole is not None:  # the whole scene is encoded already: its AOI tiles cost nothing
            part = SceneEmbeddings(whole.key, whole.folder, whole.windows[keep], np.asarray(whole.encoded[keep]),
                                   np.asarray(whole.embeddings[keep]), whole.meta)
            return _nonempty(part, source), EncodingStats(
                True, int(part.encoded.sum()), int((~part.encoded).sum()), 0.0)
    key = _key(source, encoder, preprocessing, windows, min_valid)
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
        "read_order": "strips-rows",  # resume positions count windows in this order
    }
    entry = cache.begin(key, windows, encoder.embed_dim, meta)
    if entry.done:
        reporter.log(f"resuming tile encoding at {entry.done} of {len(windows)} tiles")
    # "rows" order reads every pixel once for all scales; the cache entry does not depend on order.
    reader = BlockReader(
        source, windows, batch_size=encoder.batch_size, tile_transform=preprocessing.transform,
        min_valid=min_valid, start=entry.done, order="rows", workers=feed_workers(encoder.device),
        prefetch=feed_prefetch(encoder.device),
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


def _key(source: RasterSource, encoder, preprocessing: TilePreprocessing, windows: np.ndarray,
         min_valid: float) -> str:
    return cache_key(
        scene=source.fingerprint(),
        model=encoder.fingerprint,
        preprocess=encoder.preprocess_key(),
        precision=encoder.precision,  # fp16/bf16 embeddings differ from fp32 ones
        tiles=preprocessing.name,
        windows=windows,
        min_valid=min_valid,
    )


def _nonempty(scene: SceneEmbeddings, source: RasterSource) -> SceneEmbeddings:
    if not scene.encoded.any():
        raise UserError("every tile is (mostly) nodata or masked; nothing to encode", path=source.path)
    return scene
