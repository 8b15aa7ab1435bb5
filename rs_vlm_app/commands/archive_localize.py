"""`rsvlm localize --archive ARCHIVE --queries FILE -o OUTDIR`: the localize command's archive mode."""

from __future__ import annotations

import argparse


def run_archive_localize(args: argparse.Namespace) -> int:
    from rs_vlm_app.commands.jobrun import model_spec_from_args, run_spec
    from rs_vlm_app.errors import UserError
    from rs_vlm_app.jobs.kinds.archive_localize import ArchiveLocalizeSpec

    queries = ([str(args.scene)] if args.scene is not None else []) + list(args.queries)
    if args.queries_file is not None:
        try:
            text = args.queries_file.read_text(encoding="utf-8")
        except OSError as exc:
            raise UserError(f"cannot read the queries ({exc.strerror or exc})", path=args.queries_file) from None
        queries += [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    if not queries:
        raise UserError("give queries: --queries FILE (one a line) or as arguments")
    spec = ArchiveLocalizeSpec(archive=args.archive, queries=queries, out=args.out, model=model_spec_from_args(args),
                               where=args.where, aoi=getattr(args, "aoi", None),
                               hotspot_threshold=args.hotspot_threshold, heatmap_pixel=args.heatmap_pixel,
                               cog=args.cog)
    outcome = run_spec(spec, args)
    if outcome.result is None or args.json:
        return outcome.exit_code
    s = outcome.result.summary
    print(f"{len(s['queries'])} quer{'y' if len(s['queries']) == 1 else 'ies'} on {len(s['scenes'])} scene(s): "
          f"{s['hotspots']} hot spot(s), ranked in {s['merged']}")
    for problem in s["problems"]:
        print(f"rsvlm: skipped: {problem}")
    return 1 if s["problems"] else 0
