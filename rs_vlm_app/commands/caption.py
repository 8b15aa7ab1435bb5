"""`rsvlm caption SCENE -o OUT.gpkg`: a caption for every tile of a raster, as a GeoPackage layer."""

from __future__ import annotations

import argparse
from pathlib import Path

from rs_vlm_app.commands import options
from rs_vlm_app.commands.jobrun import add_json_option
from rs_vlm_app.commands.task_args import add_clip_model_options, add_tile_options, clip_request_from_args

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
    parser.add_argument("scene", type=Path, help="raster file (GeoTIFF, COG, VRT, JPEG2000, PNG, JPEG ...)")
    parser.add_argument("-o", "--out", type=Path, required=True, metavar="OUT.gpkg", help="output GeoPackage")
    options.add_model_options(parser).description = (
        "The CoCa caption model: --model NAME (`rsvlm models list`; default: the catalogue's default "
        "captioner), or --checkpoint FILE with --arch ARCH / --model-config CFG.json.")
    add_clip_model_options(parser, "Optional: also score each caption against its tile with this CLIP model.")
    options.add_device_options(parser)
    add_tile_options(parser, default_grid="256")
    group = parser.add_argument_group("decoding")
    group.add_argument("--decoding", choices=("greedy", "beam"), default="beam",
                       help="greedy: fastest; beam: keeps the N best partial captions (default: beam)")
    group.add_argument("--beams", type=int, default=3, metavar="N", help="beams for --decoding beam (default 3)")
    group.add_argument("--max-len", type=int, default=30, metavar="L", help="most tokens per caption (default 30)")
    group.add_argument("--min-len", type=int, default=1, metavar="L", help="fewest tokens per caption (default 1)")
    group.add_argument("--length-penalty", type=float, default=1.0, metavar="A",
                       help="beam ranking: log-probability / length**A (default 1: mean per token)")
    add_json_option(parser)


def run(args: argparse.Namespace) -> int:
    from rs_vlm_app.commands.jobrun import model_spec_from_args, run_spec
    from rs_vlm_app.jobs.kinds.caption import CaptionSpec

    spec = CaptionSpec(
        scene=args.scene, out=args.out, model=model_spec_from_args(args), clip_model=clip_spec_from_args(args),
        grid=args.grid, bands=list(args.bands) if args.bands else None, min_valid=args.min_valid,
        decoding=args.decoding, beams=args.beams, max_len=args.max_len, min_len=args.min_len,
        length_penalty=args.length_penalty)
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


def clip_spec_from_args(args: argparse.Namespace):
    """The ModelSpec of the --clip-* options (with the device options), or None when none was given."""
    from rs_vlm_app.jobs.specs import ModelSpec

    request = clip_request_from_args(args)
    if request is None:
        return None
    return ModelSpec(name=request.name, checkpoint=request.checkpoint, arch=request.arch,
                     model_config=request.model_config, quick_gelu=request.quick_gelu, device=args.device or "auto",
                     precision=args.precision or "auto", batch_size=args.batch_size,
                     allow_download=request.allow_download)
