"""Semantic localization: a raster and text queries in; per query a heat map and hot spots out.

raster -> tile grid -> block reader -> tile preprocessing -> CLIP image embeddings (cached per
scene x model x grid x preprocessing) x text embedding -> per-tile cosine -> per-pixel mean over
covering tiles -> normalise, smooth -> GeoTIFF heat map + GeoPackage (hot spots, tile scores).

Two modes share the pipeline:
- fast (default): tiles resized straight to the model's input size (area interpolation, no JPEG),
  batched; the heat map is written on a grid of ``smallest window / 32`` source pixels over the
  scene's exact bounds, smoothed with a Gaussian of sigma = smallest window / 4 that ignores nodata,
  then min-max normalised over valid pixels (float, no 8-bit quantisation).
- ``compat="selo"``: the published protocol step for step (tiles resized to 256, JPEG quality 95,
  resized to the model size; per-pixel mean at full resolution; min-max; uint8 truncation; 251 px
  median blur), so numbers compare with published ones.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from rs_vlm_app.atomic import atomic_path, write_text_atomic
from rs_vlm_app.errors import UserError
from rs_vlm_app.geo.grid import SELO_GRID, GridSpec
from rs_vlm_app.geo.raster import RasterSource, open_raster
from rs_vlm_app.geo.writers import VectorLayer, scaled_transform, window_polygons, write_geotiff, write_gpkg
from rs_vlm_app.reporting import NullReporter, Reporter
from rs_vlm_app.resources import resource
from rs_vlm_app.tasks.embedding_cache import EmbeddingCache, SceneEmbeddings
from rs_vlm_app.tasks.heatmap import (
    CellLattice,
    cell_means,
    heatmap_shape,
    minmax,
    paint_cells,
    selo_probmap,
    smooth_gaussian,
)
from rs_vlm_app.tasks.hotspots import find_hotspots
from rs_vlm_app.tasks.scene_encoding import EncodingStats, TilePreprocessing, encode_scene

log = logging.getLogger(__name__)

HEATMAP_NODATA = -9999.0
MANIFEST_NAME = "localize.json"


@dataclass
class LocalizeOptions:
    grid: GridSpec = SELO_GRID
    compat: Literal["selo"] | None = None
    bands: tuple[int, ...] | None = None
    min_valid: float = 0.5             # tiles with less valid (non-nodata) area are not encoded
    hotspot_threshold: float = 0.6     # on the normalised heat map
    heatmap_pixel: float | None = None  # source pixels per heat-map pixel; None = mode default
    cog: bool = False


@dataclass
class QueryResult:
    query: str
    heatmap: Path
    vectors: Path               # GeoPackage with layers "hotspots" and "tiles"
    hotspots: int
    best_cosine: float          # highest raw tile cosine for this query
    seconds: float


@dataclass
class LocalizeResult:
    scene: Path
    out_dir: Path
    manifest: Path
    queries: list[QueryResult] = field(default_factory=list)
    encoding: EncodingStats | None = None

    def files(self) -> list[Path]:
        out = [self.manifest]
        for q in self.queries:
            out += [q.heatmap, q.vectors]
        return out


def check_queries(queries: list[str]) -> list[str]:
    cleaned = [" ".join(q.split()) for q in queries]
    if not cleaned:
        raise UserError("give at least one text query")
    for i, q in enumerate(cleaned):
        if not q:
            raise UserError(f"query {i + 1} is empty; give a sentence such as \"airplanes parked near a terminal\"")
    return cleaned


def check_output_dir(out_dir: Path) -> None:
    """Fail early (before any model work) when the output folder cannot be written."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(out_dir / ".rsvlm-write-test") as probe:
            probe.write_bytes(b"")
        (out_dir / ".rsvlm-write-test").unlink()
    except OSError as exc:
        raise UserError(f"cannot write to the output folder ({exc.strerror or exc})", path=out_dir) from None


def slugify(text: str, taken: set[str]) -> str:
    """A file-name-safe, unique stem for a query."""
    stem = re.sub(r"\W+", "_", text.lower()).strip("_")[:60] or "query"
    slug, n = stem, 2
    while slug in taken:
        slug, n = f"{stem}_{n}", n + 1
    taken.add(slug)
    return slug


