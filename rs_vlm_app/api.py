"""The Python API for notebooks and scripts: the CLI's tasks as functions returning GeoDataFrames.

    import rs_vlm
    result = rs_vlm.localize("scene.tif", ["airplanes parked at a terminal"], model="hqrs-clip",
                             aoi="airport.gpkg", progress=True)
    result.hotspots            # GeoDataFrame in the scene's CRS (rank, query, score, area, ...)
    result.queries[0].heatmap.read()   # the heat map as a masked numpy array

Every function builds the same job spec the CLI, the GUI and the QGIS plugin build (rs_vlm_app.jobs),
so options, defaults and validation are the CLI's: a bad input raises :class:`UserError` with the
CLI's one-line message (no exit codes), and the files written are the CLI's files. An option left
as None takes the CLI's default. Models stay loaded between calls (one model cache per process),
and scene embeddings are cached on disk, so a second query on a scene costs one text encoding.

Model options (keyword arguments of every function): ``model`` (a catalogue name, `rsvlm models
list`), ``checkpoint``, ``arch``, ``model_config``, ``quick_gelu``, ``device`` ("auto", "cpu",
"cuda", "cuda:N", "mps"), ``precision``, ``batch_size``, ``allow_download``.

Progress: ``progress=True`` shows a tqdm bar per stage (notebook widgets under Jupyter), or pass a
callable ``progress(stage, done, total)``.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rs_vlm_app.errors import Cancelled, UserError

__all__ = [
    "CaptionResult", "ClassifyResult", "LocalizeResult", "QueryResult", "Raster", "SearchResult",
    "SeloResult", "IndexResult", "UserError", "Cancelled", "caption", "classify", "evaluate_selo", "index",
    "localize", "read_vector", "search", "search_archive",
]

log = logging.getLogger(__name__)

#: Keyword arguments that describe the model (the job spec's ``model`` object).
MODEL_OPTIONS = ("checkpoint", "arch", "model_config", "quick_gelu", "device", "precision", "batch_size",
                 "allow_download")

Progress = bool | Callable[[str, int, int | None], None] | None

_models: Any = None  # the process's rs_vlm_app.models.cache.ModelCache, made on first use


# -- results -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Raster:
    """A raster a task wrote: its ``path``, and its pixels on request (:meth:`read`)."""

    path: Path

    def read(self, band: int | None = None, *, masked: bool = True):
        """The pixels as a numpy array ((bands, H, W), or (H, W) for ``band``); nodata masked."""
        import rasterio

        with rasterio.open(self.path) as src:
            return src.read(band, masked=masked)

    @property
    def crs(self):
        """The raster's CRS (a rasterio CRS; None when not georeferenced)."""
        import rasterio

        with rasterio.open(self.path) as src:
            return src.crs

    @property
    def transform(self):
        import rasterio

        with rasterio.open(self.path) as src:
            return src.transform

    def __fspath__(self) -> str:
        return str(self.path)


@dataclass
class QueryResult:
    """One query of :func:`localize`: its heat map, hot spots and scored tiles."""

    query: str
    heatmap: Raster
    vectors: Path                 # the GeoPackage with layers "hotspots" and "tiles"
    hotspots: Any                 # GeoDataFrame: rank, query, score, mean_score, area, area_unit, peak_x, peak_y
    tiles: Any                    # GeoDataFrame: row0, row1, col0, col1, scale, score (raw cosine), query
    best_cosine: float


@dataclass
class LocalizeResult:
    scene: Path
    out: Path
    queries: list[QueryResult]
    summary: dict = field(default_factory=dict)

    @property
    def hotspots(self):
        """The hot spots of every query in one GeoDataFrame (column ``query`` tells them apart)."""
        return _concat([q.hotspots for q in self.queries])

    @property
    def tiles(self):
        return _concat([q.tiles for q in self.queries])


@dataclass
class CaptionResult:
    scene: Path
    out: Path
    captions: Any                 # GeoDataFrame: caption, scale, row0..col1, mean_logprob, tokens, complete[, clip_score]
    summary: dict = field(default_factory=dict)


@dataclass
class ClassifyResult:
    scene: Path
    out: Path
    classes: Raster               # uint8 class index per pixel, nodata 255
    probabilities: Raster | None  # float32, one band per class
    tiles: Any                    # GeoDataFrame: row0..col1, scale, class_1, prob_1, ...
    labels: list[str]
    area_share: dict[str, float]
    summary: dict = field(default_factory=dict)


