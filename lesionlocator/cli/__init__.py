"""The ``lesionlocator`` command line: one subcommand per stage, each a thin wrapper of a function.

A stage module adds its subcommand with ``add_cli(subparsers)``; the list below names them.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from lesionlocator import __version__
from lesionlocator.core.errors import LesionLocatorError

STAGE_MODULES = [
    "lesionlocator.cli.config",
    "lesionlocator.cli.ingest",
    "lesionlocator.cli.register",
    "lesionlocator.cli.synthesize",
    "lesionlocator.cli.train",
    "lesionlocator.cli.segment",
    "lesionlocator.cli.metrics",
    "lesionlocator.cli.track",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lesionlocator",
        description="Promptable 3D lesion segmentation and longitudinal tracking at cohort scale.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in STAGE_MODULES:
        importlib.import_module(name).add_cli(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        args.func(args)
    except LesionLocatorError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
