"""The demo's report: OUTDIR/report.html (self-contained, pictures inline), OUTDIR/demo.json, figures/."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from rs_vlm_app import __version__
from rs_vlm_app.atomic import write_text_atomic
from rs_vlm_app.demo import figures
from rs_vlm_app.demo.world import CLASSES, QUERIES
from rs_vlm_app.evaluation.selo import METRIC_NAMES
from rs_vlm_app.mpgi.wording import count_phrase

SAMPLE_TILES = 8


def write_report(out: Path, settings, stages: dict[str, dict[str, Any]], seconds: dict[str, float]) -> None:
    """Draw the figures and write report.html and demo.json from the finished stages' records."""
    from rs_vlm_app.demo.pipeline import MODELS, read_losses

    seconds = {k: v for k, v in seconds.items() if k != "report"}  # the report's own time is not known yet
    summary = build_summary(out, settings, stages, seconds)
    look = figures.QuickLook(out / "world" / "eval.tif")
    pictures: dict[str, bytes] = {}
    fig = out / "figures"
    pictures["truth"] = figures.write_png(fig / "scene_truth.png",
                                          figures.truth_figure(look, out / "world" / "eval_objects.gpkg"))
    regions, fields = figures.read_layer(out / "world" / "eval_objects.gpkg", "regions")
    for cls in CLASSES:
        query = QUERIES[cls]
        truth = [g for g, q in zip(regions, fields["query"], strict=True) if q == query]
        for model in MODELS:
            entry = stages["localize"][model][query]
            spots, _ = figures.read_layer(out / entry["vectors"], "hotspots")
            pictures[f"{cls}_{model}"] = figures.write_png(
                fig / f"heat_{cls}_{model}.png", figures.heat_figure(look, out / entry["heatmap"], truth, spots))
    legend = _class_legend(out / "classify" / "trained" / "classify.json")
    for model in MODELS:
        colours = [tuple(int(c[i: i + 2], 16) for i in (1, 3, 5)) for _, c in legend]
        pictures[f"classes_{model}"] = figures.write_png(
            fig / f"classes_{model}.png",
            figures.class_figure(out / "classify" / model / "classes.tif", colours, look.shape))
    tiles = _sample_tiles(out / "dataset")
    losses = read_losses(out / "model" / "run" / "train_log.csv")
    page = _page(summary, pictures, legend, tiles, figures.loss_svg(losses), out)
    write_text_atomic(out / "report.html", page)
    write_text_atomic(out / "demo.json", json.dumps(summary, indent=1))


def build_summary(out: Path, settings, stages: dict[str, dict[str, Any]], seconds: dict[str, float]) -> dict:
    """demo.json: settings, timings, the dataset and training, SeLo and classification of both models."""
    selo = stages["selo"]
    gain = selo["trained"]["mean"]["Rmi"] - selo["untrained"]["mean"]["Rmi"]
    return {
        "rs_vlm_version": __version__,
        "settings": settings.to_dict(),
        "seconds": {k: round(v, 2) for k, v in seconds.items()},
        "total_seconds": round(sum(seconds.values()), 2),
        "world": stages["world"]["objects"],
        "dataset": {k: v for k, v in stages["dataset"].items() if k != "seconds"},
        "training": {k: v for k, v in stages["train"].items() if k != "seconds"},
        "selo": {m: selo[m] for m in ("trained", "untrained")},
        "rmi_gain": gain,
        "classification": {m: stages["classify"][m] for m in ("trained", "untrained")},
        "localize": {m: stages["localize"][m] for m in ("trained", "untrained")},
        "files": {"scene": "world/eval.tif", "annotations": "world/eval_objects.gpkg",
                  "masks": "world/eval_masks.tif", "selo_benchmark": "world/selo_benchmark",
                  "captions": stages["dataset"]["csv"], "model": stages["train"]["model"],
                  "model_config": stages["train"]["model_config"], "report": "report.html"},
    }


