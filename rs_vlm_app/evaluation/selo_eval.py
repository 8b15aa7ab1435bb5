"""SeLo evaluation on the AIR-SLT layout: DIR/imgs/*, DIR/annotations/anno.json."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from rs_vlm_app.atomic import atomic_path, write_text_atomic
from rs_vlm_app.errors import UserError
from rs_vlm_app.evaluation.selo import METRIC_NAMES, mean_metrics, selo_metrics
from rs_vlm_app.geo.grid import SELO_GRID, GridSpec
from rs_vlm_app.geo.raster import open_raster
from rs_vlm_app.reporting import NullReporter, Reporter, check_cancelled
from rs_vlm_app.tasks.embedding_cache import EmbeddingCache
from rs_vlm_app.tasks.localize import HeatmapProducer, LocalizeOptions
from rs_vlm_app.tasks.scene_encoding import encode_scene, tile_preprocessing

#: The reference stores each probability map with cv2.imwrite(".jpg") (quality 95) and evaluates the
#: decoded JPEG; compat mode does the same so numbers match.
REFERENCE_JPEG_QUALITY = 95


@dataclass(frozen=True)
class SeloSample:
    index: int
    caption: str
    image: str
    polygons: list


def read_annotations(data_dir: Path) -> list[SeloSample]:
    """Samples of DIR/annotations/anno.json in file order; one-line errors for a bad file."""
    path = data_dir / "annotations" / "anno.json"
    if not path.is_file():
        raise UserError("no annotations/anno.json here (expected the AIR-SLT layout: imgs/, annotations/anno.json)",
                        path=data_dir)
    try:
        items = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise UserError(f"not valid JSON ({exc})", path=path) from None
    if not isinstance(items, list) or not items:
        raise UserError("expected a non-empty list of {caption, jpg_name, points}", path=path)
    samples = []
    for i, item in enumerate(items):
        try:
            caption, image, points = item["caption"], item["jpg_name"], item["points"]
        except (KeyError, TypeError):
            raise UserError(f"sample {i} lacks caption, jpg_name or points", path=path) from None
        if not points or any(len(p) < 3 for p in points):
            raise UserError(f"sample {i} ({image}) has a polygon with fewer than 3 points", path=path)
        samples.append(SeloSample(i, caption, image, points))
    return samples


def probability_map(producer: HeatmapProducer, tile_scores: np.ndarray, compat: str | None) -> np.ndarray:
    """Full-resolution probability map as the metrics see it (NaN-free, 0..1)."""
    prob = producer.probability(tile_scores)
    prob = np.nan_to_num(prob, nan=0.0)
    if compat == "selo":
        gray = np.uint8(np.round(prob * 255))
        ok, jpeg = cv2.imencode(".jpg", gray, [cv2.IMWRITE_JPEG_QUALITY, REFERENCE_JPEG_QUALITY])
        prob = cv2.imdecode(jpeg, cv2.IMREAD_GRAYSCALE) / 255.0
    return prob


def evaluate_selo(
    data_dir: Path,
    encoder,
    out_dir: Path,
    *,
    compat: Literal["selo"] | None = None,
    grid: GridSpec = SELO_GRID,
    save_probmaps: bool = False,
    reporter: Reporter | None = None,
    cache: EmbeddingCache | None = None,
) -> dict:
    """Rsu, Ras, Rda, Rmi per sample (anno.json order) and their mean; writes JSON and CSV to out_dir."""
    reporter = reporter or NullReporter()
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    samples = read_annotations(data_dir)
    for s in samples:
        if not (data_dir / "imgs" / s.image).is_file():
            raise UserError(f"sample {s.index} refers to imgs/{s.image}, which does not exist", path=data_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    options = LocalizeOptions(grid=grid, compat=compat, heatmap_pixel=1.0)
    preprocessing = tile_preprocessing(encoder, compat)
    per_sample = []
    for s in samples:
        check_cancelled(reporter)
        reporter.progress("evaluate samples", s.index, len(samples))
        with open_raster(data_dir / "imgs" / s.image) as source:
            embeddings, _ = encode_scene(source, grid, encoder, preprocessing, cache=cache, reporter=reporter)
            scores = embeddings.scores(encoder.encode_texts([s.caption]))[:, 0]
            prob = probability_map(HeatmapProducer(source, embeddings, options), scores, compat)
        metrics = selo_metrics(prob, s.polygons)
        per_sample.append({"index": s.index, "jpg_name": s.image, "caption": s.caption.strip(), **metrics})
        if save_probmaps:
            with atomic_path(out_dir / "probmaps" / f"probmap_{s.index}.png") as tmp:
                cv2.imwrite(str(tmp), np.uint8(np.round(prob * 255)))
    reporter.progress("evaluate samples", len(samples), len(samples))
    report = {
        "data": str(data_dir),
        "model": encoder.display_name,
        "mode": compat or "fast",
        "grid": grid.key(),
        "per_sample": per_sample,
        "mean": mean_metrics([{k: r[k] for k in METRIC_NAMES} for r in per_sample]),
    }
    write_text_atomic(out_dir / "selo_metrics.json", json.dumps(report, indent=1))
    write_metrics_csv(out_dir / "selo_metrics.csv", per_sample, report["mean"])
    return report


def write_metrics_csv(path: Path, rows: list[dict], mean: dict) -> None:
    """selo_metrics.csv: one row per sample, then the mean."""
    buffer = io.StringIO()
    fields = ["index", "jpg_name", "caption", *METRIC_NAMES]
    writer = csv.DictWriter(buffer, fieldnames=fields)
    writer.writeheader()
    for row in rows:
        writer.writerow({k: row[k] for k in fields})
    writer.writerow({"index": "mean", "jpg_name": "", "caption": "", **mean})
    write_text_atomic(path, buffer.getvalue())
