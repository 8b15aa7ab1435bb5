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

import numpy as np
import shapely

from rs_vlm_app.errors import UserError
from rs_vlm_app.geo.aoi import Aoi, read_aoi
from rs_vlm_app.geo.raster import open_raster
from rs_vlm_app.geo.writers import VectorLayer, window_polygons, write_gpkg
from rs_vlm_app.models.tile_encoder import TileEncoder
from rs_vlm_app.reporting import NullReporter, Reporter, check_cancelled
from rs_vlm_app.tasks.embedding_cache import EmbeddingCache, SceneEmbeddings
from rs_vlm_app.tasks.options import SearchOptions, target_crs
from rs_vlm_app.tasks.outputs import check_vector_output
from rs_vlm_app.tasks.scene_encoding import encode_scene, fast_preprocessing

LAYER = "results"


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


def check_search_inputs(query: str, scenes: list[Path]) -> tuple[str, list[Path]]:
    """The query with its white space tidied, and the scenes (each an existing file)."""
    from rs_vlm_app.tasks.inputs import check_input_file

    query = " ".join(str(query).split())
    if not query:
        raise UserError("the query is empty; give a description such as \"a marina with boats\"")
    if not scenes:
        raise UserError("give at least one scene to search")
    return query, [check_input_file(Path(s)) for s in scenes]


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
    encoder: TileEncoder,
    options: SearchOptions | None = None,
    *,
    reporter: Reporter | None = None,
    cache: EmbeddingCache | None = None,
    checked: bool = False,
) -> SearchResult:
    """Rank the tiles of ``scenes`` by similarity to ``query``; write the top ones to ``out`` (.gpkg)
    and, unless turned off, a contact sheet ``out`` with suffix .png. ``checked``: the caller (a
    JobSpec's check) already validated the query, the scenes and ``out``."""
    options = options or SearchOptions()
    reporter = reporter or NullReporter()
    out = Path(out)
    if checked:
        scenes = [Path(s) for s in scenes]
    else:
        query, scenes = check_search_inputs(query, scenes)
        check_vector_output(out)
    started = time.monotonic()
    area = read_aoi(options.aoi) if options.aoi else None
    embeddings, frames, encoded_now = [], [], 0
    for i, scene in enumerate(scenes):
        check_cancelled(reporter)
        reporter.progress("scenes", i, len(scenes))
        with open_raster(scene, bands=options.bands) as source:
            frames.append((source.crs if source.georeferenced else None, source.transform, source.georeferenced))
            if area is not None and not _overlaps(area, source):
                reporter.log(f"{scene.name}: outside the area of interest; not searched")
                embeddings.append(_no_tiles(encoder))
                continue
            found, stats = encode_scene(source, options.grid_spec, encoder, fast_preprocessing(encoder),
                                        min_valid=options.min_valid, cache=cache, reporter=reporter, aoi=area)
            embeddings.append(found)
            encoded_now += not stats.cache_hit
    reporter.progress("scenes", len(scenes), len(scenes))
    if area is not None and not any(len(e.windows) for e in embeddings):
        raise UserError(f"the area of interest does not intersect any of the {len(scenes)} scene(s)",
                        path=area.source)
    hits = rank_tiles(embeddings, encoder.encode_texts([query])[0], options.top_k)
    crs, note = _choose_crs(scenes, frames, options.crs)
    sheet = None
    if options.contact_sheet and hits:
        sheet = _write_sheet(out.with_suffix(".png"), scenes, hits, query, options, reporter)
    write_gpkg(out, [_layer(query, scenes, frames, hits, crs)], crs=crs)
    return SearchResult(query=query, out=out, sheet=sheet, hits=hits, scenes=scenes,
                        crs=crs.to_string() if crs is not None else None, crs_note=note, encoded_now=encoded_now,
                        seconds=time.monotonic() - started, options=options.to_dict())


def _overlaps(area: Aoi, source) -> bool:
    box = np.array([[0, source.height, 0, source.width]])
    return bool(area.window_mask(box, source.transform, source.crs if source.georeferenced else None)[0])


def _no_tiles(encoder) -> SceneEmbeddings:
    """A scene outside the area of interest: nothing to rank."""
    dim = int(encoder.embed_dim)
    return SceneEmbeddings("", Path(), np.zeros((0, 5), np.int64), np.zeros(0, bool),
                           np.zeros((0, dim), np.float32), {})


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
