"""Zero-shot scene classification of every tile, and per-pixel class maps.

raster -> scene encoding (the shared embedding cache) -> cosine with class vectors (each the mean
of its prompt-template text embeddings) -> per-tile class probabilities (softmax with the model's
logit scale) -> per-pixel mean of the covering tiles' probabilities on the grid's cell lattice
(rs_vlm_app.tasks.heatmap) -> class raster (argmax) + probability raster + tile layer.

Outputs in OUTDIR (each written completely or not at all; a failed run leaves none of them):
  classes.tif       uint8 class index per pixel (nodata 255), colour table, class names in the
                    metadata, the band's category names (classes.tif.aux.xml) and classes.qml
  probabilities.tif float32, one band per class (band description = class), nodata -9999
  tiles.gpkg        layer "tiles": each tile's window, top-k classes and probabilities
  classify.json     what was run, class shares of the area, the files
"""

from __future__ import annotations

import colorsys
import html
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rs_vlm_app.atomic import write_text_atomic
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
from rs_vlm_app.tasks.classes import ClassList
from rs_vlm_app.tasks.embedding_cache import EmbeddingCache
from rs_vlm_app.tasks.heatmap import CellLattice, cell_means, heatmap_shape
from rs_vlm_app.tasks.inputs import scene_source
from rs_vlm_app.tasks.options import MAX_CLASSES, ClassifyOptions  # noqa: F401 - part of this module's API
from rs_vlm_app.tasks.outputs import check_output_dir
from rs_vlm_app.tasks.scene_encoding import encode_scene, fast_preprocessing
from rs_vlm_app.tasks.zeroshot_classifier import build_classifier

CLASS_NODATA = 255
PROBABILITY_NODATA = -9999.0
FILES = ("classes.tif", "classes.tif.aux.xml", "classes.qml", "probabilities.tif", "tiles.gpkg", "classify.json")


@dataclass
class ClassifyResult:
    scene: Path
    out_dir: Path
    files: list[Path]
    classes: list[str]
    area_share: dict[str, float]  # share of the valid classified area per class
    tiles: int
    seconds: float
    options: dict = field(default_factory=dict)


def class_probabilities(tile_embeddings: np.ndarray, classifier: np.ndarray, logit_scale: float) -> np.ndarray:
    """Softmax over classes of ``logit_scale`` x cosine: (tiles, classes) float64 rows summing to 1."""
    logits = logit_scale * (np.asarray(tile_embeddings, np.float64) @ np.asarray(classifier, np.float64).T)
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    return p / p.sum(axis=1, keepdims=True)


def class_colours(n: int) -> list[tuple[int, int, int, int]]:
    """Distinct, stable colours: golden-angle hues, alternating lightness."""
    colours = []
    for i in range(n):
        hue = (i * 0.618033988749895) % 1.0
        light, saturation = (0.45, 0.75) if i % 2 == 0 else (0.62, 0.6)
        r, g, b = colorsys.hls_to_rgb(hue, light, saturation)
        colours.append((round(r * 255), round(g * 255), round(b * 255), 255))
    return colours


