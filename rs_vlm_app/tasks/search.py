"""Text search over the tiles of many scenes: rank every tile by cosine to a query.

Each scene is encoded once into the shared embedding cache (the one `rsvlm localize` and `classify`
use); every search after that costs one text encoding and a matrix product over the memory-mapped
embeddings. Footprints of the best tiles go to a GeoPackage layer in one CRS (scenes in other CRSs
are reprojected), and a PNG contact sheet shows them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import shapely

from rs_vlm_app.errors import UserError
from rs_vlm_app.geo.raster import open_raster
from rs_vlm_app.geo.writers import VectorLayer, window_polygons, write_gpkg
from rs_vlm_app.reporting import NullReporter, Reporter, check_cancelled
from rs_vlm_app.tasks.captioning import check_output_file, fast_preprocessing
from rs_vlm_app.tasks.embedding_cache import EmbeddingCache, SceneEmbeddings
from rs_vlm_app.tasks.options import TileOptionsIO, check_bands, check_count, check_fraction, parse_grid
from rs_vlm_app.tasks.scene_encoding import encode_scene

LAYER = "results"


@dataclass(frozen=True)
class SearchOptions(TileOptionsIO):
    """How `search_scenes` works (plain data: JSON-serialisable)."""

    task_name: ClassVar[str] = "search"

    top_k: int = 20
    grid: str = "256"
    bands: tuple[int, ...] | None = None
    min_valid: float = 0.5
    crs: str = "first"            # "first" (the first scene's CRS) or any CRS text, e.g. "EPSG:4326"
    contact_sheet: bool = True
    columns: int = 5
    cell: int = 192               # contact sheet: pixels per tile

    def __post_init__(self) -> None:
        object.__setattr__(self, "grid", parse_grid(self.grid).key())
        object.__setattr__(self, "bands", check_bands(self.bands))
        check_fraction("min_valid", self.min_valid)
        check_count("top_k", self.top_k, maximum=100_000)
        check_count("columns", self.columns, maximum=100)
        check_count("cell", self.cell, minimum=16, maximum=2048)
        if not isinstance(self.crs, str) or not self.crs.strip():
            raise UserError("crs must be 'first' or a CRS such as EPSG:4326")
        if self.crs != "first":
            target_crs(self.crs)



@dataclass(frozen=True)
class Hit:
    rank: int
    score: float
    scene: int          # index into the scenes searched
    window: tuple[int, int, int, int, int]  # row0, row1, col0, col1, scale


@dataclass
class SearchResult:
    query: str
    out: Path
    sheet: Path | None
    hits: list[Hit]
    scenes: list[Path]
    crs: str | None
    crs_note: str
    encoded_now: int          # scenes encoded by this call (the others came from the cache)
    seconds: float
    options: dict = field(default_factory=dict)


def target_crs(text: str):
    from rasterio.crs import CRS
    from rasterio.errors import CRSError

    try:
        return CRS.from_user_input(text)
    except CRSError:
        raise UserError(f"unknown CRS {text!r}; give e.g. EPSG:4326 or 'first'") from None


def rank_tiles(scenes: list[SceneEmbeddings], text_embedding: np.ndarray, k: int) -> list[Hit]:
    """The ``k`` tiles of all ``scenes`` most similar to ``text_embedding`` (D,), best first.

    Per scene a matrix-vector product over the encoded tiles and a partial sort; ties are broken by
    scene order, then window order, so results are reproducible.
    """
    text = np.asarray(text_embedding, dtype=np.float32).reshape(-1)
    candidates: list[tuple[float, int, int]] = []
    for s, scene in enumerate(scenes):
        n_encoded = int(np.count_nonzero(scene.encoded))
        if not n_encoded:
            continue
        # straight over the memory-mapped rows (no copy); tiles never encoded are zero rows: masked out
        scores = np.asarray(scene.embeddings @ text, dtype=np.float32)
        scores[~scene.encoded] = -np.inf
        take = min(k, n_encoded)
        best = np.argpartition(-scores, take - 1)[:take]
        candidates.extend((float(scores[b]), s, int(b)) for b in best)
    candidates.sort(key=lambda c: (-c[0], c[1], c[2]))
    return [Hit(rank, score, s, tuple(int(v) for v in scenes[s].windows[w])) for rank, (score, s, w)
            in enumerate(candidates[:k], start=1)]


def search_scenes(
    scenes: list[Path],
    query: str,
    out: Path,
    encoder,
    options: SearchOptions | None = None,
    *,
    reporter: Reporter | None = None,
    cache: EmbeddingCache | None = None,
) -> SearchResult:
    """Rank the tiles of ``scenes`` by similarity to ``query``; write the top ones to ``out`` (.gpkg)
    and, unless turned off, a contact sheet ``out`` with suffix .png."""
    options = options or SearchOptions()
    reporter = reporter or NullReporter()
    query = " ".join(str(query).split())
    if not query:
        raise UserError("the query is empty; give a description such as \"a marina with boats\"")
    scenes = [Path(s) for s in scenes]
    if not scenes:
        raise UserError("give at least one scene to search")
    out = Path(out)
    check_output_file(out)
    started = time.monotonic()
    embeddings, frames, encoded_now = [], [], 0
    for i, scene in enumerate(scenes):
        check_cancelled(reporter)
        reporter.progress("scenes", i, len(scenes))
        with open_raster(scene, bands=options.bands) as source:
            found, stats = encode_scene(source, options.grid_spec, encoder, fast_preprocessing(encoder),
                                        min_valid=options.min_valid, cache=cache, reporter=reporter)
            embeddings.append(found)
            frames.append((source.crs if source.georeferenced else None, source.transform, source.georeferenced))
            encoded_now += not stats.cache_hit
    reporter.progress("scenes", len(scenes), len(scenes))
    hits = rank_tiles(embeddings, encoder.encode_texts([query])[0], options.top_k)
    crs, note = _choose_crs(scenes, frames, options.crs)
    sheet = None
    if options.contact_sheet and hits:
        sheet = _write_sheet(out.with_suffix(".png"), scenes, hits, query, options, reporter)
    write_gpkg(out, [_layer(query, scenes, frames, hits, crs)], crs=crs)
    return SearchResult(query=query, out=out, sheet=sheet, hits=hits, scenes=scenes,
                        crs=crs.to_string() if crs is not None else None, crs_note=note, encoded_now=encoded_now,
                        seconds=time.monotonic() - started, options=options.to_dict())


def _choose_crs(scenes, frames, wanted: str):
    georeferenced = [g for _, _, g in frames]
    if not any(georeferenced):
        note = "pixel coordinates (no scene is georeferenced)"
        if len(scenes) > 1:
            note += "; footprints of different scenes share that frame"
        return None, note
    if not all(georeferenced):
        bad = scenes[georeferenced.index(False)]
        raise UserError("has no georeferencing, so its tiles cannot be placed with the other scenes'; "
                        "search it on its own", path=bad)
    if any(crs is None for crs, _, _ in frames):
        bad = scenes[[crs is None for crs, _, _ in frames].index(True)]
        raise UserError("has a geotransform but no CRS, so its tiles cannot be reprojected; search it on its own",
                        path=bad)
    if wanted == "first":
        return frames[0][0], f"{frames[0][0].to_string()} (the first scene's CRS)"
    crs = target_crs(wanted)
    return crs, f"{crs.to_string()} (as asked)"


def _layer(query, scenes, frames, hits: list[Hit], crs) -> VectorLayer:
    polygons = []
    for hit in hits:
        src_crs, transform, _ = frames[hit.scene]
        polygon = window_polygons(transform, np.array([hit.window]))[0]
        polygons.append(reproject(polygon, src_crs, crs) if crs is not None else polygon)
    w = np.array([h.window for h in hits], dtype=np.int64).reshape(-1, 5)
    return VectorLayer(
        name=LAYER,
        geometries=polygons,
        fields={
            "rank": np.array([h.rank for h in hits], dtype=np.int64),
            "score": np.array([h.score for h in hits], dtype=np.float64),
            "scene": [str(scenes[h.scene]) for h in hits],
            "scene_name": [scenes[h.scene].name for h in hits],
            "row0": w[:, 0], "row1": w[:, 1], "col0": w[:, 2], "col1": w[:, 3], "scale": w[:, 4],
            "query": [query] * len(hits),
        },
        geometry_type="Polygon",
    )


def reproject(polygon: shapely.Polygon, src_crs, dst_crs) -> shapely.Polygon:
    """``polygon`` from ``src_crs`` to ``dst_crs``, its edges densified first so they may curve."""
    if src_crs == dst_crs:
        return polygon
    from pyproj import CRS as ProjCRS
    from pyproj import Transformer

    transformer = Transformer.from_crs(ProjCRS.from_wkt(src_crs.to_wkt()), ProjCRS.from_wkt(dst_crs.to_wkt()),
                                       always_xy=True)
    minx, miny, maxx, maxy = polygon.bounds
    dense = shapely.segmentize(polygon, max(maxx - minx, maxy - miny) / 16 or 1.0)

    def forward(xy: np.ndarray) -> np.ndarray:
        x, y = transformer.transform(xy[:, 0], xy[:, 1])
        return np.column_stack([x, y])

    return shapely.transform(dense, forward)


def _write_sheet(path: Path, scenes, hits: list[Hit], query: str, options: SearchOptions, reporter) -> Path:
    from rs_vlm_app.tasks.contact_sheet import render_contact_sheet

    tiles: list[np.ndarray | None] = [None] * len(hits)
    by_scene: dict[int, list[int]] = {}
    for i, hit in enumerate(hits):
        by_scene.setdefault(hit.scene, []).append(i)
    reporter.progress("contact sheet", 0, len(hits))
    done = 0
    for s, members in by_scene.items():
        with open_raster(scenes[s], bands=options.bands) as source:
            for i in members:
                r0, r1, c0, c1, _ = hits[i].window
                side = min(options.cell, r1 - r0, c1 - c0)
                tiles[i], _ = source.read_rgb(r0, r1, c0, c1, out_shape=(side, side))
                done += 1
                reporter.progress("contact sheet", done, len(hits))
    labels = [f"#{h.rank}  {h.score:.3f}" for h in hits]
    sublabels = [f"{scenes[h.scene].name}  r{h.window[0]} c{h.window[2]}" for h in hits]
    return render_contact_sheet(tiles, labels, path, sublabels=sublabels, columns=options.columns,
                                cell=options.cell, title=f"\u201c{query}\u201d: top {len(hits)} tiles "
                                                         f"of {len(scenes)} scene(s)")
