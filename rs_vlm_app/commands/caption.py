"""`rsvlm caption SCENE -o OUT.gpkg`: a caption for every tile of a raster, as a GeoPackage layer."""

from __future__ import annotations

import argparse
from pathlib import Path

from rs_vlm_app.commands import options
from rs_vlm_app.commands.jobrun import add_json_option
from rs_vlm_app.commands.scene_batch import add_batch_options, is_batch, run_batch_command
from rs_vlm_app.commands.task_args import (
    add_aoi_option,
    add_clip_model_options,
    add_tile_options,
)
from rs_vlm_app.tasks.options import CaptionOptions

EPILOG = """\
output: OUT.gpkg, layer "captions", one polygon per tile in the scene's CRS (pixel coordinates for a
raster without georeferencing) with caption, scale, row0, row1, col0, col1 (the pixel window),
mean_logprob (the decoder's mean log-probability per token), tokens, complete (false: cut at
--max-len) and, with a CLIP model, clip_score (cosine between the tile and its caption).

Finished captions are checkpointed in the rs-vlm cache: a run that is killed or interrupted continues
where it stopped when started again with the same arguments (each tile is captioned once).

examples:
  rsvlm caption scene.tif -o captions.gpkg --model rs-coca
  rsvlm caption scene.tif -o captions.gpkg --grid 224,448 --decoding greedy
  rsvlm caption scene.tif -o captions.gpkg --checkpoint RS-CoCa.pt --arch coca_ViT-L-14 --clip-model hqrs-clip
"""


def register(tree) -> None:
    parser = tree.command("caption", run, help="caption every tile of a raster with a CoCa model (GeoPackage)")
    parser.epilog = EPILOG
    parser.add_argument("scene", type=Path, nargs="?",
                        help="raster file (GeoTIFF, COG, VRT, JPEG2000, PNG, JPEG ...); or --scenes for many")
    parser.add_argument("-o", "--out", type=Path, required=True, metavar="OUT.gpkg",
                        help="output vector file: .gpkg (GeoPackage), .parquet (GeoParquet) or .geojson")
    options.add_model_options(parser).description = (
        "The CoCa caption model: --model NAME (`rsvlm models list`; default: the catalogue's default "
        "captioner), or --checkpoint FILE with --arch ARCH / --model-config CFG.json.")
    add_clip_model_options(parser, "Optional: also score each caption against its tile with this CLIP model.")
    options.add_device_options(parser)
    add_aoi_option(add_tile_options(parser, CaptionOptions))
    group = parser.add_argument_group("decoding")
    for name, metavar in (("decoding", None), ("beams", "N"), ("max_len", "L"), ("min_len", "L"),
                          ("length_penalty", "A")):
        options.add_option(group, CaptionOptions, name, metavar=metavar)
    add_batch_options(parser)
    add_json_option(parser)


def run(args: argparse.Namespace) -> int:
    from rs_vlm_app.commands.jobrun import model_spec_from_args, run_spec
    from rs_vlm_app.jobs.kinds.caption import CaptionSpec

    spec = CaptionSpec(
        scene=args.scene, out=args.out, model=model_spec_from_args(args), clip_model=options.model_spec_from_args(args, prefix="clip_"),
        grid=args.grid, bands=list(args.bands) if args.bands else None, min_valid=args.min_valid,
        decoding=args.decoding, beams=args.beams, max_len=args.max_len, min_len=args.min_len,
        length_penalty=args.length_penalty, aoi=args.aoi)
    if is_batch(args):
        return run_batch_command(spec, args, "caption")
    outcome = run_spec(spec, args)
    if outcome.result is None or args.json:
        return outcome.exit_code
    s = outcome.result.summary
    kept = s["tiles"] - s["decoded_now"]
    print(f"{s['tiles']} tiles captioned ({s['decoded_now']} now, {kept} from the checkpoint; "
          f"{s['skipped']} skipped as nodata) -> {s['out']} (layer captions, "
          f"{'CRS ' + s['crs'] if s['crs'] else 'pixel coordinates'})")
    if s["common_captions"]:
        print("most common captions:")
        for text, count in s["common_captions"]:
            print(f"  {count:6d}  {text}")
    return 0


