"""`rsvlm localize SCENE "query" ... -o OUTDIR`: heat maps and hot spots per query."""

from __future__ import annotations

import argparse
from pathlib import Path

from rs_vlm_app.commands import options
from rs_vlm_app.commands.jobrun import add_json_option
from rs_vlm_app.commands.task_args import add_aoi_option, add_tile_options
from rs_vlm_app.tasks.options import LocalizeOptions

EPILOG = """\
outputs, per query (file stem = the query, made file-name safe):
  STEM_heatmap.tif  float32 0..1 in the scene's CRS and extent, nodata -9999, tiled, deflate,
                    overviews; STEM_heatmap.qml beside it styles it when opened in QGIS
  STEM.gpkg         layer "hotspots" (rank, query, score, mean_score, area, area_unit, peak_x,
                    peak_y) and layer "tiles" (row0, row1, col0, col1, scale, score = raw cosine)
  localize.json     every query answered into OUTDIR, with its files

examples:
  rsvlm localize scene.tif "airplanes parked at a terminal" "a runway" -o out/
  rsvlm localize scene.tif "a lake" --grid 256,512@0.5 --bands 4,3,2 -o out/
  rsvlm localize scene.png "a lake" --compat selo --model-config cfg.json --checkpoint w.pt -o out/
"""


def register(tree) -> None:
    parser = tree.command("localize", run, help="find where text queries appear in a raster (heat maps + hot spots)")
    parser.epilog = EPILOG
    parser.add_argument("scene", type=Path, nargs="?",
                        help="raster file (GeoTIFF, COG, VRT, JPEG2000, PNG, JPEG ...); with --archive, a query")
    parser.add_argument("queries", nargs="*", metavar="QUERY", help="text queries, e.g. \"a large dark lake\"")
    archive = parser.add_argument_group("archive (rsvlm index; docs/archive.md)")
    archive.add_argument("--archive", type=Path, metavar="ARCHIVE",
                         help="every scene of an archive, from its embeddings (no encoding); positionals are queries")
    archive.add_argument("--queries", dest="queries_file", type=Path, metavar="FILE",
                         help="archive: more queries, one a line")
    archive.add_argument("--where", metavar="CONDITIONS", help="archive: e.g. \"date >= 2020-01-01\"")
    parser.add_argument("-o", "--out", type=Path, required=True, help="output folder")
    options.add_model_options(parser)
    options.add_device_options(parser)
    add_aoi_option(add_tile_options(parser, LocalizeOptions))
    group = parser.add_argument_group("localization")
    for name, metavar in (("compat", None), ("hotspot_threshold", "T"), ("heatmap_pixel", "N"), ("cog", None)):
        options.add_option(group, LocalizeOptions, name, metavar=metavar,
                           value_type=float if name == "heatmap_pixel" else None)
    add_json_option(parser)


def run(args: argparse.Namespace) -> int:
    from rs_vlm_app.commands.jobrun import model_spec_from_args, run_spec
    from rs_vlm_app.errors import UserError
    from rs_vlm_app.jobs.kinds.localize import LocalizeSpec

    if args.archive is not None:
        from rs_vlm_app.commands.archive_localize import run_archive_localize

        return run_archive_localize(args)
    if args.scene is None or not args.queries:
        raise UserError("give a scene and at least one query, e.g. rsvlm localize scene.tif \"a lake\" -o out/")
    spec = LocalizeSpec(
        scene=args.scene, queries=list(args.queries), out=args.out, model=model_spec_from_args(args),
        grid=args.grid, compat=args.compat,
        bands=list(args.bands) if args.bands else None, min_valid=args.min_valid,
        hotspot_threshold=args.hotspot_threshold, heatmap_pixel=args.heatmap_pixel, cog=args.cog,
        aoi=args.aoi,
    )
    outcome = run_spec(spec, args)
    if outcome.result is not None and not args.json:
        for q in outcome.result.summary["queries"]:
            print(f"{q['query']!r}: {q['hotspots']} hot spot(s), best tile cosine {q['best_cosine']:.3f} "
                  f"-> {q['heatmap']}, {q['vectors']}")
    return outcome.exit_code

