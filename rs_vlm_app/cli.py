"""The `rsvlm` command: one parser, subcommands contributed by modules in rs_vlm_app/commands/.

Heavy libraries (torch, open_clip, rasterio) are imported only inside command functions, so
`rsvlm --help` and input errors answer at once.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable, Sequence

from rs_vlm_app import __version__
from rs_vlm_app.errors import EXIT_CANCELLED, EXIT_USER_ERROR, Cancelled, UserError

#: Each module defines ``register(tree: CommandTree) -> None``.
COMMAND_MODULES: tuple[str, ...] = (
    "rs_vlm_app.commands.models",
    "rs_vlm_app.commands.localize",
    "rs_vlm_app.commands.evaluate",
    "rs_vlm_app.commands.train",
    "rs_vlm_app.commands.dataset",
    "rs_vlm_app.commands.caption",
    "rs_vlm_app.commands.classify",
    "rs_vlm_app.commands.search",
    "rs_vlm_app.commands.index",
    "rs_vlm_app.commands.evaluate_models",
    "rs_vlm_app.commands.worker",
    "rs_vlm_app.commands.gui",
    "rs_vlm_app.commands.qgis",
    "rs_vlm_app.commands.demo",
)


class CommandTree:
    """Adds (possibly nested) subcommands: ``tree.command("eval selo", ...)``."""

    def __init__(self, parser: argparse.ArgumentParser):
        self._root = parser.add_subparsers(dest="command", metavar="COMMAND")
        self._groups: dict[str, argparse._SubParsersAction] = {}

    def command(
        self, path: str, run: Callable[[argparse.Namespace], int | None], help: str, description: str = ""
    ) -> argparse.ArgumentParser:
        *group_names, name = path.split()
        subparsers = self._root
        prefix = ""
        for group in group_names:
            prefix = f"{prefix} {group}".strip()
            if prefix not in self._groups:
                group_parser = subparsers.add_parser(group, help=f"{group} commands")
                group_parser.set_defaults(run=_group_help(group_parser))
                self._groups[prefix] = group_parser.add_subparsers(dest=f"{prefix}_command", metavar="COMMAND")
            subparsers = self._groups[prefix]
        parser = subparsers.add_parser(
            name, help=help, description=description or help,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        parser.set_defaults(run=run)
        return parser


def _group_help(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    def run(_args: argparse.Namespace) -> int:
        parser.print_help(sys.stderr)
        return EXIT_USER_ERROR

    return run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rsvlm",
        description="Ask questions of georeferenced remote-sensing imagery; build and fine-tune the models.",
    )
    parser.add_argument("--version", action="version", version=f"rs-vlm {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debugging detail")
    tree = CommandTree(parser)
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(tree)
    return parser


class _OneLineFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = " ".join(record.getMessage().split())
        if record.levelno >= logging.WARNING:
            return f"rsvlm: {record.levelname.lower()}: {message}"
        return message


def configure_logging(verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_OneLineFormatter())
    root = logging.getLogger("rs_vlm_app")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    root.propagate = False


def run() -> None:
    """The `rsvlm` program: :func:`main`, then :func:`rs_vlm_app.runtime.exit_process`."""
    from rs_vlm_app.runtime import exit_process

    exit_process(main())


def main(argv: Sequence[str] | None = None) -> int:
    from rs_vlm_app.runtime import configure_process

    configure_process()  # OpenMP, threads, GDAL cache, malloc: before torch or GDAL load
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help(sys.stderr)
        return EXIT_USER_ERROR
    configure_logging(args.verbose)
    try:
        return int(args.run(args) or 0)
    except UserError as exc:
        print(f"rsvlm: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except Cancelled:
        print("rsvlm: cancelled; finished work is kept, run the same command again to resume", file=sys.stderr)
        return EXIT_CANCELLED
    except KeyboardInterrupt:
        print("rsvlm: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
