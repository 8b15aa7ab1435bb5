"""`rsvlm index SCENE... -o ARCHIVE`: encode every tile of many scenes into an archive folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from rs_vlm_app.commands import options
from rs_vlm_app.commands.jobrun import add_json_option
from rs_vlm_app.commands.task_args import add_tile_options

EPILOG = """\
SCENE is a raster file, a folder (every raster inside), a glob ('tiles/**/*.tif') or a GDAL path
(/vsicurl/https://...). --scenes also takes a text file of paths/URLs (one a line) or a STAC Item
or ItemCollection JSON (the asset read is --asset, default the visual/RGB one). Scenes are keyed by
name (file stem or STAC id). Running the command again adds new scenes and skips those already in
the archive (same pixels), so an interrupted index resumes. A scene that cannot be read is listed
at the end and in ARCHIVE/failures.json (exit status 1); the others complete.

engines:
  local (default)  this process, scenes one after another, one GPU
  ray              a private local Ray instance (every GPU, or --workers CPU workers), or a running
                   cluster with --ray-address HOST:PORT (see docs/archive.md)

examples:
  rsvlm index naip/*.tif -o naip_archive --model GeoRSCLIP
  rsvlm index --scenes items.json --asset visual -o s2_archive --engine ray
  rsvlm index --scenes list.txt -o big --engine ray --ray-address 10.0.0.5:6379
"""


def register(tree) -> None:
    parser = tree.command("index", run, help="encode every tile of many scenes into a searchable archive")
    parser.epilog = EPILOG
    parser.add_argument("scenes", nargs="*", metavar="SCENE", help="raster files, folders, globs or GDAL paths")
    parser.add_argument("--scenes", dest="scene_lists", action="append", default=[], metavar="FILE|GLOB|STAC.json",
                        help="a list of scenes: text file of paths/URLs, a glob, or STAC JSON (repeatable)")
    parser.add_argument("--asset", metavar="NAME", help="STAC asset to read (default: visual, rgb, image, data)")
    parser.add_argument("-o", "--out", type=Path, required=True, metavar="ARCHIVE", help="archive folder")
    group = parser.add_argument_group("engine")
    group.add_argument("--engine", choices=("local", "ray"), default="local",
                       help="local: in this process (default); ray: Ray workers, local or a cluster")
    group.add_argument("--workers", type=options._positive_int, default=None, metavar="N",
                       help="ray: model-holding workers (default: one per GPU, else CPUs / 4)")
    group.add_argument("--ray-address", metavar="ADDR", help="ray: join this cluster (HOST:PORT or ray://HOST:PORT)")
    options.add_model_options(parser)
    options.add_device_options(parser)
    add_tile_options(parser, default_grid="256")
    add_json_option(parser)


def run(args: argparse.Namespace) -> int:
    from rs_vlm_app.commands.jobrun import model_spec_from_args, run_spec
    from rs_vlm_app.errors import UserError
    from rs_vlm_app.jobs.kinds.index import IndexSpec

    if not args.scenes and not args.scene_lists:
        raise UserError("give scenes to index (files, folders, globs) or --scenes LIST")
    if args.engine != "ray" and (args.workers or args.ray_address):
        raise UserError("--workers and --ray-address need --engine ray")
    spec = IndexSpec(archive=args.out, scenes=list(args.scenes), scene_lists=list(args.scene_lists),
                     asset=args.asset, model=model_spec_from_args(args), grid=args.grid,
                     bands=list(args.bands) if args.bands else None, min_valid=args.min_valid,
                     engine=args.engine, workers=args.workers, ray_address=args.ray_address)
    outcome = run_spec(spec, args)
    if outcome.result is None:
        return outcome.exit_code
    s = outcome.result.summary
    if not args.json:
        print(f"{s['archive']}: {len(s['added'])} scene(s) added ({s['tiles_added']} tiles), "
              f"{len(s['present'])} already there; {s['scenes_total']} scenes, {s['tiles_total']} tiles in all "
              f"[{s['engine']} engine, {s['workers']} worker(s), {s['seconds']:.1f} s]")
        for failure in s["failures"]:
            print(f"rsvlm: failed: {failure['message']}")
    return 1 if s["failures"] else 0
