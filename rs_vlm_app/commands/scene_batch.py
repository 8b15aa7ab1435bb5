"""`rsvlm caption|classify --scenes LIST [--engine ray]`: the per-scene commands over many scenes.

-o is then a folder: one output per scene (what the single-scene command writes) and one layer
merging every scene in EPSG:4326 (rs_vlm_app/archive/batch.py).
"""

from __future__ import annotations

import argparse


def add_batch_options(parser: argparse.ArgumentParser) -> None:
    """--scenes, --asset, --engine, --workers, --ray-address."""
    group = parser.add_argument_group("many scenes (docs/archive.md)")
    group.add_argument("--scenes", dest="scene_lists", action="append", default=[], metavar="FILE|GLOB|STAC.json",
                       help="run on many scenes: a text file of paths/URLs, a glob or STAC JSON (repeatable); "
                            "-o is then an output folder")
    group.add_argument("--asset", metavar="NAME", help="STAC asset to read (default: visual, rgb, image, data)")
    group.add_argument("--engine", choices=("local", "ray"), default="local",
                       help="with --scenes: local (default) or ray (a local Ray instance or --ray-address)")
    group.add_argument("--workers", type=int, default=None, metavar="N", help="ray: model-holding workers")
    group.add_argument("--ray-address", metavar="ADDR", help="ray: join this cluster (HOST:PORT)")


def is_batch(args: argparse.Namespace) -> bool:
    from rs_vlm_app.errors import UserError

    batch = bool(args.scene_lists)
    if not batch and (args.engine != "local" or args.workers or args.ray_address):
        raise UserError("--engine, --workers and --ray-address work with --scenes (many scenes)")
    if not batch and args.scene is None:
        raise UserError("give a scene (a raster file), or --scenes LIST for many")
    return batch


def run_batch_command(spec, args: argparse.Namespace, job: str) -> int:
    """Run ``spec`` (a per-scene spec without its scene) over the scenes of ``args``."""
    from rs_vlm_app.commands.jobrun import run_spec
    from rs_vlm_app.jobs.kinds.scene_batch import SceneBatchSpec

    template = {k: v for k, v in spec.to_dict().items() if k not in ("kind", "scene", "out")}
    batch = SceneBatchSpec(job=job, template=template, out=args.out,
                           scenes=[str(args.scene)] if args.scene is not None else [],
                           scene_lists=list(args.scene_lists), asset=args.asset, engine=args.engine,
                           workers=args.workers, ray_address=args.ray_address)
    outcome = run_spec(batch, args)
    if outcome.result is None:
        return outcome.exit_code
    s = outcome.result.summary
    if not args.json:
        print(f"{job}: {len(s['scenes'])} scene(s) -> {s['out']}; all scenes in {s['merged']}")
        for failure in s["failures"]:
            print(f"rsvlm: failed: {failure['message']}")
    return 1 if s["failures"] else 0
