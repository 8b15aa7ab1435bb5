"""`rsvlm classify SCENE --classes aid|resisc45|eurosat|FILE.txt -o OUTDIR`: zero-shot class maps."""

from __future__ import annotations

import argparse
from pathlib import Path

from rs_vlm_app.commands import options
from rs_vlm_app.commands.jobrun import add_json_option
from rs_vlm_app.commands.scene_batch import add_batch_options, is_batch, run_batch_command
from rs_vlm_app.commands.task_args import add_aoi_option, add_tile_options
from rs_vlm_app.tasks.options import ClassifyOptions

EPILOG = """\
class lists: aid (30 classes), resisc45 (45), eurosat (10), or a text file with one class per line
("LABEL" or "LABEL = prompt words"; lines starting with # are comments).

outputs in OUTDIR:
  classes.tif        class index per pixel (uint8, nodata 255) with a colour table; class names in
                     its metadata, its category names (classes.tif.aux.xml) and classes.qml (QGIS legend)
  probabilities.tif  one float32 band per class: mean over the covering tiles of each tile's class
                     probability (softmax of the model's logit scale x cosine); nodata -9999
  tiles.gpkg         layer "tiles": every tile's window with its top-k classes and probabilities
  classify.json      classes, templates, model, area share of each class

examples:
  rsvlm classify scene.tif --classes resisc45 -o out/
  rsvlm classify scene.tif --classes my_classes.txt --grid 224,448@0.5 -o out/ --model remoteclip-vit-b-32
"""


def register(tree) -> None:
    parser = tree.command("classify", run, help="zero-shot scene classes for every tile and pixel of a raster")
    parser.epilog = EPILOG
    parser.add_argument("scene", type=Path, nargs="?",
                        help="raster file (GeoTIFF, COG, VRT, JPEG2000, PNG, JPEG ...); or --scenes for many")
    parser.add_argument("--classes", required=True, metavar="aid|resisc45|eurosat|FILE.txt",
                        help="a built-in class list or a class file")
    parser.add_argument("-o", "--out", type=Path, required=True, metavar="OUTDIR", help="output folder")
    for name, metavar in (("templates", "FILE.txt"), ("top_k", "K"), ("pixel", "N"), ("probabilities", None),
                          ("cog", None)):
        options.add_option(parser, ClassifyOptions, name, metavar=metavar,
                           value_type=float if name == "pixel" else None)
    options.add_model_options(parser)
    options.add_device_options(parser)
    add_aoi_option(add_tile_options(parser, ClassifyOptions))
    add_batch_options(parser)
    add_json_option(parser)


def run(args: argparse.Namespace) -> int:
    from rs_vlm_app.commands.jobrun import model_spec_from_args, run_spec
    from rs_vlm_app.jobs.kinds.classify import ClassifySpec

    spec = ClassifySpec(
        scene=args.scene, classes=args.classes, out=args.out, model=model_spec_from_args(args),
        templates=args.templates, grid=args.grid, bands=list(args.bands) if args.bands else None,
        min_valid=args.min_valid, top_k=args.top_k, pixel=args.pixel, probabilities=args.probabilities,
        cog=args.cog, aoi=args.aoi)
    if is_batch(args):
        return run_batch_command(spec, args, "classify")
    outcome = run_spec(spec, args)
    if outcome.result is None or args.json:
        return outcome.exit_code
    s = outcome.result.summary
    names = ", ".join(Path(f.path).name for f in outcome.result.files)
    print(f"{s['tiles']} tiles, {len(s['classes'])} classes ({s['class_source']}) -> {names} in {s['out']}")
    shares = sorted(s["area_share"].items(), key=lambda item: -item[1])
    print("share of the classified area:")
    for label, share in shares[:10]:
        if share > 0:
            print(f"  {100 * share:5.1f}%  {label}")
    return 0
