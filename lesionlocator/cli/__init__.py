"""The ``lesionlocator`` command line: one subcommand per stage, each a thin wrapper of a function.

Each module of :data:`STAGE_MODULES` lists its subcommands in ``COMMANDS`` (:class:`Command` records: own
arguments, the function to run, the shared flags it takes); :func:`build_parser` adds the shared flags,
written once below, and :func:`main` loads ``--config`` and turns a :class:`LesionLocatorError` into
``error: <message>`` and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from lesionlocator import __version__
from lesionlocator.cli.command import Command
from lesionlocator.core.config import load_config
from lesionlocator.core.errors import LesionLocatorError

STAGE_MODULES = [
    "lesionlocator.cli.config",
    "lesionlocator.cli.ingest",
    "lesionlocator.cli.register",
    "lesionlocator.cli.synthesize",
    "lesionlocator.cli.train",
    "lesionlocator.cli.segment",
    "lesionlocator.cli.measure",
    "lesionlocator.cli.evaluate",
    "lesionlocator.cli.aggregate",
    "lesionlocator.cli.track",
    "lesionlocator.cli.weights",
]


def commands() -> dict[str, Command]:
    """Every subcommand by name, in the order of :data:`STAGE_MODULES`."""
    found = {}
    for module in STAGE_MODULES:
        for command in importlib.import_module(module).COMMANDS:
            if command.name in found:
                raise ValueError(f"{module}: command {command.name!r} is declared twice")
            found[command.name] = command
    return found


def add_shared_flags(parser: argparse.ArgumentParser, command: Command) -> None:
    """The flags several commands share, with one name, default and help each."""
    if command.config:
        parser.add_argument("--config", help="study config YAML (default: config/config.yaml)")
    if command.output is not None:
        parser.add_argument("-o", "--output", required=command.output.required, help=command.output.help)
    if command.device is not None:
        device = command.device
        parser.add_argument("--device", choices=list(device.choices), default=device.default, help=device.help)


def build_parser(subcommands: dict[str, Command] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lesionlocator",
        description="Promptable 3D lesion segmentation and longitudinal tracking at cohort scale.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in (subcommands or commands()).values():
        sub = subparsers.add_parser(command.name, help=command.help, description=command.description)
        command.add_arguments(sub)
        add_shared_flags(sub, command)
    return parser


def main(argv: list[str] | None = None) -> int:
    subcommands = commands()
    args = build_parser(subcommands).parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    command = subcommands[args.command]
    try:
        if command.config:
            args.config = load_config(args.config)
        command.run(args)
    except LesionLocatorError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
