"""Options of the caption, classify and search commands beyond the shared model/device groups:
the tile grid, band choice and a second (CLIP) model for `rsvlm caption`.

Standard library only at import time.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rs_vlm_app.commands import options


def add_tile_options(parser: argparse.ArgumentParser, options_class=None, *,
                     default_grid: str | None = None) -> argparse._ArgumentGroup:
    """--grid, --bands, --min-valid as the task's options dataclass declares them (default:
    rs_vlm_app.tasks.options.SearchOptions'); ``default_grid`` overrides the declared grid. The grid
    text is parsed once, by the options dataclass."""
    from rs_vlm_app.tasks.options import SearchOptions

    options_class = options_class or SearchOptions
    group = parser.add_argument_group("tiles")
    options.add_option(group, options_class, "grid", metavar="GRID")
    if default_grid is not None:
        group.set_defaults(grid=default_grid)
    options.add_option(group, options_class, "bands", metavar="R,G,B", value_type=options.band_list)
    options.add_option(group, options_class, "min_valid", metavar="FRACTION")
    return group


def add_aoi_option(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """--aoi FILE[:LAYER]: only tiles overlapping these polygons (any OGR vector, any CRS)."""
    parser.add_argument("--aoi", metavar="FILE[:LAYER]", default=None,
                        help="area of interest: a polygon layer (GeoPackage, Shapefile, GeoJSON, ...; any CRS). "
                             "Only tiles overlapping it are read and encoded; raster outputs are nodata outside it")


def add_clip_model_options(parser: argparse.ArgumentParser, purpose: str) -> argparse._ArgumentGroup:
    """--clip-model, --clip-checkpoint, --clip-arch, --clip-model-config, --clip-quick-gelu (read them
    with rs_vlm_app.commands.options.model_spec_from_args(args, prefix="clip_"))."""
    group = parser.add_argument_group("CLIP model", purpose)
    group.add_argument("--clip-model", metavar="NAME", help="catalogue CLIP model name")
    group.add_argument("--clip-checkpoint", metavar="FILE", type=Path, help="CLIP weights file")
    group.add_argument("--clip-arch", metavar="ARCH", help="open_clip architecture of --clip-checkpoint")
    group.add_argument("--clip-model-config", metavar="CFG.json", type=Path,
                       help="open_clip model config JSON of --clip-checkpoint")
    group.add_argument("--clip-quick-gelu", action=argparse.BooleanOptionalAction, default=None,
                       help="build the CLIP with QuickGELU (default: the catalogue's flag, off for a checkpoint)")
    return group


