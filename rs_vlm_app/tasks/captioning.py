"""Per-tile captioning: a raster in, a GeoPackage layer of tile footprints with their captions out.

raster -> tile grid -> block reader -> tile resize -> CoCa (batched greedy / beam decoding with a
key/value cache) -> captions checkpointed in SQLite (rs_vlm_app.tasks.caption_store) -> GeoPackage.
With a CLIP model as well, each caption gets its image-text cosine: the tile embeddings come from the
scene embedding cache (the same cache `rsvlm localize`, `classify` and `search` use), the captions are
encoded once each.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from rs_vlm_app.errors import UserError
from rs_vlm_app.geo.grid import GridSpec, build_windows
from rs_vlm_app.geo.raster import open_raster
from rs_vlm_app.geo.writers import VectorLayer, window_polygons, write_gpkg
from rs_vlm_app.models.coca_decoder import DecodingOptions
from rs_vlm_app.reporting import NullReporter, Reporter, check_cancelled
from rs_vlm_app.tasks.caption_store import CaptionStore, captions_cache_dir
from rs_vlm_app.tasks.embedding_cache import EmbeddingCache, cache_key
from rs_vlm_app.tasks.options import check_bands, check_fraction, parse_grid
from rs_vlm_app.tasks.scene_encoding import TilePreprocessing

LAYER = "captions"
DEFAULT_GRID = "256"


@dataclass(frozen=True)
class CaptionOptions:
    """How `caption_scene` tiles the raster and decodes captions (plain data: JSON-serialisable)."""

    grid: str = DEFAULT_GRID           # GridSpec text: "256", "256,512@0.25", "selo", ...
    decoding: str = "beam"             # "greedy" or "beam"
    beams: int = 3
    max_len: int = 30                  # caption tokens
    min_len: int = 1
    length_penalty: float = 1.0
    bands: tuple[int, ...] | None = None
    min_valid: float = 0.5             # tiles with less valid (non-nodata) area are not captioned

    def __post_init__(self) -> None:
        object.__setattr__(self, "grid", parse_grid(self.grid).key())
        object.__setattr__(self, "bands", check_bands(self.bands))
        check_fraction("min_valid", self.min_valid)
        self.decoding_options  # noqa: B018 - validates the decoding fields

    @property
    def grid_spec(self) -> GridSpec:
        return parse_grid(self.grid)

    @property
    def decoding_options(self) -> DecodingOptions:
        return DecodingOptions(self.decoding, beams=self.beams, max_len=self.max_len, min_len=self.min_len,
                               length_penalty=self.length_penalty)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["bands"] = list(self.bands) if self.bands else None
        return out

    @classmethod
    def from_dict(cls, data: dict) -> CaptionOptions:
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise UserError(f"unknown caption option(s): {', '.join(sorted(unknown))}")
        data = dict(data)
        if data.get("bands") is not None:
            data["bands"] = tuple(data["bands"])
        return cls(**data)


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


def fast_preprocessing(encoder) -> TilePreprocessing:
    """The default ("fast") tile preprocessing of the scene encoding, as `rsvlm localize` uses it, so
    every command shares one embedding cache entry per scene x model x grid."""
    from rs_vlm_app.models.preprocess import fast_tile_transform

    return TilePreprocessing("fast", fast_tile_transform(encoder.image_size))


def check_output_file(out: Path, suffix: str = ".gpkg") -> None:
    """The output must be a ``suffix`` file in a folder we can write (checked before any model work)."""
    from rs_vlm_app.tasks.localize import check_output_dir

    out = Path(out)
    if out.suffix.lower() != suffix:
        raise UserError(f"the output must be a {suffix} file", path=out)
    if out.is_dir():
        raise UserError(f"is a folder; give a {suffix} file name", path=out)
    check_output_dir(out.parent if str(out.parent) else Path("."))


def caption_scene(
    scene: Path,
    out: Path,
    captioner,
    options: CaptionOptions | None = None,
    *,
    clip=None,
    reporter: Reporter | None = None,
    cache: EmbeddingCache | None = None,
    store_dir: Path | None = None,
) -> CaptionResult:
    """Caption every tile of ``scene`` on the options' grid and write the layer to ``out`` (.gpkg).

    ``captioner``: rs_vlm_app.models.captioner.CocaCaptioner; ``clip``: an optional
    rs_vlm_app.models.encoder.ClipEncoder that scores each caption against its tile. Finished captions
    are checkpointed: a killed or cancelled run, started again with the same arguments, continues
    where it stopped (``store_dir``: where the checkpoints live, default <rs-vlm cache>/captions).
    """
    from rs_vlm_app.models.preprocess import fast_tile_transform

    options = options or CaptionOptions()
    reporter = reporter or NullReporter()
    out = Path(out)
    check_output_file(out)
    started = time.monotonic()
    decoding = options.decoding_options
    with open_raster(scene, bands=options.bands) as source:
        windows = build_windows(options.grid_spec, source.height, source.width, path=scene)
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
        scores = _clip_scores(source, options, clip, stored, reporter, cache) if clip is not None else None
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
    from rs_vlm_app.geo.blocks import BlockReader

    start = store.next_start
    total = len(windows)
    if start:
        reporter.log(f"resuming captioning at tile {start} of {total} ({len(store)} captions kept)")
    reader = BlockReader(source, windows, batch_size=captioner.batch_size, tile_transform=transform,
                         min_valid=options.min_valid, start=start, order="rows", reporter=reporter)
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


def _clip_scores(source, options, clip, stored, reporter, cache) -> np.ndarray:
    """Cosine between each captioned tile's CLIP embedding and its caption's CLIP text embedding."""
    from rs_vlm_app.tasks.scene_encoding import encode_scene

    embeddings, _ = encode_scene(source, options.grid_spec, clip, fast_preprocessing(clip),
                                 min_valid=options.min_valid, cache=cache, reporter=reporter)
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