def _class_legend(classify_json: Path) -> list[tuple[str, str]]:
    manifest = json.loads(classify_json.read_text(encoding="utf-8"))
    return [(c["label"], c["colour"]) for c in manifest["classes"]]


def _sample_tiles(dataset: Path) -> list[tuple[bytes, str]]:
    """A few training tiles (one per class first, then others) with their first caption."""
    rows = [json.loads(line) for line in (dataset / "facts.jsonl").read_text(encoding="utf-8").splitlines()]
    chosen: list[dict] = []
    for word in ("lake", "field", "road", "building", "No annotated"):
        for row in rows:
            if row not in chosen and any(word in s for s in row["facts"] if s.startswith(("The image contains", "No "))):
                chosen.append(row)
                break
    for row in rows:
        if len(chosen) >= SAMPLE_TILES:
            break
        if row not in chosen:
            chosen.append(row)
    out = []
    for row in chosen:
        tile = cv2.imread(str(dataset / row["image"]), cv2.IMREAD_COLOR)
        big = cv2.resize(tile, (96, 96), interpolation=cv2.INTER_NEAREST)
        ok, png = cv2.imencode(".png", big)
        sentences = [s for s in row["facts"] if s.startswith(("The image contains", "No "))] or row["facts"][:1]
        out.append((png.tobytes() if ok else b"", sentences[0] if sentences else ""))
    return out


def _img(data: bytes, alt: str, width: int | None = None) -> str:
    """An inline picture; big PNGs are inlined as JPEG (the noisy scene makes PNGs ten times larger)."""
    size = f' width="{width}"' if width else ""
    kind = "png"
    if len(data) > 64_000:
        picture = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        ok, jpeg = cv2.imencode(".jpg", picture, [cv2.IMWRITE_JPEG_QUALITY, 88])
        if ok:
            data, kind = jpeg.tobytes(), "jpeg"
    return f'<img src="data:image/{kind};base64,{base64.b64encode(data).decode()}" alt="{html.escape(alt)}"{size}>'