def classify_scene(
    scene: Path | RasterSource,
    out_dir: Path,
    encoder: TileEncoder,
    options: ClassifyOptions | None = None,
    *,
    reporter: Reporter | None = None,
    cache: EmbeddingCache | None = None,
    checked: bool = False,
    loaded: tuple | None = None,
) -> ClassifyResult:
    """Classify every tile of ``scene`` zero-shot and write the class maps into ``out_dir``.

    ``encoder``: a rs_vlm_app.models.encoder.ClipEncoder. The tile embeddings come from (and go to)
    the scene embedding cache, so classifying again with other classes costs only the text encoding.
    ``scene``: a raster file or a RasterSource opened with the options' bands (left open);
    ``checked``: the caller (a JobSpec's check) already validated ``out_dir``; ``loaded``: the
    ``options.load()`` that check already read (the class and template files are then not read again).
    """
    options = options or ClassifyOptions()
    reporter = reporter or NullReporter()
    classes, templates = loaded if loaded is not None else options.load()
    out_dir = Path(out_dir)
    if not checked:
        check_output_dir(out_dir)
    started = time.monotonic()
    area = read_aoi(options.aoi) if options.aoi else None
    with scene_source(scene, options.bands) as source:
        scene = Path(source.path)
        embeddings, _ = encode_scene(source, options.grid_spec, encoder, fast_preprocessing(encoder),
                                     min_valid=options.min_valid, cache=cache, reporter=reporter, aoi=area)
        reporter.progress("encode class prompts", 0, len(classes))
        classifier = build_classifier(encoder.encode_texts, list(classes.prompt_names), list(templates))
        reporter.progress("encode class prompts", len(classes), len(classes))
        windows = embeddings.encoded_windows
        probabilities = class_probabilities(embeddings.embeddings[embeddings.encoded], classifier,
                                            encoder.logit_scale)
        maps = ClassMaps(source, windows, probabilities, options.pixel, aoi=area)
        with _staging(out_dir) as staging:
            reporter.progress("write class maps", 0, 3)
            shares = maps.write_classes(staging / "classes.tif", classes, options.cog)
            reporter.progress("write class maps", 1, 3)
            if options.probabilities:
                maps.write_probabilities(staging / "probabilities.tif", classes, options.cog)
            reporter.progress("write class maps", 2, 3)
            write_gpkg(staging / "tiles.gpkg", [_tile_layer(source.transform, windows, probabilities, classes,
                                                            options.top_k)], crs=source.crs)
            reporter.progress("write class maps", 3, 3)
            area_share = {label: float(s) for label, s in zip(classes.labels, shares, strict=True)}
            manifest = {
                "scene": str(scene), "model": encoder.display_name,
                "classes": [{"index": i, "label": label, "prompt": prompt, "colour": _hex(c)}
                            for i, (label, prompt, c) in enumerate(zip(classes.labels, classes.prompt_names,
                                                                       class_colours(len(classes)), strict=True))],
                "class_source": classes.source, "templates": list(templates), "options": options.to_dict(),
                "tiles": len(windows), "area_share": area_share,
                "logit_scale": encoder.logit_scale, "crs": source.crs.to_string() if source.crs else None,
                "output_shape": list(maps.shape),
            }
            write_text_atomic(staging / "classify.json", json.dumps(manifest, indent=1))
            files = _publish(staging, out_dir)
    return ClassifyResult(scene=Path(scene), out_dir=out_dir, files=files, classes=list(classes.labels),
                          area_share=area_share, tiles=len(windows), seconds=time.monotonic() - started,
                          options=options.to_dict())


class ClassMaps:
    """Per-pixel class probabilities (mean over covering tiles) painted block by block."""

    def __init__(self, source, windows: np.ndarray, tile_probabilities: np.ndarray, pixel: float | None,
                 *, aoi: Aoi | None = None):
        self.source = source
        self.lattice = CellLattice.from_windows(windows, source.height, source.width)
        means, _counts = cell_means(windows, tile_probabilities, self.lattice)
        self.cell_probabilities = means.astype(np.float32)  # (R, C, K), NaN where no tile
        smallest = int(windows[:, 4].min())
        self.shape = heatmap_shape(source.height, source.width, pixel if pixel is not None else smallest / 8)
        self.transform = scaled_transform(source.transform, source.width, source.height, self.shape[1], self.shape[0])
        self.valid = source.read_mask(out_shape=self.shape).astype(bool)
        if aoi is not None:  # nodata outside the area of interest
            self.valid &= aoi.raster_mask(self.shape, self.transform, source.crs)
        h, w = self.shape
        rows = np.searchsorted(self.lattice.row_edges, (np.arange(h) + 0.5) * (source.height / h), side="right") - 1
        cols = np.searchsorted(self.lattice.col_edges, (np.arange(w) + 0.5) * (source.width / w), side="right") - 1
        self.cell_rows = np.clip(rows, 0, self.lattice.shape[0] - 1)
        self.cell_cols = np.clip(cols, 0, self.lattice.shape[1] - 1)

    def block(self, window) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities (h, w, K) and validity (h, w) of an output window."""
        r0, c0 = int(window.row_off), int(window.col_off)
        r1, c1 = r0 + int(window.height), c0 + int(window.width)
        values = self.cell_probabilities[self.cell_rows[r0:r1]][:, self.cell_cols[c0:c1]]
        valid = self.valid[r0:r1, c0:c1] & np.isfinite(values[..., 0])
        return values, valid

    def write_classes(self, path: Path, classes: ClassList, cog: bool) -> np.ndarray:
        """The class raster; returns each class's share of the valid pixels."""
        counts = np.zeros(len(classes), dtype=np.int64)

        def block(window) -> np.ndarray:
            values, valid = self.block(window)
            index = np.where(valid, np.nan_to_num(values, nan=-1.0).argmax(axis=2), CLASS_NODATA).astype(np.uint8)
            counts[:] += np.bincount(index[valid].ravel(), minlength=len(classes))[: len(classes)]
            return index

        colours = class_colours(len(classes))
        colormap = {i: colours[i] for i in range(len(classes))}
        colormap[CLASS_NODATA] = (0, 0, 0, 0)
        tags = {f"CLASS_{i}": label for i, label in enumerate(classes.labels)}
        tags["CLASSES"] = json.dumps(list(classes.labels))
        write_geotiff_blocks(path, block, height=self.shape[0], width=self.shape[1], count=1, dtype=np.uint8,
                             crs=self.source.crs, transform=self.transform, nodata=CLASS_NODATA, cog=cog,
                             colormap=colormap, band_descriptions=["class"], tags=tags)
        _write_category_names(path, classes.labels)
        _write_class_style(path.with_suffix(".qml"), classes.labels, colours)
        total = counts.sum()
        return counts / total if total else counts.astype(np.float64)

    def write_probabilities(self, path: Path, classes: ClassList, cog: bool) -> None:
        def block(window) -> np.ndarray:
            values, valid = self.block(window)
            out = np.where(valid[..., None], values, PROBABILITY_NODATA).astype(np.float32)
            return np.moveaxis(out, 2, 0)

        write_geotiff_blocks(path, block, height=self.shape[0], width=self.shape[1], count=len(classes),
                             dtype=np.float32, crs=self.source.crs, transform=self.transform,
                             nodata=PROBABILITY_NODATA, cog=cog, band_descriptions=list(classes.labels),
                             tags={"CLASSES": json.dumps(list(classes.labels)),
                                   "MEANING": "mean over covering tiles of softmax(logit_scale * cosine)"})


