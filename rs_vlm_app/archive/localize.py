"""`rsvlm localize --archive`: heat maps and hot spots of text queries on every scene of an archive,
from the archive's embeddings (no tile is encoded again), plus all hot spots merged and ranked.

Per scene the output is what `rsvlm localize` writes (OUTDIR/<scene>/<query>_heatmap.tif and
<query>.gpkg with layers hotspots and tiles). OUTDIR/hotspots.gpkg holds every scene's hot spots in
EPSG:4326, ranked across the archive by ``cosine``: the best raw tile cosine inside the spot (the
heat maps are normalised per scene, so their values do not compare across scenes).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rs_vlm_app.archive.filters import TileFilter
from rs_vlm_app.archive.store import Archive, SceneInfo
from rs_vlm_app.atomic import write_text_atomic
from rs_vlm_app.errors import UserError
from rs_vlm_app.reporting import NullReporter, Reporter, check_cancelled

MERGED = "hotspots.gpkg"
MANIFEST = "archive_localize.json"


@dataclass
class ArchiveLocalizeResult:
    out_dir: Path
    merged: Path
    scenes: list[str] = field(default_factory=list)
    files: list[tuple[str, str, Path]] = field(default_factory=list)   # (scene, query, heat map)
    hotspots: int = 0
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0


def scene_embeddings(archive: Archive, scene: SceneInfo) -> tuple[np.ndarray, np.ndarray]:
    """(windows (N, 5), embeddings (N, D)) of every part of ``scene``."""
    from rs_vlm_app.archive.search import part_windows

    windows, vectors = [], []
    for part in archive.parts([scene.id]):
        windows.append(part_windows(part))
        vectors.append(np.asarray(part.embeddings(), dtype=np.float32))
    return np.concatenate(windows), np.concatenate(vectors)


def localize_archive(archive_path: Path, queries: list[str], out_dir: Path, encoder, *,
                     filt: TileFilter | None = None, hotspot_threshold: float = 0.6,
                     heatmap_pixel: float | None = None, cog: bool = False,
                     reporter: Reporter | None = None) -> ArchiveLocalizeResult:
    """Heat maps and hot spots of ``queries`` on every (matching) scene of the archive."""
    from rs_vlm_app.archive.engines import encoder_recipe
    from rs_vlm_app.archive.units import TileSettings
    from rs_vlm_app.tasks.localize import check_queries, slugify
    from rs_vlm_app.tasks.options import LocalizeOptions
    from rs_vlm_app.tasks.outputs import check_output_dir

    reporter = reporter or NullReporter()
    filt = filt or TileFilter([])
    started = time.monotonic()
    queries = check_queries(list(queries))
    out_dir = Path(out_dir)
    check_output_dir(out_dir)
    archive = Archive(Path(archive_path))
    mine = encoder_recipe(encoder, TileSettings())
    recipe = archive.check_query_model(mine.model, mine.model_name, mine.embed_dim)
    options = LocalizeOptions(grid=recipe.grid, bands=tuple(recipe.bands) if recipe.bands else None,
                              min_valid=recipe.min_valid, hotspot_threshold=hotspot_threshold,
                              heatmap_pixel=heatmap_pixel, cog=cog)
    text = np.asarray(encoder.encode_texts(queries), dtype=np.float32)
    scenes = [s for s in archive.scenes().values() if filt.scene_ok(s) and s.tiles]
    if not scenes:
        raise UserError("no scene of the archive matches (--where / --aoi) or has tiles", path=archive.root)
    result = ArchiveLocalizeResult(out_dir, out_dir / MERGED)
    merged: list[dict] = []
    for i, scene in enumerate(scenes):
        check_cancelled(reporter)
        reporter.progress("scenes", i, len(scenes))
        try:
            spots = _localize_scene(archive, scene, queries, text, out_dir / scene.id, options, filt, slugify,
                                    result)
        except UserError as exc:  # a scene moved or changed since it was indexed: say so, go on
            result.problems.append(str(exc))
            reporter.log(str(exc), "warning")
            continue
        merged += spots
        result.scenes.append(scene.id)
    reporter.progress("scenes", len(scenes), len(scenes))
    merged.sort(key=lambda s: (-s["cosine"], -s["score"], s["scene"], s["query"]))
    _write_merged(result.merged, merged)
    result.hotspots = len(merged)
    result.seconds = time.monotonic() - started
    write_text_atomic(out_dir / MANIFEST, json.dumps({
        "archive": str(archive.root), "queries": queries, "scenes": result.scenes, "problems": result.problems,
        "hotspots": str(result.merged), "files": [[s, q, str(p)] for s, q, p in result.files]}, indent=1))
    return result


def _localize_scene(archive: Archive, scene: SceneInfo, queries, text, folder: Path, options, filt: TileFilter,
                    slugify, result: ArchiveLocalizeResult) -> list[dict]:
    import geopandas as gpd
    import shapely

    from rs_vlm_app.archive.footprints import native_footprints
    from rs_vlm_app.geo.raster import open_raster
    from rs_vlm_app.tasks.embedding_cache import SceneEmbeddings
    from rs_vlm_app.tasks.localize import HeatmapProducer
    from rs_vlm_app.tasks.outputs import check_output_dir

    windows, vectors = scene_embeddings(archive, scene)
    check_output_dir(folder)
    spots: list[dict] = []
    with open_raster(scene.path, bands=options.bands) as source:
        if source.fingerprint() != scene.fingerprint:
            raise UserError("its pixels changed since it was indexed; index it again (rsvlm index)", path=scene.path)
        embeddings = SceneEmbeddings(key=scene.fingerprint, folder=archive.scene_folder(scene.id), windows=windows,
                                     encoded=np.ones(len(windows), dtype=bool), embeddings=vectors, meta={})
        producer = HeatmapProducer(source, embeddings, options, aoi=filt.aoi)
        scores = vectors @ text.T
        tiles = native_footprints(scene.affine, windows)
        taken: set[str] = set()
        for k, query in enumerate(queries):
            heat, gpkg, _ = producer.write_query(query, scores[:, k], folder, slugify(query, taken))
            result.files.append((scene.id, query, heat))
            frame = gpd.read_file(gpkg, layer="hotspots", engine="pyogrio")
            if frame.empty:
                continue
            lonlat = frame.to_crs(4326)
            for native, ll, (_, row) in zip(frame.geometry, lonlat.geometry, frame.iterrows(), strict=True):
                inside = shapely.intersects(native, tiles) & ~shapely.touches(native, tiles)
                best = float(scores[inside, k].max()) if inside.any() else float(scores[:, k].max())
                spots.append({"geometry": ll, "query": query, "scene": scene.id, "scene_path": scene.path,
                              "date": scene.date, "cosine": best, "score": float(row["score"]),
                              "mean_score": float(row["mean_score"]), "area": float(row["area"]),
                              "heatmap": str(heat)})
    return spots


def _write_merged(path: Path, spots: list[dict]) -> None:
    from rs_vlm_app.geo.writers import VectorLayer, write_gpkg

    fields = {name: [s[name] for s in spots] for name in
              ("query", "scene", "scene_path", "date", "cosine", "score", "mean_score", "area", "heatmap")}
    fields = {"rank": np.arange(1, len(spots) + 1, dtype=np.int64), **{
        k: (np.array(v, dtype=np.float64) if k in ("cosine", "score", "mean_score", "area") else v)
        for k, v in fields.items()}}
    write_gpkg(path, [VectorLayer("hotspots", [s["geometry"] for s in spots], fields, "MultiPolygon")],
               crs="EPSG:4326")
