"""`rsvlm localize SCENE "query" ... -o OUTDIR`: heat maps and hot spots per query."""

from __future__ import annotations

import argparse
from pathlib import Path

from rs_vlm_app.commands import options
from rs_vlm_app.commands.jobrun import add_json_option

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
    parser.add_argument("scene", type=Path, help="raster file (GeoTIFF, COG, VRT, JPEG2000, PNG, JPEG ...)")
    parser.add_argument("queries", nargs="+", metavar="QUERY", help="text queries, e.g. \"a large dark lake\"")
    parser.add_argument("-o", "--out", type=Path, required=True, help="output folder")
    options.add_model_options(parser)
    options.add_device_options(parser)
    options.add_raster_options(parser)
    group = parser.add_argument_group("localization")
    group.add_argument("--compat", choices=["selo"], help="reproduce the published SeLo protocol step for step")
    group.add_argument("--min-valid", type=float, default=0.5, metavar="FRACTION",
                       help="skip tiles with less valid (non-nodata) area than this (default 0.5)")
    group.add_argument("--hotspot-threshold", type=float, default=0.6, metavar="T",
                       help="hot spots are regions of the normalised heat map >= T (default 0.6)")
    group.add_argument("--heatmap-pixel", type=float, metavar="N",
                       help="source pixels per heat-map pixel (default: smallest window / 32; 1 with --compat)")
    group.add_argument("--cog", action="store_true", help="write heat maps as Cloud-Optimized GeoTIFFs")
    add_json_option(parser)


def run(args: argparse.Namespace) -> int:
    from rs_vlm_app.commands.jobrun import model_spec_from_args, run_spec
    from rs_vlm_app.jobs.kinds.localize import LocalizeSpec

    _check_fraction("--min-valid", args.min_valid)
    _check_fraction("--hotspot-threshold", args.hotspot_threshold)
    spec = LocalizeSpec(
        scene=args.scene, queries=list(args.queries), out=args.out, model=model_spec_from_args(args),
        grid=args.grid.key() if args.grid is not None else None, compat=args.compat,
        bands=list(args.bands) if args.bands else None, min_valid=args.min_valid,
        hotspot_threshold=args.hotspot_threshold, heatmap_pixel=args.heatmap_pixel, cog=args.cog,
    )
    outcome = run_spec(spec, args)
    if outcome.result is not None and not args.json:
        for q in outcome.result.summary["queries"]:
            print(f"{q['query']!r}: {q['hotspots']} hot spot(s), best tile cosine {q['best_cosine']:.3f} "
                  f"-> {q['heatmap']}, {q['vectors']}")
    return outcome.exit_code


def _check_fraction(flag: str, value: float) -> None:
    from rs_vlm_app.errors import UserError

    if not 0.0 <= value <= 1.0:
        raise UserError(f"{flag} must be between 0 and 1, not {value}")
