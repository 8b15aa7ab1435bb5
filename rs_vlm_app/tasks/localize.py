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

import numpy as np
from affine import Affine
from rasterio.windows import Window

from rs_vlm_app.atomic import write_text_atomic
from rs_vlm_app.errors import UserError
from rs_vlm_app.geo.aoi import Aoi, read_aoi
from rs_vlm_app.geo.raster import RasterSource
from rs_vlm_app.geo.writers import (
    VectorLayer,
    scaled_transform,
    window_polygons,
    write_geotiff_blocks,
    write_gpkg,
)
from rs_vlm_app.models.tile_encoder import TileEncoder
from rs_vlm_app.reporting import NullReporter, Reporter
from rs_vlm_app.resources import resource
from rs_vlm_app.tasks.embedding_cache import EmbeddingCache, SceneEmbeddings
from rs_vlm_app.tasks.heatmap import (
    BlockedHeatmap,
    CellLattice,
    cell_means,
    heatmap_shape,
    hotspot_factor,
    pool_mean,
)
from rs_vlm_app.tasks.hotspots import find_hotspots
from rs_vlm_app.tasks.inputs import scene_source
from rs_vlm_app.tasks.options import LocalizeOptions
from rs_vlm_app.tasks.outputs import check_output_dir
from rs_vlm_app.tasks.scene_encoding import EncodingStats, encode_scene, tile_preprocessing
from rs_vlm_app.tasks.scene_mask import SceneMask

log = logging.getLogger(__name__)

HEATMAP_NODATA = -9999.0
MANIFEST_NAME = "localize.json"


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


def slugify(text: str, taken: set[str]) -> str:
    """A file-name-safe, unique stem for a query."""
    stem = re.sub(r"\W+", "_", text.lower()).strip("_")[:60] or "query"
    slug, n = stem, 2
    while slug in taken:
        slug, n = f"{stem}_{n}", n + 1
    taken.add(slug)
    return slug


def localize(
    scene: Path | RasterSource,
    queries: list[str],
    out_dir: Path,
    encoder: TileEncoder,
    options: LocalizeOptions | None = None,
    *,
    reporter: Reporter | None = None,
    cache: EmbeddingCache | None = None,
    checked: bool = False,
) -> LocalizeResult:
    """Localize each query on ``scene``; write its heat map and hot spots under ``out_dir``.

    ``scene``: a raster file, or a RasterSource opened with the options' bands (left open).
    ``encoder``: a TileEncoder such as rs_vlm_app.models.encoder.ClipEncoder (load it once and reuse
    it: a second call on the same scene re-encodes no tile, it costs one text encoding and a matrix
    product). ``checked``: the caller (a JobSpec's check) already validated the queries and the output
    folder, so they are not checked again.
    """
    options = options or LocalizeOptions()
    reporter = reporter or NullReporter()
    queries = list(queries) if checked else check_queries(list(queries))
    out_dir = Path(out_dir)
    if not checked:
        check_output_dir(out_dir)
    area = read_aoi(options.aoi) if options.aoi else None
    with scene_source(scene, options.bands) as source:
        embeddings, stats = encode_scene(
            source, options.grid_spec, encoder, tile_preprocessing(encoder, options.compat),
            min_valid=options.min_valid, cache=cache, reporter=reporter, aoi=area,
        )
        result = LocalizeResult(scene=Path(source.path), out_dir=out_dir, manifest=out_dir / MANIFEST_NAME,
                                encoding=stats)
        text = encoder.encode_texts(queries)
        scores = embeddings.scores(text)
        products = HeatmapProducer(source, embeddings, options, aoi=area)
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

    def __init__(self, source: RasterSource, embeddings: SceneEmbeddings, options: LocalizeOptions,
                 *, aoi: Aoi | None = None):
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
        # nodata outside the scene's valid pixels and the area of interest; read block by block
        self.valid = SceneMask(source, embeddings.folder, self.shape, aoi=aoi, transform=self.transform)

    def heatmap(self, tile_scores: np.ndarray) -> BlockedHeatmap:
        """One query's normalised heat map on this producer's grid, computed block by block."""
        means, _counts = cell_means(self.windows, tile_scores, self.lattice)
        return BlockedHeatmap(self.lattice, self.source.height, self.source.width, self.shape,
                              cell_values=means[..., 0], mode=self.options.compat or "fast", sigma=self.sigma,
                              mask=self.valid)

    def probability(self, tile_scores: np.ndarray) -> np.ndarray:
        """Normalised heat map (float32, 0..1, NaN = nodata) on this producer's grid, whole (small
        grids: evaluation)."""
        return self.heatmap(tile_scores).whole()

    def write_query(self, query: str, tile_scores: np.ndarray, out_dir: Path, slug: str) -> tuple[Path, Path, int]:
        heat = self.heatmap(tile_scores)
        factor = hotspot_factor(self.shape)
        traced = np.empty((-(-self.shape[0] // factor), -(-self.shape[1] // factor)), dtype=np.float32)

        def blocks():  # written block by block; hot spots traced on a grid of at most HOTSPOT_MAX_SIDE
            for (r0, r1, c0, c1), values in heat.iter_blocks():
                pooled = pool_mean(values, factor)
                traced[r0 // factor:r0 // factor + pooled.shape[0], c0 // factor:c0 // factor + pooled.shape[1]] = pooled
                yield Window(c0, r0, c1 - c0, r1 - r0), np.where(np.isfinite(values), values, HEATMAP_NODATA)

        heat_path = out_dir / f"{slug}_heatmap.tif"
        write_geotiff_blocks(
            heat_path, blocks(), height=self.shape[0], width=self.shape[1], count=1, dtype=np.float32,
            crs=self.source.crs, transform=self.transform, nodata=HEATMAP_NODATA, cog=self.options.cog,
            band_descriptions=[query],
            tags={"query": query, "scene": str(self.source.path), "cosine_min": f"{tile_scores.min():.6f}",
                  "cosine_max": f"{tile_scores.max():.6f}", "grid": self.options.grid,
                  "mode": self.options.compat or "fast"},
        )
        _write_style(heat_path)
        spots = find_hotspots(traced, self.transform @ Affine.scale(factor), self.source.crs,
                              threshold=self.options.hotspot_threshold,
                              min_pixels=max(1, self._min_spot_pixels() // factor**2))
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


def _write_manifest(result: LocalizeResult, encoder: TileEncoder, options: LocalizeOptions) -> None:
    """localize.json: every query answered into this folder (newest run wins per query)."""
    previous: list[dict] = []
    with contextlib.suppress(OSError, ValueError):
        previous = json.loads(result.manifest.read_text()).get("queries", [])
    answered = {q.query for q in result.queries}
    entries = [q for q in previous if q.get("query") not in answered]
    for q in result.queries:
        entry = asdict(q)
        entry.update(heatmap=q.heatmap.name, vectors=q.vectors.name, scene=str(result.scene),
                     model=encoder.display_name, grid=options.grid, mode=options.compat or "fast",
                     aoi=options.aoi)
        entries.append(entry)
    write_text_atomic(result.manifest, json.dumps({"queries": entries}, indent=1, default=str))
