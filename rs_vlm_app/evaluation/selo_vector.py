"""SeLo evaluation on your own georeferenced scene, with ground-truth polygons from any vector file.

``rsvlm eval selo --scene SCENE --truth POLYGONS.gpkg --query-field FIELD``: each distinct value of
FIELD is one query (a sample); its polygons, in any CRS, are reprojected to the scene's CRS and
turned into pixel points (column, row), exactly the form AIR-SLT's anno.json holds. From there the
numbers come from the same code as the AIR-SLT path (rs_vlm_app.evaluation.selo_eval): the same
scene encoding, probability map and Rsu/Ras/Rda/Rmi, so the two agree when given the same polygons.

Polygons are taken by their outer ring, vertices as stored (the metrics use the vertex mean, as the
reference does); holes are ignored, as in AIR-SLT. A multi-polygon counts as its parts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import numpy as np

from rs_vlm_app.atomic import atomic_path, write_text_atomic
from rs_vlm_app.errors import UserError
from rs_vlm_app.evaluation.selo import METRIC_NAMES, mean_metrics, selo_metrics
from rs_vlm_app.evaluation.selo_eval import SeloSample, probability_map, write_metrics_csv
from rs_vlm_app.geo.grid import SELO_GRID, GridSpec
from rs_vlm_app.geo.raster import open_raster
from rs_vlm_app.reporting import NullReporter, Reporter, check_cancelled
from rs_vlm_app.tasks.embedding_cache import EmbeddingCache
from rs_vlm_app.tasks.localize import HeatmapProducer, LocalizeOptions
from rs_vlm_app.tasks.scene_encoding import encode_scene, tile_preprocessing

#: Pixel coordinates are rounded to this many decimals after the map -> pixel transform, so points that
#: were whole pixels before a round trip through map coordinates are whole pixels again.
PIXEL_DECIMALS = 6


def read_truth(truth: str | Path, query_field: str):
    """The truth layer (``FILE[:LAYER]``) as a GeoDataFrame of polygons with a text ``query_field``."""
    from rs_vlm_app.geo.aoi import split_spec
    from rs_vlm_app.geo.vectors import layer_names, read_vector

    path, layer = split_spec(truth)
    name = f"{path}:{layer}" if layer else str(path)
    if layer is None and path.exists() and len(layer_names(path)) > 1:
        raise UserError(f"has several layers ({', '.join(layer_names(path))}); choose one as FILE:LAYER", path=path)
    frame = read_vector(path, layer)
    if query_field not in frame.columns:
        fields = [c for c in frame.columns if c != frame.geometry.name]
        raise UserError(f"has no field {query_field!r} to take the queries from; its fields: "
                        f"{', '.join(fields) or 'none'}", path=name)
    frame = frame[~frame.geometry.isna() & ~frame.geometry.is_empty]
    frame = frame[frame.geometry.geom_type.isin(["Polygon", "MultiPolygon"])]
    if frame.empty:
        raise UserError("has no polygons (ground truth must be polygons)", path=name)
    queries = frame[query_field]
    if queries.isna().any() or (queries.astype(str).str.strip() == "").any():
        raise UserError(f"some polygons have no query in the field {query_field!r}", path=name)
    return frame


def truth_samples(frame, query_field: str, crs, transform, scene_name: str) -> list[SeloSample]:
    """One sample per distinct query (first-appearance order), polygons as [column, row] points."""
    if crs is not None and frame.crs is not None:
        frame = frame.to_crs(crs.to_wkt() if hasattr(crs, "to_wkt") else crs)
    elif (crs is None) != (frame.crs is None):
        raise UserError("the ground truth and the scene must both be georeferenced (or both not)")
    inverse = ~transform
    samples: list[SeloSample] = []
    order = list(dict.fromkeys(str(q).strip() for q in frame[query_field]))
    for index, query in enumerate(order):
        polygons = []
        for geometry in frame.geometry[frame[query_field].astype(str).str.strip() == query]:
            for part in getattr(geometry, "geoms", [geometry]):
                ring = np.asarray(part.exterior.coords)[:-1, :2]  # the closing vertex repeats the first
                cols, rows = inverse @ (ring[:, 0], ring[:, 1])
                points = np.round(np.column_stack([cols, rows]), PIXEL_DECIMALS)
                polygons.append(points.tolist())
        samples.append(SeloSample(index, query, scene_name, polygons))
    return samples


def evaluate_selo_vector(
    scene: Path,
    truth: str | Path,
    query_field: str,
    encoder,
    out_dir: Path,
    *,
    compat: Literal["selo"] | None = None,
    grid: GridSpec = SELO_GRID,
    save_probmaps: bool = False,
    reporter: Reporter | None = None,
    cache: EmbeddingCache | None = None,
) -> dict:
    """Rsu, Ras, Rda, Rmi per query of the truth layer and their mean; JSON and CSV in ``out_dir``
    (the same files and report as the AIR-SLT path, with ``scene`` and ``truth`` instead of ``data``)."""
    import cv2

    reporter = reporter or NullReporter()
    scene, out_dir = Path(scene), Path(out_dir)
    frame = read_truth(truth, query_field)
    out_dir.mkdir(parents=True, exist_ok=True)
    options = LocalizeOptions(grid=grid, compat=compat, heatmap_pixel=1.0)
    per_sample = []
    with open_raster(scene) as source:
        samples = truth_samples(frame, query_field, source.crs if source.georeferenced else None,
                                source.transform, scene.name)
        embeddings, _ = encode_scene(source, grid, encoder, tile_preprocessing(encoder, compat), cache=cache,
                                     reporter=reporter)
        producer = HeatmapProducer(source, embeddings, options)
        for s in samples:
            check_cancelled(reporter)
            reporter.progress("evaluate samples", s.index, len(samples))
            # one text at a time, as the AIR-SLT path encodes them, so the numbers agree bit for bit
            scores = embeddings.scores(encoder.encode_texts([s.caption]))[:, 0]
            prob = probability_map(producer, scores, compat)
            try:
                metrics = selo_metrics(prob, s.polygons)
            except ValueError as exc:
                raise UserError(f"query {s.caption!r}: {exc}", path=truth) from None
            per_sample.append({"index": s.index, "jpg_name": s.image, "caption": s.caption, **metrics})
            if save_probmaps:
                with atomic_path(out_dir / "probmaps" / f"probmap_{s.index}.png") as tmp:
                    cv2.imwrite(str(tmp), np.uint8(np.round(prob * 255)))
    reporter.progress("evaluate samples", len(samples), len(samples))
    report = {
        "scene": str(scene), "truth": str(truth), "query_field": query_field,
        "model": encoder.display_name, "mode": compat or "fast", "grid": grid.key(),
        "per_sample": per_sample,
        "mean": mean_metrics([{k: r[k] for k in METRIC_NAMES} for r in per_sample]),
    }
    write_text_atomic(out_dir / "selo_metrics.json", json.dumps(report, indent=1))
    write_metrics_csv(out_dir / "selo_metrics.csv", per_sample, report["mean"])
    return report
