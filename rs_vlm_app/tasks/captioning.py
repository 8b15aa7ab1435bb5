"""Per-tile captioning: a raster in, a GeoPackage layer of tile footprints with their captions out.

raster -> tile grid -> block reader -> tile resize -> CoCa (batched greedy / beam decoding with a
key/value cache) -> captions checkpointed in SQLite (rs_vlm_app.tasks.caption_store) -> GeoPackage.
With a CLIP model as well, each caption gets its image-text cosine: the tile embeddings come from the
scene embedding cache (the same cache `rsvlm localize`, `classify` and `search` use), the captions are
encoded once each.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rs_vlm_app.errors import UserError
from rs_vlm_app.geo.aoi import read_aoi
from rs_vlm_app.geo.grid import build_windows
from rs_vlm_app.geo.raster import RasterSource
from rs_vlm_app.geo.writers import VectorLayer, window_polygons, write_gpkg
from rs_vlm_app.models.tile_encoder import TileCaptioner, TileEncoder
from rs_vlm_app.reporting import NullReporter, Reporter, check_cancelled
from rs_vlm_app.tasks.caption_store import CaptionStore, captions_cache_dir
from rs_vlm_app.tasks.embedding_cache import EmbeddingCache, cache_key
from rs_vlm_app.tasks.inputs import scene_source
from rs_vlm_app.tasks.options import CaptionOptions
from rs_vlm_app.tasks.outputs import check_vector_output
from rs_vlm_app.tasks.scene_encoding import fast_preprocessing

LAYER = "captions"


@dataclass
class CaptionResult:
    scene: Path
    out: Path
    tiles: int               # tiles in the layer
    decoded_now: int         # tiles captioned by this run (the rest came from the checkpoint)
    skipped: int             # windows not captioned: too little valid area
    clip_scored: bool
    seconds: float
    crs: str | None = None
    model: str = ""
    options: dict = field(default_factory=dict)


def caption_scene(
    scene: Path | RasterSource,
    out: Path,
    captioner: TileCaptioner,
    options: CaptionOptions | None = None,
    *,
    clip: TileEncoder | None = None,
    reporter: Reporter | None = None,
    cache: EmbeddingCache | None = None,
    store_dir: Path | None = None,
    checked: bool = False,
) -> CaptionResult:
    """Caption every tile of ``scene`` on the options' grid and write the layer to ``out`` (.gpkg).

    ``captioner``: rs_vlm_app.models.captioner.CocaCaptioner; ``clip``: an optional
    rs_vlm_app.models.encoder.ClipEncoder that scores each caption against its tile. Finished captions
    are checkpointed: a killed or cancelled run, started again with the same arguments, continues
    where it stopped (``store_dir``: where the checkpoints live, default <rs-vlm cache>/captions).
    ``scene``: a raster file or a RasterSource opened with the options' bands (left open);
    ``checked``: the caller (a JobSpec's check) already validated ``out``.
    """
    from rs_vlm_app.models.preprocess import fast_tile_transform

    options = options or CaptionOptions()
    reporter = reporter or NullReporter()
    out = Path(out)
    if not checked:
        check_vector_output(out)
    started = time.monotonic()
    decoding = options.decoding_options
    area = read_aoi(options.aoi) if options.aoi else None
    with scene_source(scene, options.bands) as source:
        scene = Path(source.path)
        windows = build_windows(options.grid_spec, source.height, source.width, path=scene)
        if area is not None:  # only the tiles overlapping the area of interest are read and captioned
            windows = area.select_windows(windows, source.transform, source.crs, scene=scene)
        key = cache_key(scene=source.fingerprint(), model=captioner.fingerprint,
                        preprocess=captioner.preprocess_key(), windows=windows, min_valid=options.min_valid,
                        decoding=decoding.key())
        # the key covers the scene's content, not its path: a copy of the scene shares the checkpoint
        meta = {"model": captioner.fingerprint, "grid": options.grid, "decoding": decoding.key(),
                "read_order": "rows"}
        decoded_now = 0
        with CaptionStore((store_dir or captions_cache_dir()) / f"{key}.sqlite", meta, len(windows)) as store:
            if not store.complete:
                decoded_now = _caption_remaining(source, windows, captioner, decoding, store, options,
                                                 fast_tile_transform(captioner.image_size), reporter)
            stored = store.captions()
        if not len(stored.windows):
            raise UserError("every tile is (mostly) nodata or masked; nothing to caption", path=scene)
        scores = _clip_scores(source, options, clip, stored, reporter, cache, area) if clip is not None else None
        layer = _layer(source.transform, windows, stored, scores)
        reporter.progress("write layer", 0, 1)
        write_gpkg(out, [layer], crs=source.crs)
        reporter.progress("write layer", 1, 1)
        crs = source.crs.to_string() if source.crs is not None else None
    return CaptionResult(scene=Path(scene), out=out, tiles=len(stored.windows), decoded_now=decoded_now,
                         skipped=len(windows) - len(stored.windows), clip_scored=scores is not None,
                         seconds=time.monotonic() - started, crs=crs, model=captioner.display_name,
                         options=options.to_dict())


def _caption_remaining(source, windows, captioner, decoding, store, options, transform, reporter) -> int:
    from rs_vlm_app.geo.blocks import BlockReader, feed_prefetch, feed_workers

    start = store.next_start
    total = len(windows)
    if start:
        reporter.log(f"resuming captioning at tile {start} of {total} ({len(store)} captions kept)")
    reader = BlockReader(source, windows, batch_size=captioner.batch_size, tile_transform=transform,
                         min_valid=options.min_valid, start=start, order="rows", reporter=reporter,
                         workers=feed_workers(captioner.device), prefetch=feed_prefetch(captioner.device))
    decoded, reported = 0, start
    reporter.progress("caption tiles", start, total)
    for batch in reader:
        check_cancelled(reporter)
        captions = captioner.caption_tiles(batch.tiles, decoding)
        store.record(batch.indexes, captions, batch.next_start)
        decoded += len(captions)
        reported = batch.next_start
        reporter.progress("caption tiles", reported, total)
    store.mark_complete()
    if reported < total:  # the last windows were skipped as nodata
        reporter.progress("caption tiles", total, total)
    return decoded


def _clip_scores(source, options, clip, stored, reporter, cache, area=None) -> np.ndarray:
    """Cosine between each captioned tile's CLIP embedding and its caption's CLIP text embedding."""
    from rs_vlm_app.tasks.scene_encoding import encode_scene

    embeddings, _ = encode_scene(source, options.grid_spec, clip, fast_preprocessing(clip),
                                 min_valid=options.min_valid, cache=cache, reporter=reporter, aoi=area)
    scores = np.full(len(stored.windows), np.nan)
    unique = sorted({t for t in stored.texts if t.strip()})
    if not unique:
        return scores
    reporter.progress("score captions", 0, len(unique))
    text = dict(zip(unique, clip.encode_texts(unique), strict=True))
    reporter.progress("score captions", len(unique), len(unique))
    for i, (window, caption) in enumerate(zip(stored.windows, stored.texts, strict=True)):
        if caption in text and embeddings.encoded[window]:
            scores[i] = float(np.dot(embeddings.embeddings[window], text[caption]))
    return scores


def _layer(transform, windows: np.ndarray, stored, scores: np.ndarray | None) -> VectorLayer:
    w = windows[stored.windows]
    fields = {
        "caption": stored.texts,
        "scale": w[:, 4].astype(np.int64),
        "row0": w[:, 0].astype(np.int64), "row1": w[:, 1].astype(np.int64),
        "col0": w[:, 2].astype(np.int64), "col1": w[:, 3].astype(np.int64),
        "mean_logprob": stored.mean_logprob,
        "tokens": stored.tokens,
        "complete": stored.ended,
    }
    if scores is not None:
        fields["clip_score"] = scores
    return VectorLayer(name=LAYER, geometries=window_polygons(transform, w), fields=fields, geometry_type="Polygon")
