"""`rsvlm search --archive`: the best tiles of a whole archive for a text, as EPSG:4326 footprints.

Parts the ANN index covers are searched approximately and re-ranked exactly; all other parts (all
of them in an archive below the ANN threshold) exactly, streamed one part at a time. --where and
--aoi drop scenes first (by date, name and footprint), then tiles.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rs_vlm_app.archive.ann import (
    DEFAULT_NPROBE,
    DEFAULT_REFINE,
    ann_candidates,
    candidate_count,
    load_index,
)
from rs_vlm_app.archive.filters import TileFilter
from rs_vlm_app.archive.store import (
    Archive,
    Part,
    SceneInfo,
    pyarrow_modules,
    read_tile_table,
    windows_sidecar,
)
from rs_vlm_app.errors import UserError
from rs_vlm_app.reporting import NullReporter, Reporter, check_cancelled

LAYER = "results"
WINDOW_COLUMNS = ["row0", "row1", "col0", "col1", "scale"]


@dataclass(frozen=True)
class ArchiveHit:
    rank: int
    score: float
    scene: SceneInfo
    part: int
    row: int
    window: tuple[int, int, int, int, int]


@dataclass
class ArchiveSearchResult:
    query: str
    out: Path
    sheet: Path | None
    hits: list[ArchiveHit]
    mode: str                    # "exact", "ann" or "ann+exact"
    scenes_searched: int
    tiles_searched: int
    seconds: float
    extra: dict = field(default_factory=dict)


def part_windows(part: Part) -> np.ndarray:
    """Every window (N, 5) of a part: its sidecar, or its tile table for older archives."""
    sidecar = windows_sidecar(part.table)
    if sidecar.is_file():
        return np.load(sidecar).astype(np.int64)
    table = read_tile_table(part.table, WINDOW_COLUMNS)
    return np.column_stack([table[c].to_numpy() for c in WINDOW_COLUMNS]).astype(np.int64).reshape(-1, 5)


def rank_archive(archive: Archive, text: np.ndarray, k: int, filt: TileFilter | None = None, *,
                 exact: bool = False, nprobe: int = DEFAULT_NPROBE, refine: int = DEFAULT_REFINE,
                 reporter: Reporter | None = None) -> tuple[list[ArchiveHit], dict]:
    """The ``k`` tiles most similar to ``text`` (D,), best first; ties by scene, part, row."""
    reporter = reporter or NullReporter()
    filt = filt or TileFilter([])
    text = np.asarray(text, dtype=np.float32).reshape(-1)
    scenes = archive.scenes()
    allowed = {sid for sid, s in scenes.items() if filt.scene_ok(s)}
    ann = None if exact else load_index(archive)
    covered = ann.covers() if ann is not None else set()
    found: list[tuple[float, str, int, int]] = []
    searched = 0
    parts = [p for p in archive.parts(sorted(allowed))]
    for i, part in enumerate(parts):
        check_cancelled(reporter)
        reporter.progress("search parts", i, len(parts))
        if (part.scene.id, part.index) in covered:
            continue
        embeddings = part.embeddings()
        if not len(embeddings):
            continue
        scores = np.asarray(embeddings @ text, dtype=np.float32)
        if filt.active:
            scores[~filt.tile_mask(part.scene, part_windows(part))] = -np.inf
        valid = int(np.isfinite(scores).sum())
        searched += valid
        take = min(k, valid)
        if take:
            best = np.argpartition(-scores, take - 1)[:take]
            found += [(float(scores[b]), part.scene.id, part.index, int(b)) for b in best]
    reporter.progress("search parts", len(parts), len(parts))
    mode = "exact"
    if ann is not None and ann.parts:
        mode = "ann" if len(covered) == sum(s.parts for s in scenes.values()) else "ann+exact"
        found += _ann_search(archive, ann, text, k, filt, allowed, nprobe, refine)
        searched += int(ann.index.ntotal)
    found.sort(key=lambda c: (-c[0], c[1], c[2], c[3]))
    top = found[:k]
    windows = _windows_of(archive, top)
    hits = [ArchiveHit(rank, score, scenes[sid], part, row, windows[(sid, part, row)])
            for rank, (score, sid, part, row) in enumerate(top, start=1)]
    return hits, {"mode": mode, "scenes": len(allowed), "tiles": searched}


def _ann_search(archive: Archive, ann, text, k, filt: TileFilter, allowed: set[str], nprobe: int,
                refine: int) -> list[tuple[float, str, int, int]]:
    mask = None
    if filt.active:
        mask = np.zeros(int(ann.index.ntotal), dtype=bool)
        scenes = archive.scenes()
        for ordinal, (sid, index, rows) in enumerate(ann.parts):
            if sid in allowed and rows:
                start = int(ann.offsets[ordinal])
                part = Part(scenes[sid], index, *archive.part_paths(sid, index))
                mask[start:start + rows] = filt.tile_mask(scenes[sid], part_windows(part))
        if not mask.any():
            return []
    ids = ann_candidates(ann, text, candidate_count(k, refine), mask, nprobe=nprobe)
    return exact_rerank(archive, ann, ids, text, k, allowed)


def exact_rerank(archive: Archive, ann, ids: np.ndarray, text: np.ndarray, k: int,
                 allowed: set[str]) -> list[tuple[float, str, int, int]]:
    """The ``k`` best of the candidates ``ids`` by exact cosine: one gather of the candidates' rows
    per part from its memory-mapped embeddings (rows in file order), one matrix-vector product."""
    ordinal, rows = ann.locate(np.asarray(ids, dtype=np.int64))
    order = np.lexsort((rows, ordinal))
    ordinal, rows = ordinal[order], rows[order]
    starts = np.flatnonzero(np.r_[True, ordinal[1:] != ordinal[:-1]]) if len(ordinal) else np.zeros(0, int)
    out = []
    for begin, end in zip(starts, np.r_[starts[1:], len(ordinal)], strict=True):
        sid, index, _ = ann.parts[int(ordinal[begin])]
        if sid not in allowed:
            continue
        picked = rows[begin:end]
        vectors = ann.embeddings(int(ordinal[begin]), archive.part_paths(sid, index)[1])
        embeddings = np.asarray(vectors[picked])
        # the exact re-rank; einsum, not BLAS: a threaded gemv of a few thousand rows waits on threads
        scores = np.einsum("ij,j->i", embeddings, text.astype(embeddings.dtype, copy=False)).astype(np.float32)
        keep = np.argpartition(-scores, k - 1)[:k] if len(scores) > k else np.arange(len(scores))
        out += [(float(scores[i]), sid, int(index), int(picked[i])) for i in keep]
    return out


def _windows_of(archive: Archive, top) -> dict[tuple[str, int, int], tuple[int, ...]]:
    out: dict = {}
    by_part: dict[tuple[str, int], list[int]] = {}
    for _, sid, part, row in top:
        by_part.setdefault((sid, part), []).append(row)
    for (sid, index), rows in by_part.items():
        windows = rows_windows(archive.part_paths(sid, index)[0], np.asarray(rows, dtype=np.int64))
        for row, window in zip(rows, windows, strict=True):
            out[(sid, index, row)] = tuple(int(v) for v in window)
    return out


def rows_windows(table: Path, rows: np.ndarray) -> np.ndarray:
    """The windows (len(rows), 5) of some rows of a part's tile table, reading only the row groups
    that hold them (a top-k spread over many parts reads k groups, not k whole tables); from the
    windows sidecar when the part has one."""
    sidecar = windows_sidecar(table)
    if sidecar.is_file():
        return np.load(sidecar, mmap_mode="r")[rows].astype(np.int64)
    _, pq = pyarrow_modules()
    handle = pq.ParquetFile(table)
    sizes = np.array([handle.metadata.row_group(g).num_rows for g in range(handle.num_row_groups)], np.int64)
    starts = np.concatenate([[0], np.cumsum(sizes)])
    group = np.searchsorted(starts, rows, side="right") - 1
    wanted = np.unique(group)
    read = handle.read_row_groups([int(g) for g in wanted], columns=WINDOW_COLUMNS)
    windows = np.column_stack([read[c].to_numpy() for c in WINDOW_COLUMNS]).astype(np.int64).reshape(-1, 5)
    first = np.concatenate([[0], np.cumsum(sizes[wanted])])       # where each read group begins
    return windows[first[np.searchsorted(wanted, group)] + rows - starts[group]]


def search_archive(archive_path: Path, query: str, out: Path, encoder, *, top_k: int = 20,
                   filt: TileFilter | None = None, contact_sheet: bool = True, columns: int = 5, cell: int = 192,
                   exact: bool = False, reporter: Reporter | None = None) -> ArchiveSearchResult:
    """Rank the archive's tiles by similarity to ``query``; write ``out`` (.gpkg, EPSG:4326) and a
    contact sheet (``out`` with suffix .png)."""
    from rs_vlm_app.archive.engines import encoder_recipe
    from rs_vlm_app.archive.units import TileSettings

    reporter = reporter or NullReporter()
    started = time.monotonic()
    query = " ".join(str(query).split())
    if not query:
        raise UserError("the query is empty; give a description such as \"a marina with boats\"")
    archive = Archive(Path(archive_path))
    recipe = encoder_recipe(encoder, TileSettings())
    archive.check_query_model(recipe.model, recipe.model_name, recipe.embed_dim)
    text = encoder.encode_texts([query])[0]
    hits, info = rank_archive(archive, text, top_k, filt, exact=exact, reporter=reporter)
    sheet = None
    if contact_sheet and hits:
        sheet = write_sheet(Path(out).with_suffix(".png"), hits, query, archive, columns, cell, reporter)
    write_hits(Path(out), hits, query, archive)
    return ArchiveSearchResult(query, Path(out), sheet, hits, info["mode"], info["scenes"], info["tiles"],
                               time.monotonic() - started)


def write_hits(out: Path, hits: list[ArchiveHit], query: str, archive: Archive) -> None:
    """The hits as a GeoPackage layer in EPSG:4326, with the native CRS, footprint and window as fields."""
    import shapely
    from pyproj import CRS

    from rs_vlm_app.geo.writers import VectorLayer, write_gpkg

    geometries, native = [], []
    for hit in hits:
        table = read_tile_table(archive.part_paths(hit.scene.id, hit.part)[0], ["geometry", "footprint_native"])
        geometries.append(shapely.from_wkb(table["geometry"][hit.row].as_py()))
        native.append(shapely.from_wkb(table["footprint_native"][hit.row].as_py()).wkt)
    crs_names = {}
    for hit in hits:
        if hit.scene.id not in crs_names:
            crs = CRS.from_wkt(hit.scene.crs_wkt)
            epsg = crs.to_epsg()
            crs_names[hit.scene.id] = f"EPSG:{epsg}" if epsg else crs.to_wkt()
    w = np.array([h.window for h in hits], dtype=np.int64).reshape(-1, 5)
    layer = VectorLayer(
        name=LAYER, geometries=geometries, geometry_type="Polygon",
        fields={
            "rank": np.array([h.rank for h in hits], dtype=np.int64),
            "score": np.array([h.score for h in hits], dtype=np.float64),
            "scene": [h.scene.id for h in hits],
            "scene_path": [h.scene.path for h in hits],
            "date": [h.scene.date for h in hits],
            "native_crs": [crs_names[h.scene.id] for h in hits],
            "native_footprint": native,
            "row0": w[:, 0], "row1": w[:, 1], "col0": w[:, 2], "col1": w[:, 3], "scale": w[:, 4],
            "query": [query] * len(hits),
        },
    )
    write_gpkg(out, [layer], crs="EPSG:4326")


def write_sheet(path: Path, hits: list[ArchiveHit], query: str, archive: Archive, columns: int, cell: int,
                reporter: Reporter) -> Path:
    """A contact sheet of the hits, read from the scenes (a scene that cannot be read shows blank)."""
    from rs_vlm_app.geo.raster import open_raster
    from rs_vlm_app.tasks.contact_sheet import render_contact_sheet

    bands = archive.require_recipe().bands
    tiles: list = [np.zeros((8, 8, 3), np.uint8)] * len(hits)
    by_scene: dict[str, list[int]] = {}
    for i, hit in enumerate(hits):
        by_scene.setdefault(hit.scene.id, []).append(i)
    for members in by_scene.values():
        scene = hits[members[0]].scene
        try:
            with open_raster(scene.path, bands=bands) as source:
                for i in members:
                    r0, r1, c0, c1, _ = hits[i].window
                    side = min(cell, r1 - r0, c1 - c0)
                    tiles[i], _ = source.read_rgb(r0, r1, c0, c1, out_shape=(side, side))
        except UserError as exc:
            reporter.log(f"contact sheet: {exc}", "warning")
    labels = [f"#{h.rank}  {h.score:.3f}" for h in hits]
    sublabels = [f"{h.scene.id}  r{h.window[0]} c{h.window[2]}" for h in hits]
    return render_contact_sheet(tiles, labels, path, sublabels=sublabels, columns=columns, cell=cell,
                                title=f"\u201c{query}\u201d: top {len(hits)} tiles of the archive")
