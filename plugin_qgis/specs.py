"""Job specs the plugin sends to the worker (JSON objects; rs_vlm_app/jobs/kinds/ defines them).

Every field name the plugin uses for a job lives here, so a change in the app's specs is a change
in this one module. docs/jobs.md is the reference.
"""

from __future__ import annotations

from pathlib import Path


def _compact(spec: dict) -> dict:
    """Leave out options the user did not set, so the worker's defaults apply."""
    return {k: v for k, v in spec.items() if v is not None and v != ""}


def localize(scene: str, queries: list[str], out: Path, model: dict, *, grid: str | None = None,
             hotspot_threshold: float | None = None, min_valid: float | None = None,
             bands: list[int] | None = None, compat: str | None = None, heatmap_pixel: float | None = None,
             cog: bool | None = None) -> dict:
    """Heat map (``<stem>_heatmap.tif``) and hot spots / tile scores (``<stem>.gpkg``) per query."""
    return _compact({
        "kind": "localize", "scene": str(scene), "queries": list(queries), "out": str(out), "model": model,
        "grid": grid, "hotspot_threshold": hotspot_threshold, "min_valid": min_valid,
        "bands": list(bands) if bands else None, "compat": compat, "heatmap_pixel": heatmap_pixel, "cog": cog,
    })


def caption(scene: str, out: Path, model: dict, *, grid: str | None = None, decoding: str | None = None,
            beams: int | None = None, max_len: int | None = None, clip_model: dict | None = None,
            bands: list[int] | None = None) -> dict:
    """``out`` (a .gpkg): layer "captions", one tile polygon with its caption each."""
    return _compact({
        "kind": "caption", "scene": str(scene), "out": str(out), "model": model, "grid": grid,
        "decoding": decoding, "beams": beams, "max_len": max_len, "clip_model": clip_model,
        "bands": list(bands) if bands else None,
    })


def classify(scene: str, out: Path, model: dict, classes: str | list[str], *, top_k: int | None = None,
             grid: str | None = None, bands: list[int] | None = None, probabilities: bool | None = None) -> dict:
    """``out`` (a folder): classes.tif (+ classes.qml), probabilities.tif, tiles.gpkg (layer "tiles").
    ``classes``: aid, resisc45, eurosat, a class file, or the class names themselves (a list)."""
    return _compact({
        "kind": "classify", "scene": str(scene), "out": str(out), "model": model,
        "classes": list(classes) if isinstance(classes, list | tuple) else str(classes),
        "top_k": top_k, "grid": grid, "bands": list(bands) if bands else None, "probabilities": probabilities,
    })


def search(scenes: list[str], query: str, out: Path, model: dict, *, top_k: int | None = None,
           grid: str | None = None, sheet: bool | None = None, bands: list[int] | None = None) -> dict:
    """``out`` (a .gpkg): layer "results", the best tiles' footprints; a contact sheet beside it."""
    return _compact({
        "kind": "search", "scenes": [str(s) for s in scenes], "query": query, "out": str(out), "model": model,
        "top_k": top_k, "grid": grid, "contact_sheet": sheet, "bands": list(bands) if bands else None,
    })


def dataset_build(config: str, out: str | None = None, shard: str | None = None) -> dict:
    """Build (or resume) a captioned dataset from a YAML build config; ``out`` overrides its output."""
    return _compact({"kind": "dataset-build", "config": str(config), "out": str(out) if out else None,
                     "shard": shard})


def fine_tune(task: str, data: str, out: str, **options) -> dict:
    """Fine-tune a CLIP (``task`` "clip") or CoCa ("coca") model; ``options`` are FineTuneSpec fields
    (recipe, arch, model_config, init, epochs, batch_size, lr, lora_rank, device, val_data, ...);
    those left None take the recipe's values."""
    return _compact({"kind": "fine-tune", "task": task, "data": str(data), "out": str(out), **options})
