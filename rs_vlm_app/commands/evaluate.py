"""`rsvlm eval selo`: the semantic-localization benchmark (AIR-SLT layout)."""

from __future__ import annotations

import argparse
from pathlib import Path

from rs_vlm_app.commands import options


def register(tree) -> None:
    parser = tree.command(
        "eval selo", run_selo, help="semantic-localization metrics (Rsu, Ras, Rda, Rmi) on an AIR-SLT-style folder",
        description="Evaluate semantic localization on DIR/imgs + DIR/annotations/anno.json. Writes "
                    "OUT/selo_metrics.json (per_sample in anno.json order, and mean) and OUT/selo_metrics.csv.",
    )
    parser.add_argument("--data", type=Path, required=True, metavar="DIR", help="AIR-SLT layout folder")
    parser.add_argument("-o", "--out", type=Path, required=True, help="output folder")
    parser.add_argument("--compat", choices=["selo"], help="the published protocol step for step (compare with papers)")
    parser.add_argument("--save-probmaps", action="store_true", help="also write each probability map as PNG")
    options.add_model_options(parser)
    options.add_device_options(parser)
    parser.add_argument("--grid", type=options.grid_spec, default=None, metavar="GRID",
                        help="tile grid (default: selo = windows 256/512/768 with half-shifted grids)")


def run_selo(args: argparse.Namespace) -> int:
    from rs_vlm_app.commands.console import ConsoleReporter
    from rs_vlm_app.evaluation.selo_eval import evaluate_selo, read_annotations
    from rs_vlm_app.geo.grid import SELO_GRID
    from rs_vlm_app.tasks.localize import check_output_dir

    read_annotations(args.data)
    check_output_dir(args.out)
    encoder = options.encoder_from_args(args, family="clip")
    report = evaluate_selo(args.data, encoder, args.out, compat=args.compat, grid=args.grid or SELO_GRID,
                           save_probmaps=args.save_probmaps, reporter=ConsoleReporter())
    print(f"{'sample':>6}  {'Rsu':>6} {'Ras':>6} {'Rda':>6} {'Rmi':>6}  caption")
    for row in report["per_sample"]:
        print(f"{row['index']:>6}  {row['Rsu']:6.4f} {row['Ras']:6.4f} {row['Rda']:6.4f} {row['Rmi']:6.4f}  {row['caption'][:60]}")
    m = report["mean"]
    print(f"{'mean':>6}  {m['Rsu']:6.4f} {m['Ras']:6.4f} {m['Rda']:6.4f} {m['Rmi']:6.4f}")
    print(f"written: {args.out / 'selo_metrics.json'}, {args.out / 'selo_metrics.csv'}")
    return 0
