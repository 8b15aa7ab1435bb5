"""Options of the caption, classify and search commands beyond the shared model/device groups:
the tile grid, band choice and a second (CLIP) model for `rsvlm caption`.

Standard library only at import time.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rs_vlm_app.commands import options


def _grid_text(text: str) -> str:
    """argparse type: validate a grid now (one-line error), keep its text."""
    return options.grid_spec(text).key()


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, not {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, not {value}")
    return value


def add_tile_options(parser: argparse.ArgumentParser, default_grid: str) -> argparse._ArgumentGroup:
    """--grid, --bands, --min-valid."""
    group = parser.add_argument_group("tiles")
    group.add_argument("--grid", type=_grid_text, default=default_grid, metavar="GRID",
                       help=f"tile windows: '256' (side in pixels), '256,512' (several scales), '256@0.5' "
                            f"(50%% overlap), 'selo' (the SeLo grid) (default: {default_grid})")
    group.add_argument("--bands", type=options.band_list, default=None, metavar="R,G,B",
                       help="bands shown as red, green, blue, counted from 1 (default: the raster's RGB bands)")
    group.add_argument("--min-valid", type=_fraction, default=0.5, metavar="FRACTION",
                       help="skip tiles with less valid (non-nodata) area than this (default 0.5)")
    return group


def add_clip_model_options(parser: argparse.ArgumentParser, purpose: str) -> argparse._ArgumentGroup:
    """--clip-model, --clip-checkpoint, --clip-arch, --clip-model-config, --clip-quick-gelu."""
    group = parser.add_argument_group("CLIP model", purpose)
    group.add_argument("--clip-model", metavar="NAME", help="catalogue CLIP model name")
    group.add_argument("--clip-checkpoint", metavar="FILE", type=Path, help="CLIP weights file")
    group.add_argument("--clip-arch", metavar="ARCH", help="open_clip architecture of --clip-checkpoint")
    group.add_argument("--clip-model-config", metavar="CFG.json", type=Path,
                       help="open_clip model config JSON of --clip-checkpoint")
    group.add_argument("--clip-quick-gelu", action=argparse.BooleanOptionalAction, default=None,
                       help="build the CLIP with QuickGELU (default: the catalogue's flag, off for a checkpoint)")
    return group


def clip_request_from_args(args: argparse.Namespace):
    """The ModelRequest of the --clip-* options, or None when none was given."""
    from rs_vlm_app.models.factory import ModelRequest

    if not any(getattr(args, name, None) for name in ("clip_model", "clip_checkpoint", "clip_arch",
                                                      "clip_model_config")):
        return None
    return ModelRequest(
        name=args.clip_model or None, checkpoint=args.clip_checkpoint, arch=args.clip_arch or None,
        model_config=args.clip_model_config, quick_gelu=args.clip_quick_gelu,
        allow_download=False if getattr(args, "offline", False) else None,
    )
