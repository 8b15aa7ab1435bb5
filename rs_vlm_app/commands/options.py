"""Option groups every command shares (model choice, device and precision), and their parsing.

Standard library only at import time: building the parser must not import torch or open_clip.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rs_vlm_app.models.spec import ModelSpec


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


def model_spec_from_args(args: argparse.Namespace, prefix: str = "") -> ModelSpec | None:
    """The ModelSpec the model options (``--model``, ``--checkpoint``, ...; with ``prefix`` "clip_":
    ``--clip-model``, ``--clip-checkpoint``, ...) and the device options of ``args`` describe.

    The only converter from command-line options to a model description. With a ``prefix``, None
    when none of that group's options was given (an optional second model).
    """
    def value(name: str):
        return getattr(args, f"{prefix}{name}", None)

    described = {"name": value("model"), "checkpoint": value("checkpoint"), "arch": value("arch"),
                 "model_config": value("model_config")}
    if prefix and not any(described.values()):
        return None
    return ModelSpec(
        **described,
        quick_gelu=value("quick_gelu"),
        device=getattr(args, "device", None) or "auto",
        precision=getattr(args, "precision", None) or "auto",
        batch_size=getattr(args, "batch_size", None),
        allow_download=False if getattr(args, "offline", False) else None,
    )


def add_option(group, options_class, name: str, *flags: str, metavar: str | None = None, value_type=None):
    """Add the task option ``name`` declared by ``options_class`` (rs_vlm_app.tasks.options): its default,
    choices and help text come from there; ``flags`` default to ``--name-with-dashes`` (``--no-name``
    for an option that is on by default). Ranges are checked once, by the options dataclass."""
    from rs_vlm_app.tasks.options import declared

    info = declared(options_class)[name]
    default = info.default
    if isinstance(default, bool):
        flags = flags or (f"--{'no-' if default else ''}{name.replace('_', '-')}",)
        help_text = info.help if not default else f"do not {info.help[0].lower()}{info.help[1:]}"
        return group.add_argument(*flags, dest=name, action="store_false" if default else "store_true",
                                  default=default, help=help_text)
    flags = flags or (f"--{name.replace('_', '-')}",)
    kwargs: dict = {"dest": name, "default": default, "metavar": metavar}
    if info.choices is not None:
        kwargs["choices"] = info.choices
        kwargs.pop("metavar")
    kwargs["type"] = value_type or (type(default) if default is not None else str)
    shown = "" if default is None or "default" in info.help else f" (default: {default})"
    kwargs["help"] = (info.help + shown).replace("%", "%%")
    return group.add_argument(*flags, **kwargs)


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
