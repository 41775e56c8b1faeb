"""What a subcommand declares: its name and help, its own arguments, the function it runs, the shared flags it takes.

The shared flags themselves (``--config``, ``-o/--output``, ``--device``) are added by
:func:`lesionlocator.cli.build_parser`, the same way for every command that declares them.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Output:
    """``-o/--output``: what the command writes (its help) and whether it must be given."""

    help: str
    required: bool = True


@dataclass(frozen=True)
class Device:
    """``--device``: the devices the command accepts, its default (None: the config's) and help."""

    choices: tuple[str, ...] = ("auto", "cpu", "cuda")
    default: str | None = None
    help: str | None = None


@dataclass(frozen=True)
class Command:
    """One ``lesionlocator <name>`` subcommand.

    ``config``: takes ``--config PATH``; ``run`` then finds the validated
    :class:`~lesionlocator.core.config.StudyConfig` in ``args.config`` (the default config without the flag).
    """

    name: str
    help: str
    description: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], None]
    config: bool = False
    output: Output | None = None
    device: Device | None = None