@dataclass
class SearchResult:
    query: str
    out: Path
    results: Any                  # GeoDataFrame: rank, score, scene, scene_name, row0..col1, scale, query
    sheet: Path | None
    summary: dict = field(default_factory=dict)


@dataclass
class IndexResult:
    archive: Path                 # the archive folder
    summary: dict = field(default_factory=dict)  # scenes and tiles indexed, failures (scene, reason)


@dataclass
class SeloResult:
    out: Path
    per_sample: Any               # pandas DataFrame: one row per sample, Rsu, Ras, Rda, Rmi
    mean: dict[str, float]
    report: dict = field(default_factory=dict)


# -- the tasks ---------------------------------------------------------------------------------------


def localize(
    scene: str | Path, queries: str | Sequence[str], *, out: str | Path | None = None, model: str | None = None,
    grid: str | None = None, compat: str | None = None, bands: Sequence[int] | None = None,
    min_valid: float | None = None, hotspot_threshold: float | None = None, heatmap_pixel: float | None = None,
    cog: bool | None = None, aoi: str | Path | None = None, progress: Progress = None, cache: Any = None,
    **model_options: Any,
) -> LocalizeResult:
    """Heat maps and hot spots of text ``queries`` on ``scene`` (like ``rsvlm localize``).

    ``out``: the output folder (default: a new temporary folder). ``aoi``: ``FILE[:LAYER]`` of
    polygons; only tiles overlapping them are encoded and the heat maps are nodata outside.
    """
    queries = [queries] if isinstance(queries, str) else list(queries)
    spec = _spec("localize", model_options, model=model, scene=scene, queries=queries,
                 out=_out_dir(out, "localize"), grid=grid, compat=compat, bands=bands, min_valid=min_valid,
                 hotspot_threshold=hotspot_threshold, heatmap_pixel=heatmap_pixel, cog=cog, aoi=aoi)
    result = _run(spec, progress, cache)
    answers = []
    for q in result.summary["queries"]:
        vectors = Path(q["vectors"])
        answers.append(QueryResult(query=q["query"], heatmap=Raster(Path(q["heatmap"])), vectors=vectors,
                                   hotspots=read_vector(vectors, "hotspots"), tiles=read_vector(vectors, "tiles"),
                                   best_cosine=float(q["best_cosine"])))
    return LocalizeResult(scene=Path(scene), out=Path(spec.out), queries=answers, summary=result.summary)


def caption(
    scene: str | Path, *, out: str | Path | None = None, model: str | None = None, clip_model: str | None = None,
    clip_checkpoint: str | Path | None = None, clip_arch: str | None = None,
    clip_model_config: str | Path | None = None, grid: str | None = None, bands: Sequence[int] | None = None,
    min_valid: float | None = None, decoding: str | None = None, beams: int | None = None,
    max_len: int | None = None, min_len: int | None = None, length_penalty: float | None = None,
    aoi: str | Path | None = None, progress: Progress = None, cache: Any = None, **model_options: Any,
) -> CaptionResult:
    """A caption for every tile of ``scene`` with a CoCa model (like ``rsvlm caption``).

    ``out``: the GeoPackage (default: captions.gpkg in a new temporary folder). ``clip_*``: an optional
    CLIP model that scores each caption against its tile (column ``clip_score``).
    """
    clip = None
    if any(v is not None for v in (clip_model, clip_checkpoint, clip_arch, clip_model_config)):
        clip = _drop_none({"name": clip_model, "checkpoint": clip_checkpoint, "arch": clip_arch,
                           "model_config": clip_model_config,
                           "device": model_options.get("device"), "precision": model_options.get("precision")})
    out = Path(out) if out is not None else _out_dir(None, "caption") / "captions.gpkg"
    spec = _spec("caption", model_options, model=model, scene=scene, out=out, clip_model=clip, grid=grid,
                 bands=bands, min_valid=min_valid, decoding=decoding, beams=beams, max_len=max_len,
                 min_len=min_len, length_penalty=length_penalty, aoi=aoi)
    result = _run(spec, progress, cache)
    path = Path(result.summary["out"])
    return CaptionResult(scene=Path(scene), out=path, captions=read_vector(path, "captions"), summary=result.summary)


