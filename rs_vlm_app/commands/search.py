"""`rsvlm search SCENE [SCENE ...] "query" -k 20 -o OUT.gpkg`: the tiles of many scenes that best
match a text, as footprints and a contact sheet."""

from __future__ import annotations

import argparse
from pathlib import Path

from rs_vlm_app.commands import options
from rs_vlm_app.commands.jobrun import add_json_option
from rs_vlm_app.commands.task_args import add_aoi_option, add_tile_options
from rs_vlm_app.tasks.options import SearchOptions

EPILOG = """\
The last positional argument is the query; the ones before it are the scenes. Each scene is encoded
once into the embedding cache (shared with localize and classify); later searches only encode the
query.

outputs:
  OUT.gpkg  layer "results": the k best tiles' footprints with rank, score (cosine), scene,
            scene_name, row0, row1, col0, col1, scale, query. All footprints are in one CRS: the
            first scene's (default) or --crs; footprints of scenes in other CRSs are reprojected.
  OUT.png   contact sheet of those tiles with rank and score (unless --no-sheet)

examples:
  rsvlm search a.tif b.tif c.tif "a marina with many boats" -k 20 -o marinas.gpkg
  rsvlm search tiles/*.tif "solar panels on a roof" --crs EPSG:4326 -o solar.gpkg
"""


def register(tree) -> None:
    parser = tree.command("search", run, help="rank the tiles of many scenes by similarity to a text query")
    parser.epilog = EPILOG
    parser.add_argument("inputs", nargs="+", metavar="SCENE ... QUERY",
                        help="one or more raster files, then the text query")
    parser.add_argument("-o", "--out", type=Path, required=True, metavar="OUT.gpkg",
                        help="output vector file: .gpkg (GeoPackage), .parquet (GeoParquet) or .geojson")
    options.add_option(parser, SearchOptions, "top_k", "-k", "--top-k", metavar="K")
    options.add_option(parser, SearchOptions, "crs", metavar="CRS")
    options.add_option(parser, SearchOptions, "contact_sheet", "--no-sheet")
    options.add_option(parser, SearchOptions, "columns", metavar="N")
    archive = parser.add_argument_group("archive (rsvlm index; docs/archive.md)")
    archive.add_argument("--archive", type=Path, metavar="ARCHIVE",
                         help="search every tile of an archive instead of scenes: the only positional is the query; "
                              "footprints in EPSG:4326")
    archive.add_argument("--where", metavar="CONDITIONS",
                         help="archive: e.g. \"date >= 2020-01-01 and scale = 256\" (fields: date, scene, scale)")
    archive.add_argument("--exact", action="store_true", help="archive: exact search even where an ANN index exists")
    options.add_model_options(parser)
    options.add_device_options(parser)
    add_aoi_option(add_tile_options(parser, SearchOptions))
    add_json_option(parser)


def split_inputs(inputs: list[str]) -> tuple[list[Path], str]:
    """SCENE ... QUERY -> (scenes, query), with one-line errors for the usual slips."""
    from rs_vlm_app.errors import UserError

    if len(inputs) < 2:
        raise UserError("give one or more scenes and then the query, e.g. rsvlm search a.tif b.tif \"a lake\"")
    *scenes, query = inputs
    if Path(query).is_file():
        raise UserError(f"the last argument {query!r} is a file; put the text query last")
    missing = [s for s in scenes if not Path(s).exists()]
    if missing:
        raise UserError("file not found (the query goes last)", path=missing[0])
    return [Path(s) for s in scenes], query


def run(args: argparse.Namespace) -> int:
    from rs_vlm_app.commands.jobrun import model_spec_from_args, run_spec
    from rs_vlm_app.jobs.kinds.search import SearchSpec

    if args.archive is not None:
        from rs_vlm_app.commands.archive_search import run_archive_search

        return run_archive_search(args)
    scenes, query = split_inputs(args.inputs)
    spec = SearchSpec(
        scenes=scenes, query=query, out=args.out, model=model_spec_from_args(args), top_k=args.top_k,
        grid=args.grid, bands=list(args.bands) if args.bands else None, min_valid=args.min_valid, crs=args.crs,
        contact_sheet=args.contact_sheet, columns=args.columns, aoi=args.aoi)
    outcome = run_spec(spec, args)
    if outcome.result is None or args.json:
        return outcome.exit_code
    s = outcome.result.summary
    print(f"{s['query']!r}: {len(s['hits'])} best tiles of {len(scenes)} scene(s) ({s['encoded_now']} encoded now, "
          f"the rest from the cache) -> {s['out']}" + (f", {s['sheet']}" if s["sheet"] else ""))
    print(f"footprints in {s['crs_note']}")
    print_hits(s["hits"], lambda hit: scenes[hit["scene"]].name)
    return 0


def print_hits(hits: list[dict], scene_name, shown: int = 10) -> None:
    """The first ``shown`` ranked tiles, one line each (rank, score, scene, pixel window)."""
    for hit in hits[:shown]:
        r0, r1, c0, c1, _ = hit["window"]
        print(f"  #{hit['rank']:<3d} {hit['score']:.4f}  {scene_name(hit)}  rows {r0}-{r1}, columns {c0}-{c1}")
