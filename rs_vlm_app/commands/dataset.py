"""``rsvlm dataset build | status | export | merge``: the MpGI dataset builder (docs/dataset.md)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rs_vlm_app.commands.jobrun import add_json_option

BUILD_HELP = """\
Build (or resume) a captioned dataset as the config describes: sources -> rule facts -> MLLM relay
and perspective descriptions -> LLM integration into final captions -> quality checks.
Every model reply is committed to DIR/manifest.sqlite at once: stop the build at any moment and run
the same command again to resume. With --shard i/n, this machine builds only its share of the images
into DIR/manifest-shard-i-of-n.sqlite; `rsvlm dataset merge DIR` combines the shards.
"""


def register(tree) -> None:
    build = tree.command("dataset build", run_build, help="build or resume a captioned dataset (MpGI)",
                         description=BUILD_HELP)
    build.add_argument("config", type=Path, help="build configuration (YAML)")
    build.add_argument("--shard", metavar="I/N", help="build only shard I of N (1-based), e.g. 2/4")
    build.add_argument("--output", type=Path, metavar="DIR", help="dataset folder (overrides 'output' in the config)")
    build.add_argument("--engine", choices=("local", "ray"), default="local",
                       help="ray: the shards as Ray tasks (local instance or --ray-address), merged at the end")
    build.add_argument("--workers", type=int, metavar="N", help="ray: number of shards (default: the cluster's CPUs)")
    build.add_argument("--ray-address", metavar="ADDR", help="ray: join this cluster (HOST:PORT or ray://HOST:PORT)")
    add_json_option(build)

    status = tree.command("dataset status", run_status, help="what a dataset build has done, what failed and why")
    status.add_argument("dataset", type=Path, help="dataset folder (or a manifest file)")
    status.add_argument("--all", action="store_true", help="list every failure and input problem")
    status.add_argument("--json", action="store_true", help="print the status as JSON")

    export = tree.command("dataset export", run_export, help="export captions: open_clip CSV, WebDataset, JSONL")
    export.add_argument("dataset", type=Path, help="dataset folder (or a manifest file)")
    export.add_argument("--format", required=True, choices=("csv", "wds", "jsonl"), help="export format")
    export.add_argument("--output", type=Path, help="output file (csv, jsonl) or folder (wds); "
                        "default DATASET/export/captions.csv, captions.jsonl or wds/")
    export.add_argument("--exclude-flagged", action="store_true", help="leave out captions the quality checks flagged")
    export.add_argument("--relative-to", type=Path, metavar="DIR",
                        help="write image paths relative to DIR (default: absolute paths)")
    export.add_argument("--csv-separator", default=",", help="CSV field separator (default ','; open_clip's "
                        "--csv-separator must match)")
    export.add_argument("--samples-per-shard", type=int, default=1000, help="WebDataset samples per tar (1000)")
    export.add_argument("--wds-layout", choices=("per-caption", "per-image"), default="per-caption",
                        help="one sample per caption (open_clip ready, default) or per image with all captions")

    merge = tree.command("dataset merge", run_merge, help="merge the shard manifests of a --shard build")
    merge.add_argument("dataset", type=Path, help="dataset folder holding manifest-shard-*-of-N.sqlite")
    merge.add_argument("shards", type=Path, nargs="*", help="more shard manifest files (e.g. copied from elsewhere)")
    merge.add_argument("--allow-missing", action="store_true", help="merge although some shards are missing")
    merge.add_argument("--force", action="store_true", help="replace a manifest.sqlite that an unsharded build made")


def run_build(args: argparse.Namespace) -> int:
    from rs_vlm_app.commands.jobrun import run_spec
    from rs_vlm_app.jobs.kinds.dataset_build import DatasetBuildSpec

    outcome = run_spec(DatasetBuildSpec(config=args.config, out=args.output, shard=args.shard, engine=args.engine,
                                        workers=args.workers, ray_address=args.ray_address), args)
    if outcome.result is None or args.json:
        return outcome.exit_code
    s = outcome.result.summary
    failed = s["failed_units"]
    print(f"{s['output']}: {s['complete_images']}/{s['images']} images complete, {s['captions']} captions "
          f"({_verdicts(s['verdicts'])}); {failed} failed unit{'' if failed == 1 else 's'} this run")
    return 0 if s["status"] == "completed" else 1


def _verdicts(verdicts: dict[str, int]) -> str:
    return ", ".join(f"{verdicts.get(v, 0)} {v}" for v in ("keep", "flag", "drop")) or "none checked"


def run_status(args: argparse.Namespace) -> int:
    from rs_vlm_app.mpgi.status import dataset_status, format_status, status_json

    status = dataset_status(args.dataset, limit=None if args.all else 20)
    print(status_json(status) if args.json else format_status(status))
    return 0


def run_export(args: argparse.Namespace) -> int:
    from rs_vlm_app.commands.console import console_reporter
    from rs_vlm_app.errors import EXIT_CANCELLED, Cancelled
    from rs_vlm_app.mpgi.export import export_dataset

    separator = "\t" if args.csv_separator in ("\\t", "tab") else args.csv_separator
    try:
        with console_reporter("stopping the export") as reporter:  # Ctrl-C / SIGTERM: stop, write nothing
            summary = export_dataset(args.dataset, args.format, output=args.output,
                                     include_flagged=not args.exclude_flagged, relative_to=args.relative_to,
                                     csv_separator=separator, samples_per_shard=args.samples_per_shard,
                                     wds_layout=args.wds_layout, reporter=reporter)
    except Cancelled:
        print("rsvlm: cancelled; the export is not finished, run the same command again to write it", file=sys.stderr)
        return EXIT_CANCELLED
    extra = f" in {summary.files} shards" if args.format == "wds" else ""
    print(f"{summary.output}: {summary.captions} captions of {summary.images} images{extra}")
    return 0


def run_merge(args: argparse.Namespace) -> int:
    from rs_vlm_app.mpgi.merge import merge_shards

    summary = merge_shards(args.dataset, args.shards, allow_missing=args.allow_missing, force=args.force)
    print(f"{summary.output}: {summary.images} images, {summary.captions} captions from {len(summary.shards)} shards"
          f"; {summary.cross_shard_duplicates} duplicates across shards")
    return 0