def classify(
    scene: str | Path, classes: str | Sequence[str], *, out: str | Path | None = None, model: str | None = None,
    templates: str | Path | None = None, grid: str | None = None, bands: Sequence[int] | None = None,
    min_valid: float | None = None, top_k: int | None = None, pixel: float | None = None,
    probabilities: bool | None = None, cog: bool | None = None, aoi: str | Path | None = None,
    progress: Progress = None, cache: Any = None, **model_options: Any,
) -> ClassifyResult:
    """Zero-shot classes of every tile and pixel of ``scene`` (like ``rsvlm classify``).

    ``classes``: "aid", "resisc45", "eurosat", a class file, or a list of class names.
    """
    classes = classes if isinstance(classes, str) else list(classes)
    if isinstance(classes, str) and Path(classes).suffix:
        classes = str(Path(classes))
    spec = _spec("classify", model_options, model=model, scene=scene, classes=classes,
                 out=_out_dir(out, "classify"), templates=templates, grid=grid, bands=bands, min_valid=min_valid,
                 top_k=top_k, pixel=pixel, probabilities=probabilities, cog=cog, aoi=aoi)
    result = _run(spec, progress, cache)
    files = {Path(f.path).name: Path(f.path) for f in result.files}
    return ClassifyResult(
        scene=Path(scene), out=Path(spec.out), classes=Raster(files["classes.tif"]),
        probabilities=Raster(files["probabilities.tif"]) if "probabilities.tif" in files else None,
        tiles=read_vector(files["tiles.gpkg"], "tiles"), labels=list(result.summary["classes"]),
        area_share=dict(result.summary["area_share"]), summary=result.summary)


def search(
    scenes: str | Path | Sequence[str | Path], query: str, *, out: str | Path | None = None,
    model: str | None = None, top_k: int | None = None, grid: str | None = None,
    bands: Sequence[int] | None = None, min_valid: float | None = None, crs: str | None = None,
    contact_sheet: bool | None = None, columns: int | None = None, aoi: str | Path | None = None,
    progress: Progress = None, cache: Any = None, **model_options: Any,
) -> SearchResult:
    """The tiles of ``scenes`` that best match ``query`` (like ``rsvlm search``), best first."""
    scenes = [scenes] if isinstance(scenes, str | Path) else list(scenes)
    out = Path(out) if out is not None else _out_dir(None, "search") / "search.gpkg"
    spec = _spec("search", model_options, model=model, scenes=scenes, query=query, out=out, top_k=top_k,
                 grid=grid, bands=bands, min_valid=min_valid, crs=crs, contact_sheet=contact_sheet,
                 columns=columns, aoi=aoi)
    return _search_result(_run(spec, progress, cache))


def _search_result(result) -> SearchResult:
    """The SearchResult of a finished search or archive-search job (both write layer "results")."""
    sheet = result.summary.get("sheet")
    path = Path(result.summary["out"])
    return SearchResult(query=result.summary["query"], out=path, results=read_vector(path, "results"),
                        sheet=Path(sheet) if sheet else None, summary=result.summary)


def index(
    archive: str | Path, scenes: str | Path | Sequence[str | Path] = (), *, scene_lists: Sequence[str | Path] = (),
    model: str | None = None, asset: str | None = None, grid: str | None = None,
    bands: Sequence[int] | None = None, min_valid: float | None = None, engine: str | None = None,
    workers: int | None = None, ray_address: str | None = None, unit_tiles: int | None = None,
    aoi: str | Path | None = None, progress: Progress = None, cache: Any = None, **model_options: Any,
) -> IndexResult:
    """Encode scenes (files, folders, globs, GDAL paths) into an archive folder (like ``rsvlm index``)."""
    scenes = [scenes] if isinstance(scenes, str | Path) else list(scenes)
    spec = _spec("index", model_options, model=model, archive=archive, scenes=scenes, scene_lists=list(scene_lists),
                 asset=asset, grid=grid, bands=bands, min_valid=min_valid, engine=engine, workers=workers,
                 ray_address=ray_address, unit_tiles=unit_tiles, aoi=aoi)
    result = _run(spec, progress, cache)
    return IndexResult(archive=Path(archive), summary=result.summary)


def search_archive(
    archive: str | Path, query: str, *, out: str | Path | None = None, model: str | None = None,
    top_k: int | None = None, where: str | None = None, aoi: str | Path | None = None, exact: bool | None = None,
    contact_sheet: bool | None = None, columns: int | None = None, progress: Progress = None, cache: Any = None,
    **model_options: Any,
) -> SearchResult:
    """The archive's tiles that best match ``query`` (like ``rsvlm search --archive``), in EPSG:4326."""
    out = Path(out) if out is not None else _out_dir(None, "archive-search") / "search.gpkg"
    spec = _spec("archive-search", model_options, model=model, archive=archive, query=query, out=out, top_k=top_k,
                 where=where, aoi=aoi, exact=exact, contact_sheet=contact_sheet, columns=columns)
    return _search_result(_run(spec, progress, cache))


