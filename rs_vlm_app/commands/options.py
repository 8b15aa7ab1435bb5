"""Option groups every command shares (model choice, device and precision), and their parsing.

Standard library only at import time: building the parser must not import torch or open_clip.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rs_vlm_app.models.factory import ModelRequest


def add_model_options(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """--model, --checkpoint, --arch, --model-config, --quick-gelu/--no-quick-gelu, --offline."""
    group = parser.add_argument_group(
        "model",
        "A catalogue model (--model NAME; `rsvlm models list`), or your own weights: --checkpoint FILE with "
        "--arch ARCH (an open_clip architecture) or --model-config CFG.json (any architecture). "
        "--model NAME --checkpoint FILE uses the catalogue model's architecture with your copy of its weights.",
    )
    group.add_argument("--model", metavar="NAME", help="catalogue model name (default: the catalogue's default)")
    group.add_argument("--checkpoint", metavar="FILE", type=Path,
                       help="weights file (.pt/.pth/.bin state_dict or training checkpoint, or .safetensors)")
    group.add_argument("--arch", metavar="ARCH", help="open_clip architecture of --checkpoint, e.g. ViT-B-32")
    group.add_argument("--model-config", metavar="CFG.json", type=Path,
                       help="open_clip model config JSON describing --checkpoint's architecture")
    group.add_argument("--quick-gelu", action=argparse.BooleanOptionalAction, default=None,
                       help="build with QuickGELU (weights fine-tuned from OpenAI CLIP need it); "
                            "default: the catalogue's flag, off for --checkpoint")
    group.add_argument("--offline", action="store_true",
                       help="never download; a model that is not in the cache is an error (also: RSVLM_OFFLINE=1)")
    return group


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def add_device_options(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """--device, --precision, --batch-size."""
    group = parser.add_argument_group("device")
    group.add_argument("--device", default="auto", metavar="auto|cpu|cuda|cuda:N|mps",
                       help="where the model runs (default: auto = cuda, else mps, else cpu)")
    group.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"),
                       help="auto: bf16 (or fp16) on CUDA, fp16 on MPS, fp32 on the CPU")
    group.add_argument("--batch-size", type=_positive_int, default=None, metavar="N",
                       help="images per batch (default: chosen for the device and image size)")
    return group


def model_request_from_args(args: argparse.Namespace) -> ModelRequest:
    """The ModelRequest the model options of ``args`` describe (validate it with factory.check_request)."""
    return ModelRequest(
        name=getattr(args, "model", None) or None,
        checkpoint=getattr(args, "checkpoint", None),
        arch=getattr(args, "arch", None) or None,
        model_config=getattr(args, "model_config", None),
        quick_gelu=getattr(args, "quick_gelu", None),
        allow_download=False if getattr(args, "offline", False) else None,
    )


def grid_spec(text: str):
    """argparse type: a tile grid (``selo``, ``256``, ``256,512@0.25``) as a GridSpec; one-line errors."""
    from rs_vlm_app.errors import UserError
    from rs_vlm_app.geo.grid import GridSpec

    try:
        return GridSpec.parse(text)
    except UserError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def band_list(text: str) -> tuple[int, ...]:
    """argparse type: one or three 1-based band numbers ("4,3,2")."""
    try:
        bands = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected band numbers such as 4,3,2, not {text!r}") from None
    if len(bands) not in (1, 3) or min(bands) < 1:
        raise argparse.ArgumentTypeError(f"give one or three band numbers counted from 1, not {text!r}")
    return bands


def add_raster_options(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """--grid (default: the SeLo grid), --bands."""
    group = parser.add_argument_group("raster")
    group.add_argument("--grid", type=grid_spec, default=None, metavar="GRID",
                       help="tile windows: 'selo' (default: 256/512/768 with half-shifted grids), '256', "
                            "'256,512' (several scales), '256,512@0.25' (25%% overlap)")
    group.add_argument("--bands", type=band_list, default=None, metavar="R,G,B",
                       help="bands shown as red, green, blue, counted from 1 (default: the raster's RGB bands)")
    return group
