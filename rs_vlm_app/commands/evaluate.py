"""`rsvlm eval selo`: the semantic-localization benchmark (AIR-SLT layout)."""

from __future__ import annotations

import argparse
from pathlib import Path

from rs_vlm_app.commands import options
from rs_vlm_app.commands.jobrun import add_json_option


def register(tree) -> None:
    parser = tree.command(
        "eval selo", run_selo,
        help="semantic-localization metrics (Rsu, Ras, Rda, Rmi) on an AIR-SLT folder or your own scene",
        description="Evaluate semantic localization on DIR/imgs + DIR/annotations/anno.json (--data), or on "
                    "your own georeferenced scene with ground-truth polygons in any CRS (--scene, --truth, "
                    "--query-field: each distinct value of the field is one query). Writes "
                    "OUT/selo_metrics.json (per_sample, and mean) and OUT/selo_metrics.csv.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", type=Path, metavar="DIR", help="AIR-SLT layout folder")
    source.add_argument("--scene", type=Path, metavar="SCENE", help="your georeferenced raster (with --truth)")
    parser.add_argument("--truth", metavar="FILE[:LAYER]",
                        help="ground-truth polygons for --scene (GeoPackage, Shapefile, GeoJSON, ...; any CRS)")
    parser.add_argument("--query-field", metavar="FIELD", help="the field of --truth that holds each polygon's query")
    parser.add_argument("-o", "--out", type=Path, required=True, help="output folder")
    parser.add_argument("--compat", choices=["selo"], help="the published protocol step for step (compare with papers)")
    parser.add_argument("--save-probmaps", action="store_true", help="also write each probability map as PNG")
    options.add_model_options(parser)
    options.add_device_options(parser)
    parser.add_argument("--grid", default=None, metavar="GRID",  # parsed once, by the job
                        help="tile grid (default: selo = windows 256/512/768 with half-shifted grids)")
    add_json_option(parser)


def run_selo(args: argparse.Namespace) -> int:
    from rs_vlm_app.commands.jobrun import model_spec_from_args, run_spec
    from rs_vlm_app.jobs.kinds.selo_eval import SeloEvalSpec

    spec = SeloEvalSpec(data=args.data, scene=args.scene, truth=args.truth, query_field=args.query_field,
                        out=args.out, model=model_spec_from_args(args), compat=args.compat,
                        grid=args.grid,
                        save_probmaps=args.save_probmaps)
    outcome = run_spec(spec, args)
    if outcome.result is None or args.json:
        return outcome.exit_code
    report = outcome.result.summary
    print(f"{'sample':>6}  {'Rsu':>6} {'Ras':>6} {'Rda':>6} {'Rmi':>6}  caption")
    for row in report["per_sample"]:
        print(f"{row['index']:>6}  {row['Rsu']:6.4f} {row['Ras']:6.4f} {row['Rda']:6.4f} {row['Rmi']:6.4f}  {row['caption'][:60]}")
    m = report["mean"]
    print(f"{'mean':>6}  {m['Rsu']:6.4f} {m['Ras']:6.4f} {m['Rda']:6.4f} {m['Rmi']:6.4f}")
    print(f"written: {args.out / 'selo_metrics.json'}, {args.out / 'selo_metrics.csv'}")
    return 0