def tile_preprocessing(encoder, compat: str | None) -> TilePreprocessing:
    from rs_vlm_app.models.preprocess import fast_tile_transform, selo_tile_transform

    if compat == "selo":
        return TilePreprocessing("selo", selo_tile_transform(encoder.image_size))
    return TilePreprocessing("fast", fast_tile_transform(encoder.image_size))


def localize(
    scene: Path,
    queries: list[str],
    out_dir: Path,
    encoder,
    options: LocalizeOptions | None = None,
    *,
    reporter: Reporter | None = None,
    cache: EmbeddingCache | None = None,
) -> LocalizeResult:
    """Localize each query on ``scene``; write its heat map and hot spots under ``out_dir``.

    ``encoder`` is a rs_vlm_app.models.encoder.ClipEncoder (load it once and reuse it: a second call
    on the same scene re-encodes no tile, it costs one text encoding and a matrix product).
    """
    options = options or LocalizeOptions()
    reporter = reporter or NullReporter()
    queries = check_queries(list(queries))
    out_dir = Path(out_dir)
    check_output_dir(out_dir)
    with open_raster(scene, bands=options.bands) as source:
        embeddings, stats = encode_scene(
            source, options.grid, encoder, tile_preprocessing(encoder, options.compat),
            min_valid=options.min_valid, cache=cache, reporter=reporter,
        )
        result = LocalizeResult(scene=Path(scene), out_dir=out_dir, manifest=out_dir / MANIFEST_NAME,
                                encoding=stats)
        text = encoder.encode_texts(queries)
        scores = embeddings.scores(text)
        products = HeatmapProducer(source, embeddings, options)
        taken = _existing_slugs(out_dir, queries)
        for k, query in enumerate(queries):
            started = time.monotonic()
            reporter.progress("write results", k, len(queries))
            slug = slugify(query, taken)
            heatmap, vectors, n_spots = products.write_query(query, scores[:, k], out_dir, slug)
            result.queries.append(QueryResult(query, heatmap, vectors, n_spots, float(scores[:, k].max()),
                                              time.monotonic() - started))
        reporter.progress("write results", len(queries), len(queries))
    _write_manifest(result, encoder, options)
    return result


class HeatmapProducer:
    """Turns one query's tile scores into the heat map, hot spots and tile layer of a scene."""

    def __init__(self, source: RasterSource, embeddings: SceneEmbeddings, options: LocalizeOptions):
        self.source = source
        self.options = options
        self.windows = embeddings.encoded_windows
        self.lattice = CellLattice.from_windows(self.windows, source.height, source.width)
        smallest = int(self.windows[:, 4].min())
        if options.heatmap_pixel is not None:
            pixel = options.heatmap_pixel
        else:
            pixel = 1.0 if options.compat == "selo" else smallest / 32
        self.shape = heatmap_shape(source.height, source.width, pixel)
        self.transform = scaled_transform(source.transform, source.width, source.height,
                                          self.shape[1], self.shape[0])
        self.sigma = 0.0 if options.compat == "selo" else (smallest / 4) * self.shape[0] / source.height
        self.valid = cached_mask(source, embeddings, self.shape)

    def probability(self, tile_scores: np.ndarray) -> np.ndarray:
        """Normalised heat map (float32, 0..1, NaN = nodata) on this producer's grid."""
        means, counts = cell_means(self.windows, tile_scores, self.lattice)
        mean_map = paint_cells(means[..., 0], self.lattice, self.source.height, self.source.width, self.shape)
        valid = self.valid & np.isfinite(mean_map)
        if self.options.compat == "selo":
            gray = selo_probmap(np.where(np.isfinite(mean_map), mean_map, np.nanmin(mean_map)))
            return np.where(valid, gray.astype(np.float32) / 255.0, np.nan).astype(np.float32)
        return minmax(smooth_gaussian(mean_map, valid, self.sigma), valid)

    def write_query(self, query: str, tile_scores: np.ndarray, out_dir: Path, slug: str) -> tuple[Path, Path, int]:
        heat = self.probability(tile_scores)
        heat_path = out_dir / f"{slug}_heatmap.tif"
        write_geotiff(
            heat_path,
            np.where(np.isfinite(heat), heat, HEATMAP_NODATA).astype(np.float32),
            crs=self.source.crs, transform=self.transform, nodata=HEATMAP_NODATA, cog=self.options.cog,
            band_descriptions=[query],
            tags={"query": query, "scene": str(self.source.path), "cosine_min": f"{tile_scores.min():.6f}",
                  "cosine_max": f"{tile_scores.max():.6f}", "grid": self.options.grid.key(),
                  "mode": self.options.compat or "fast"},
        )
        _write_style(heat_path)
        spots = find_hotspots(heat, self.transform, self.source.crs, threshold=self.options.hotspot_threshold,
                              min_pixels=self._min_spot_pixels())
        vectors = out_dir / f"{slug}.gpkg"
        write_gpkg(vectors, [self._hotspot_layer(query, spots), self._tile_layer(query, tile_scores)],
                   crs=self.source.crs)
        return heat_path, vectors, len(spots)

    def _min_spot_pixels(self) -> int:
        """Drop specks smaller than (smallest window / 8)^2 source pixels."""
        smallest = int(self.windows[:, 4].min())
        scale = self.shape[0] / self.source.height
        return max(1, int((smallest / 8 * scale) ** 2))

    def _hotspot_layer(self, query: str, spots) -> VectorLayer:
        return VectorLayer(
            name="hotspots",
            geometries=[s.polygon for s in spots],
            fields={
                "rank": np.arange(1, len(spots) + 1, dtype=np.int64),
                "query": [query] * len(spots),
                "score": np.array([s.score for s in spots], dtype=np.float64),
                "mean_score": np.array([s.mean_score for s in spots], dtype=np.float64),
                "area": np.array([s.area for s in spots], dtype=np.float64),
                "area_unit": ["m2" if self.source.georeferenced else "px2"] * len(spots),
                "peak_x": np.array([s.peak_x for s in spots], dtype=np.float64),
                "peak_y": np.array([s.peak_y for s in spots], dtype=np.float64),
            },
            geometry_type="MultiPolygon",
        )

    def _tile_layer(self, query: str, tile_scores: np.ndarray) -> VectorLayer:
        w = self.windows
        return VectorLayer(
            name="tiles",
            geometries=window_polygons(self.source.transform, w),
            fields={
                "row0": w[:, 0].astype(np.int64), "row1": w[:, 1].astype(np.int64),
                "col0": w[:, 2].astype(np.int64), "col1": w[:, 3].astype(np.int64),
                "scale": w[:, 4].astype(np.int64),
                "score": tile_scores.astype(np.float64),
                "query": [query] * len(w),
            },
            geometry_type="Polygon",
        )


