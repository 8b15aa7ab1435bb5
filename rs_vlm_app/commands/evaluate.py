"""`rsvlm eval selo`: the semantic-localization benchmark (AIR-SLT layout)."""

from __future__ import annotations

import argparse
from pathlib import Path

from rs_vlm_app.commands import options
from rs_vlm_app.commands.jobrun import add_json_option


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
    add_json_option(parser)


def run_selo(args: argparse.Namespace) -> int:
    from rs_vlm_app.commands.jobrun import model_spec_from_args, run_spec
    from rs_vlm_app.jobs.kinds.selo_eval import SeloEvalSpec

    spec = SeloEvalSpec(data=args.data, out=args.out, model=model_spec_from_args(args), compat=args.compat,
                        grid=args.grid.key() if args.grid is not None else None,
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
