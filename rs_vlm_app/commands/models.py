"""`rsvlm models list|path|fetch|export|import`: the model catalogue, where each model's weights live,
and bundles that carry them to machines without internet."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rs_vlm_app.models.catalogue import (
    HubFile,
    ModelEntry,
    OpenClipPretrained,
    UrlFile,
    UserFile,
    get_entry,
    load_catalogue,
)


def register(tree) -> None:
    parser = tree.command("models list", run_list, help="list the catalogue's models and whether they are cached")
    parser.add_argument("--json", action="store_true", help="print one JSON object per model instead of a table")
    parser = tree.command("models path", run_path, help="print where a model's weights file is, or must be put")
    parser.add_argument("name", metavar="NAME", help="catalogue model name")
    parser = tree.command("models fetch", run_fetch,
                          help="download a model's weights into the cache now (to work offline later)")
    parser.add_argument("name", metavar="NAME", help="catalogue model name")
    parser = tree.command("models export", run_export,
                          help="write cached models' weights into one ZIP for a machine without internet")
    parser.add_argument("names", nargs="+", metavar="NAME", help="catalogue model names (weights must be cached)")
    parser.add_argument("-o", "--out", type=Path, required=True, metavar="BUNDLE.zip", help="the bundle to write")
    parser = tree.command("models import", run_import,
                          help="put the weights of a bundle from `rsvlm models export` into this machine's cache")
    parser.add_argument("bundle", type=Path, metavar="BUNDLE.zip", help="the bundle (checksums are verified)")


def _source_text(entry: ModelEntry) -> str:
    source = entry.source
    if isinstance(source, HubFile):
        return f"hf:{source.repo}/{source.file}"
    if isinstance(source, UrlFile):
        return f"url:{source.url.rsplit('/', 1)[-1]}"
    if isinstance(source, OpenClipPretrained):
        return f"open_clip:{source.tag}"
    return "user file"


def run_list(args: argparse.Namespace) -> int:
    from rs_vlm_app.models.resolve import expected_path, find_cached

    rows = []
    for entry in load_catalogue().values():
        cached = find_cached(entry)
        rows.append({
            "name": entry.name, "family": entry.family, "arch": entry.arch, "quick_gelu": entry.quick_gelu,
            "source": _source_text(entry), "cached": cached is not None,
            "path": str(cached or expected_path(entry)), "default": entry.default,
            "description": entry.description, "paper": entry.paper, "license": entry.license,
        })
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return 0
    header = ("NAME", "FAMILY", "ARCH", "QUICKGELU", "SOURCE", "CACHED")
    table = [header] + [
        (("* " if r["default"] else "  ") + r["name"], r["family"], r["arch"], "yes" if r["quick_gelu"] else "no",
         r["source"], "yes" if r["cached"] else "no")
        for r in rows
    ]
    table[0] = ("  " + header[0],) + header[1:]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    print("\n* = default of its family. `rsvlm models path NAME` shows where a model's file goes.")
    return 0


def run_path(args: argparse.Namespace) -> int:
    from rs_vlm_app.models.resolve import expected_path, find_cached

    entry = get_entry(args.name)
    cached = find_cached(entry)
    if cached is not None:
        print(cached)
        return 0
    print(expected_path(entry))
    how = ("" if isinstance(entry.source, UserFile)
           else f", or run `rsvlm models fetch {entry.name}` while online")
    print(f"rsvlm: {entry.name} is not in the cache yet; put its weights ({entry.source.describe()}) at the path "
          f"above{how}", file=sys.stderr)
    return 0


def run_fetch(args: argparse.Namespace) -> int:
    from rs_vlm_app.models.resolve import resolve_checkpoint

    entry = get_entry(args.name)
    print(resolve_checkpoint(entry))  # downloads unless HF_HUB_OFFLINE or RSVLM_OFFLINE is set
    return 0


def run_export(args: argparse.Namespace) -> int:
    from rs_vlm_app.models.bundle import export_bundle

    bundled = export_bundle(list(args.names), args.out)
    for model in bundled:
        print(f"{model.name}: {model.file} ({model.size / 1e6:.1f} MB, sha256 {model.sha256[:12]}...)")
    print(f"written: {args.out}; on the other machine: rsvlm models import {args.out.name}")
    return 0


def run_import(args: argparse.Namespace) -> int:
    from rs_vlm_app.models.bundle import import_bundle

    for item in import_bundle(args.bundle):
        print(f"{item.model.name}: {item.status} -> {item.path}")
    return 0
