"""``lesionlocator config``: validate a study config, or regenerate the defaults and schema."""

from __future__ import annotations

import argparse

import yaml

from lesionlocator.cli.command import Command
from lesionlocator.core import config as cfg


def run(args: argparse.Namespace) -> None:
    if args.write:
        for path in cfg.write_generated_files():
            print(f"wrote {path}")
        return
    config = cfg.load_config(args.configfile)
    print(yaml.safe_dump(cfg.config_to_dict(config), sort_keys=False), end="")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("configfile", nargs="?", help="YAML config (default: config/config.yaml)")
    parser.add_argument("--write", action="store_true", help="regenerate the default config and the JSON schema")


COMMANDS = [
    Command(
        "config",
        help="validate a config (prints it resolved) or regenerate config.yaml and the JSON schema",
        description="Validate a study config and print it with defaults filled in; "
        "--write regenerates config/config.yaml and workflow/schemas/config.schema.json from the models.",
        add_arguments=add_arguments,
        run=run,
    ),
]