def cached_mask(source: RasterSource, embeddings: SceneEmbeddings, shape: tuple[int, int]) -> np.ndarray:
    """The scene's validity mask on the heat-map grid, kept beside the embeddings after the first read."""
    path = embeddings.folder / f"mask_{shape[0]}x{shape[1]}.npy"
    try:
        return np.load(path)
    except (OSError, ValueError):
        mask = source.read_mask(out_shape=shape).astype(bool)
        try:
            with atomic_path(path) as tmp:
                np.save(tmp, mask)
        except OSError:
            pass  # a read-only cache only costs the re-read next time
        return mask


def _write_style(heatmap: Path) -> None:
    """QGIS loads ``<name>.qml`` beside a raster as its default style."""
    style = resource("styles", "heatmap.qml")
    if style.is_file():
        write_text_atomic(heatmap.with_suffix(".qml"), style.read_text(encoding="utf-8"))


def _existing_slugs(out_dir: Path, queries: list[str]) -> set[str]:
    """Slugs of earlier runs' other queries in this folder, so a new query never overwrites them."""
    try:
        manifest = json.loads((out_dir / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return set()
    return {Path(q["heatmap"]).name.removesuffix("_heatmap.tif")
            for q in manifest.get("queries", []) if q.get("query") not in queries}


def _write_manifest(result: LocalizeResult, encoder, options: LocalizeOptions) -> None:
    """localize.json: every query answered into this folder (newest run wins per query)."""
    previous: list[dict] = []
    with contextlib.suppress(OSError, ValueError):
        previous = json.loads(result.manifest.read_text()).get("queries", [])
    answered = {q.query for q in result.queries}
    entries = [q for q in previous if q.get("query") not in answered]
    for q in result.queries:
        entry = asdict(q)
        entry.update(heatmap=q.heatmap.name, vectors=q.vectors.name, scene=str(result.scene),
                     model=getattr(getattr(encoder, "loaded", None), "display_name", ""), grid=options.grid.key(), mode=options.compat or "fast")
        entries.append(entry)
    write_text_atomic(result.manifest, json.dumps({"queries": entries}, indent=1, default=str))
