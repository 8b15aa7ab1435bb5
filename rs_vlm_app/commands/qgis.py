"""`rsvlm qgis install | uninstall | package`: put the QGIS plugin where QGIS finds it."""

from __future__ import annotations

import argparse
from pathlib import Path

INSTALL_EPILOG = """\
The plugin is copied into <profiles>/<NAME>/python/plugins/rsvlm_qgis and enabled (an earlier
release's plugin folder rs_vlm there is removed); this Python
(the one running rsvlm) is recorded in <profiles>/<NAME>/rs_vlm/app.json, and the plugin's worker
runs with it. <profiles> is ~/.local/share/QGIS/QGIS3/profiles on Linux,
~/Library/Application Support/QGIS/QGIS3/profiles on macOS and %APPDATA%\\QGIS\\QGIS3\\profiles on
Windows. Restart QGIS afterwards.

examples:
  rsvlm qgis install
  rsvlm qgis install --profile analysis
  rsvlm qgis install --link          # developers: QGIS runs the checkout's plugin_qgis/ directly
"""


def register(tree) -> None:
    parser = tree.command("qgis install", run_install, help="install the QGIS plugin into a QGIS profile")
    parser.epilog = INSTALL_EPILOG
    _profile_options(parser)
    parser.add_argument("--link", action="store_true",
                        help="link to this checkout's plugin_qgis/ instead of copying (for development)")
    parser.add_argument("--no-enable", dest="enable", action="store_false",
                        help="do not switch the plugin on in the profile's settings")

    parser = tree.command("qgis uninstall", run_uninstall, help="remove the QGIS plugin from a QGIS profile")
    _profile_options(parser)

    parser = tree.command("qgis package", run_package,
                          help="build the plugin zip (Plugins > Manage and Install Plugins > Install from ZIP)")
    parser.add_argument("-o", "--out", type=Path, default=Path("rsvlm_qgis.zip"), metavar="ZIP",
                        help="the zip to write (default: rsvlm_qgis.zip)")


def _profile_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", default="default", metavar="NAME", help="QGIS user profile (default: default)")
    parser.add_argument("--profiles-dir", type=Path, metavar="DIR",
                        help="QGIS's folder of profiles, if not the standard one (e.g. QGIS started with --profiles-path)")


def run_install(args: argparse.Namespace) -> int:
    from rs_vlm_app.qgis_plugin import install

    done = install(args.profile, args.profiles_dir, link=args.link, enable=args.enable)
    how = "linked" if done.linked else "installed"
    print(f"rs-vlm QGIS plugin {how}: {done.plugin}")
    if done.legacy_removed is not None:
        print(f"removed the earlier release's plugin folder {done.legacy_removed}")
    print(f"worker Python recorded: {done.python} (in {done.record})")
    if done.enabled_in is not None:
        print(f"enabled in {done.enabled_in}")
    print("restart QGIS; then open Raster > rs-vlm > rs-vlm panel, or the rs-vlm algorithms in the Processing toolbox")
    return 0


def run_uninstall(args: argparse.Namespace) -> int:
    from rs_vlm_app.qgis_plugin import uninstall

    removed = uninstall(args.profile, args.profiles_dir)
    for path in removed:
        print(f"removed {path}")
    if not removed:
        print(f"the plugin is not installed in QGIS profile {args.profile!r}")
    return 0


def run_package(args: argparse.Namespace) -> int:
    from rs_vlm_app.qgis_plugin import package_zip

    path = package_zip(args.out)
    print(f"wrote {path}")
    return 0