def _page(summary: dict, pictures: dict[str, bytes], legend, tiles, loss_svg: str, out: Path) -> str:
    e = html.escape
    selo = summary["selo"]
    rows = []
    for cls in CLASSES:
        query = QUERIES[cls]
        cells = "".join(f"<td>{selo[m]['per_query'][query][k]:.3f}</td>" for m in ("trained", "untrained")
                        for k in METRIC_NAMES if query in selo[m]["per_query"])
        rows.append(f"<tr><td>{e(query)}</td>{cells}</tr>")
    mean = "".join(f"<td><b>{selo[m]['mean'][k]:.3f}</b></td>" for m in ("trained", "untrained") for k in METRIC_NAMES)
    rows.append(f"<tr><td><b>mean</b></td>{mean}</tr>")
    head = "".join(f"<th>{k}</th>" for _ in range(2) for k in METRIC_NAMES)
    cls_acc = summary["classification"]
    heat_rows = "".join(
        f"<tr><td>{e(QUERIES[c])}</td><td>{_img(pictures[f'{c}_trained'], QUERIES[c] + ' trained', 384)}</td>"
        f"<td>{_img(pictures[f'{c}_untrained'], QUERIES[c] + ' untrained', 384)}</td></tr>" for c in CLASSES)
    legend_html = " ".join(f'<span class="sw" style="background:{e(colour)}"></span>{e(label)}' for label, colour in legend)
    tile_html = "".join(f'<figure>{_img(data, text)}<figcaption>{e(text)}</figcaption></figure>' for data, text in tiles)
    training = summary["training"]
    dataset = summary["dataset"]
    timing = "".join(f"<tr><td>{e(k)}</td><td>{v:.1f} s</td></tr>" for k, v in summary["seconds"].items())
    settings = summary["settings"]
    model, config = training["model"], training["model_config"]
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>rs-vlm offline demo</title>
<style>
body {{ font-family: sans-serif; max-width: 1000px; margin: 2em auto; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em; }}
td, th {{ border: 1px solid #ccc; padding: 3px 8px; text-align: right; }}
td:first-child {{ text-align: left; }}
.sw {{ display: inline-block; width: 1em; height: 1em; margin: 0 4px 0 12px; vertical-align: middle; }}
figure {{ display: inline-block; width: 180px; margin: 4px; vertical-align: top; font-size: 12px; }}
code {{ background: #f4f4f4; padding: 1px 4px; }}
</style></head><body>
<h1>rs-vlm offline demo</h1>
<p>A synthetic georeferenced world ({settings['scene_size']} &times; {settings['scene_size']} pixels of
{settings['pixel_m']} m, UTM) with known lakes, fields, roads and buildings; a caption dataset built from a
separate training world by the dataset builder's rule stage; a small CLIP trained on it from random weights;
the queries localized on the evaluation scene; SeLo scores against the known objects, for the trained model
and for the same architecture with its untrained initial weights.</p>

<h2>Semantic localization (SeLo)</h2>
<p>Mean Rmi <b>{selo['trained']['mean']['Rmi']:.3f}</b> trained vs <b>{selo['untrained']['mean']['Rmi']:.3f}</b>
untrained (gain {summary['rmi_gain']:+.3f}). Rsu, Rda, Rmi: higher is better; Ras: lower is better.</p>
<table><tr><th rowspan="2">query</th><th colspan="4">trained</th><th colspan="4">untrained</th></tr>
<tr>{head}</tr>{''.join(rows)}</table>

<h2>Heat maps</h2>
<p>Each query's heat map over the scene (bright = high), the true regions outlined in white, the hot spots
(regions of the normalised heat map &ge; 0.6) in green. Files: <code>localize/trained/</code>,
<code>localize/untrained/</code> (GeoTIFF heat maps and GeoPackage hot spots in the scene's CRS).</p>
<table><tr><th>query</th><th>trained</th><th>untrained</th></tr>{heat_rows}</table>

<h2>The scene and its known objects</h2>
{_img(pictures['truth'], 'evaluation scene with its annotated objects', 640)}
<p>Objects in the evaluation scene: {e(', '.join(count_phrase(n, k) for k, n in summary['world']['eval'].items()))}.
Files: <code>world/eval.tif</code>, <code>world/eval_objects.gpkg</code> (layers <code>objects</code> and
<code>regions</code>), <code>world/eval_masks.tif</code>.</p>

<h2>Zero-shot classification</h2>
<p>{legend_html}</p>
<table><tr><th>model</th><th>pixel accuracy</th><th>balanced accuracy</th></tr>
<tr><td>trained</td><td>{cls_acc['trained']['accuracy']:.3f}</td><td>{cls_acc['trained']['balanced_accuracy']:.3f}</td></tr>
<tr><td>untrained</td><td>{cls_acc['untrained']['accuracy']:.3f}</td><td>{cls_acc['untrained']['balanced_accuracy']:.3f}</td></tr></table>
{_img(pictures['classes_trained'], 'class map, trained model', 384)}
{_img(pictures['classes_untrained'], 'class map, untrained model', 384)}

<h2>Training</h2>
<p>{dataset['tiles']} tiles of the training world, {dataset['captions']} rule captions
(<code>{e(dataset['csv'])}</code>); {training['steps']} optimizer steps, contrastive loss
{training['first_loss']:.3f} &rarr; {training['final_loss']:.3f}.</p>
{loss_svg}
<div>{tile_html}</div>

<h2>Use the model yourself</h2>
<p><code>rsvlm localize {e(str(out / 'world' / 'eval.tif'))} "a lake" --model-config {e(str(out / config))}
--checkpoint {e(str(out / model))} -o my_results</code></p>

<h2>Time</h2>
<table>{timing}<tr><td><b>total</b></td><td><b>{summary['total_seconds']:.1f} s</b></td></tr></table>
<p>rs-vlm {e(summary['rs_vlm_version'])}; the numbers are also in <code>demo.json</code>.</p>
</body></html>
"""
