"""`rsvlm demo -o OUTDIR`: the whole mission offline on a synthetic world, with a report."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

EPILOG = """\
what it does (no internet, no GPU needed; a few minutes on two CPU cores):
  1. generates a georeferenced synthetic world with known lakes, fields, roads and buildings
  2. cuts training tiles from a second world and captions them with the dataset builder's rule stage
  3. trains a small CLIP on them from random weights
  4. localizes "a lake", "fields", "a road", "buildings" on the evaluation scene (heat maps, hot spots)
  5. classifies the scene's tiles
  6. scores SeLo (Rsu, Ras, Rda, Rmi) against the known objects, trained vs untrained
  7. writes OUTDIR/report.html and OUTDIR/demo.json

Running the same command again reuses finished stages; --fresh starts over. See docs/demo.md.
"""


def register(tree) -> None:
    parser = tree.command("demo", run, help="run the whole mission offline on a synthetic world and report")
    parser.epilog = EPILOG
    parser.add_argument("-o", "--out", type=Path, required=True, metavar="OUTDIR",
                        help="folder for everything the demo writes (new, empty, or an earlier demo's)")
    parser.add_argument("--quick", action="store_true",
                        help="a smaller world and a shorter training (about a third of the time)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the worlds and the training (default 0)")
    parser.add_argument("--fresh", action="store_true", help="start over in OUTDIR, discarding an earlier demo there")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                        help="where the model trains and runs (default: a GPU when there is one)")


def run(args: argparse.Namespace) -> int:
    # Busy-waiting OpenMP threads make torch many times slower on a shared, loaded CPU; set before torch loads.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from rs_vlm_app.commands.console import console_reporter
    from rs_vlm_app.demo.pipeline import DemoSettings, run_demo

    settings = DemoSettings.quick(args.seed) if args.quick else DemoSettings.full(args.seed)
    with console_reporter("stopping at the next step; run the demo again to continue") as reporter:
        result = run_demo(args.out, settings, fresh=args.fresh, device=args.device, reporter=reporter)
    print(summary_text(result))
    return 0


def summary_text(result) -> str:
    """The console's closing lines: SeLo per query for both models, and where the report is."""
    metrics = result.metrics
    selo = metrics["selo"]
    lines = [f"{'query':<12} {'Rmi trained':>12} {'Rmi untrained':>14}"]
    for query, values in selo["trained"]["per_query"].items():
        lines.append(f"{query:<12} {values['Rmi']:>12.3f} {selo['untrained']['per_query'][query]['Rmi']:>14.3f}")
    lines.append(f"{'mean':<12} {selo['trained']['mean']['Rmi']:>12.3f} {selo['untrained']['mean']['Rmi']:>14.3f}")
    accuracy = metrics["classification"]
    lines.append(f"class map pixel accuracy: trained {accuracy['trained']['accuracy']:.3f}, "
                 f"untrained {accuracy['untrained']['accuracy']:.3f}")
    lines.append(f"total {metrics['total_seconds']:.0f} s; report: {result.report}")
    return "\n".join(lines)