def _hex(colour) -> str:
    return "#" + "".join(f"{v:02x}" for v in colour[:3])


def _tile_layer(transform, windows, probabilities, classes: ClassList, top_k: int) -> VectorLayer:
    k = min(top_k, len(classes))
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    fields: dict = {
        "row0": windows[:, 0], "row1": windows[:, 1], "col0": windows[:, 2], "col1": windows[:, 3],
        "scale": windows[:, 4],
    }
    labels = np.array(classes.labels, dtype=object)
    for rank in range(k):
        fields[f"class_{rank + 1}"] = labels[order[:, rank]].tolist()
        fields[f"prob_{rank + 1}"] = probabilities[np.arange(len(windows)), order[:, rank]]
    return VectorLayer("tiles", window_polygons(transform, windows), fields, "Polygon")


def _write_category_names(raster: Path, labels) -> None:
    """GDAL's category names for band 1 (read by GDAL and QGIS from the .aux.xml beside the file)."""
    names = "".join(f"      <Category>{html.escape(label)}</Category>\n" for label in labels)
    text = ("<PAMDataset>\n  <PAMRasterBand band=\"1\">\n    <CategoryNames>\n" + names +
            "    </CategoryNames>\n  </PAMRasterBand>\n</PAMDataset>\n")
    write_text_atomic(raster.with_name(raster.name + ".aux.xml"), text)


def _write_class_style(path: Path, labels, colours) -> None:
    """A QGIS paletted style: each class value with its colour and name in the legend."""
    entries = "".join(
        f'        <paletteEntry value="{i}" color="{_hex(c)}" alpha="255" '
        f'label="{html.escape(label, quote=True)}"/>\n' for i, (label, c) in enumerate(zip(labels, colours, strict=True)))
    text = (
        "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"
        '<qgis version="3.28" styleCategories="Symbology">\n'
        "  <pipe>\n"
        '    <rasterrenderer type="paletted" band="1" opacity="1" nodataColor="">\n'
        "      <colorPalette>\n" + entries +
        "      </colorPalette>\n"
        "    </rasterrenderer>\n"
        "  </pipe>\n"
        "</qgis>\n"
    )
    write_text_atomic(path, text)


class _staging:
    """A temporary folder inside ``out_dir``: removed, with everything in it, if the run fails."""

    def __init__(self, out_dir: Path):
        self.out_dir = out_dir

    def __enter__(self) -> Path:
        self.path = Path(tempfile.mkdtemp(prefix=".classify.", suffix=".tmp", dir=self.out_dir))
        return self.path

    def __exit__(self, *exc_info) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def _publish(staging: Path, out_dir: Path) -> list[Path]:
    """Move the finished files into place (each rename is atomic) and drop stale ones of an earlier run."""
    published = []
    for name in FILES:
        target = out_dir / name
        if (staging / name).exists():
            os.replace(staging / name, target)
            published.append(target)
        elif target.exists():
            target.unlink()  # e.g. probabilities.tif of an earlier run that wrote one
    return published
