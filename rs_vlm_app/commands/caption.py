"""`rsvlm caption SCENE -o OUT.gpkg`: a caption for every tile of a raster, as a GeoPackage layer."""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

from rs_vlm_app.commands import options
from rs_vlm_app.commands.task_args import (
    add_clip_model_options,
    add_tile_options,
    check_model_requests,
    clip_request_from_args,
    load_captioner,
    load_clip_encoder,
)

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


def run(args: argparse.Namespace) -> int:
    from rs_vlm_app.commands.console import ConsoleReporter
    from rs_vlm_app.geo.raster import open_raster
    from rs_vlm_app.tasks.captioning import CaptionOptions, caption_scene, check_output_file

    caption_options = CaptionOptions(
        grid=args.grid, decoding=args.decoding, beams=args.beams, max_len=args.max_len, min_len=args.min_len,
        length_penalty=args.length_penalty, bands=args.bands, min_valid=args.min_valid)
    check_model_requests(args, family="coca", clip=True)
    with open_raster(args.scene, bands=args.bands):
        pass  # a bad raster or band list fails here, before the models load
    check_output_file(args.out)
    captioner = load_captioner(args)
    clip_request = clip_request_from_args(args)
    clip = load_clip_encoder(args, clip_request) if clip_request is not None else None
    result = caption_scene(args.scene, args.out, captioner, caption_options, clip=clip, reporter=ConsoleReporter())
    kept = result.tiles - result.decoded_now
    print(f"{result.tiles} tiles captioned ({result.decoded_now} now, {kept} from the checkpoint; "
          f"{result.skipped} skipped as nodata) -> {result.out} (layer captions, "
          f"{'CRS ' + result.crs if result.crs else 'pixel coordinates'})")
    _print_common(result.out)
    return 0


def _print_common(path: Path, n: int = 5) -> None:
    from pyogrio.raw import read

    _meta, _fids, _geometry, fields = read(path, columns=["caption"], read_geometry=False)
    common = Counter(fields[0]).most_common(n)
    if common:
        print("most common captions:")
        for text, count in common:
            print(f"  {count:6d}  {text}")
