"""`rsvlm gui [SCENE] [LAYER ...]`: the desktop app."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(tree) -> None:
    parser = tree.command(
        "gui", run, help="the desktop app: open a scene and ask it questions",
        description="Open the desktop app (needs the gui extra: pip install 'rs-vlm[gui]'). Rasters open as the "
                    "scene; GeoPackages and heat maps given after it open as layers. See docs/gui.md.",
    )
    parser.add_argument("paths", nargs="*", type=Path, metavar="FILE", help="a scene raster, then layers")
    parser.add_argument("--settings", type=Path, metavar="FILE.ini",
                        help="keep settings (model, recent files, results folder) in this file")


def run(args: argparse.Namespace) -> int:
    from rs_vlm_app.errors import UserError

    try:
        from rs_vlm_app.gui.app import run as run_app
    except ImportError as exc:
        if "PyQt6" not in str(exc):
            raise
        raise UserError(f"the desktop app needs PyQt6, which is not installed here ({exc}); "
                        "install it with: pip install 'rs-vlm[gui]'") from None
    return run_app(args.paths, args.settings)
