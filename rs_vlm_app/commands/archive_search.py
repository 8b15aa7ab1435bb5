"""`rsvlm search --archive ARCHIVE "query"`: the search command's archive mode (kept apart from the
scene mode so each stays small)."""

from __future__ import annotations

import argparse


def run_archive_search(args: argparse.Namespace) -> int:
    from rs_vlm_app.commands.jobrun import model_spec_from_args, run_spec
    from rs_vlm_app.commands.search import print_hits
    from rs_vlm_app.errors import UserError
    from rs_vlm_app.jobs.kinds.archive_search import ArchiveSearchSpec

    if len(args.inputs) != 1:
        raise UserError("with --archive give only the query, e.g. rsvlm search --archive A \"a marina\" -o hits.gpkg")
    spec = ArchiveSearchSpec(archive=args.archive, query=args.inputs[0], out=args.out,
                             model=model_spec_from_args(args), top_k=args.top_k, where=args.where,
                             aoi=getattr(args, "aoi", None), exact=args.exact, contact_sheet=args.contact_sheet,
                             columns=args.columns)
    outcome = run_spec(spec, args)
    if outcome.result is None or args.json:
        return outcome.exit_code
    s = outcome.result.summary
    print(f"{s['query']!r}: {len(s['hits'])} best tiles of {s['scenes_searched']} scene(s), {s['tiles_searched']} "
          f"tiles ({s['mode']}) -> {s['out']}" + (f", {s['sheet']}" if s["sheet"] else ""))
    print_hits(s["hits"], lambda hit: hit["scene"])
    return 0