def evaluate_selo(
    data: str | Path | None = None, *, scene: str | Path | None = None, truth: str | Path | None = None,
    query_field: str | None = None, out: str | Path | None = None, model: str | None = None,
    compat: str | None = None, grid: str | None = None, save_probmaps: bool | None = None,
    progress: Progress = None, cache: Any = None, **model_options: Any,
) -> SeloResult:
    """Rsu, Ras, Rda, Rmi of semantic localization (like ``rsvlm eval selo``).

    Either ``data``: an AIR-SLT folder (imgs/, annotations/anno.json), or your own ``scene`` with
    ``truth`` polygons (``FILE[:LAYER]``, any CRS) whose ``query_field`` holds each polygon's query.
    """
    import pandas as pd

    spec = _spec("eval-selo", model_options, model=model, data=data, scene=scene, truth=truth,
                 query_field=query_field, out=_out_dir(out, "selo"), compat=compat, grid=grid,
                 save_probmaps=save_probmaps)
    result = _run(spec, progress, cache)
    report = result.summary
    return SeloResult(out=Path(spec.out), per_sample=pd.DataFrame(report["per_sample"]), mean=dict(report["mean"]),
                      report=report)


def read_vector(path: str | Path, layer: str | None = None):
    """A vector file's layer as a GeoDataFrame (its CRS kept); UserError for a missing file or layer."""
    from rs_vlm_app.geo.vectors import read_vector as read

    return read(path, layer)


# -- running a spec ----------------------------------------------------------------------------------


class _Reporter:
    """Progress to a callable or tqdm bars; log lines to the ``rs_vlm_app`` logger."""

    def __init__(self, progress: Progress):
        self.callback = progress if callable(progress) else None
        self.bars: dict[str, Any] = {} if progress is True else None  # type: ignore[assignment]

    def progress(self, stage: str, done: int, total: int | None = None) -> None:
        if self.callback is not None:
            self.callback(stage, done, total)
        elif self.bars is not None:
            from tqdm.auto import tqdm

            bar = self.bars.get(stage)
            if bar is None:
                bar = self.bars[stage] = tqdm(total=total, desc=stage, unit="", leave=True)
            if total is not None and bar.total != total:
                bar.total = total
            bar.update(max(0, done - bar.n))
            if total is not None and done >= total:
                bar.close()

    def log(self, message: str, level: str = "info") -> None:
        log.log(logging.getLevelName(str(level).upper()), message)

    def cancel_requested(self) -> bool:
        return False

    def close(self) -> None:
        for bar in (self.bars or {}).values():
            bar.close()


def _run(spec: Any, progress: Progress, cache: Any):
    """Check and run ``spec`` in this process, as the CLI does; UserError for bad input."""
    global _models
    from rs_vlm_app.jobs.context import JobContext
    from rs_vlm_app.models.cache import ModelCache

    if _models is None:
        _models = ModelCache()
    reporter = _Reporter(progress)
    try:
        spec.check()
        return spec.run(JobContext(reporter=reporter, models=_models, cache=cache))
    finally:
        reporter.close()


def _spec(kind: str, model_options: dict[str, Any], *, model: Any, **fields: Any):
    """The job spec of ``kind`` from keyword values (None: the spec's default), type-checked like a
    JSON spec so a wrong type is a UserError naming the field."""
    from rs_vlm_app.jobs.specs import spec_from_dict

    unknown = sorted(set(model_options) - set(MODEL_OPTIONS))
    if unknown:
        raise TypeError(f"unexpected keyword argument {unknown[0]!r}; model options: {', '.join(MODEL_OPTIONS)}")
    model_fields = _drop_none({"name": model, **model_options})
    data = {"kind": kind, **_drop_none(fields)}
    if model_fields:
        data["model"] = model_fields
    return spec_from_dict(_plain(data))


def _out_dir(out: str | Path | None, task: str) -> Path:
    return Path(out) if out is not None else Path(tempfile.mkdtemp(prefix=f"rsvlm-{task}-"))


def _drop_none(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if hasattr(value, "__fspath__"):
        return str(Path(value))
    return value


def _concat(frames: list):
    import geopandas as gpd
    import pandas as pd

    if not frames:
        return gpd.GeoDataFrame()
    return gpd.GeoDataFrame(pd.concat(frames, ignore_index=True), crs=frames[0].crs)
