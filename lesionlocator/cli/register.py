"""``lesionlocator register``: register a follow-up scan to the previous session, write the transform."""

from __future__ import annotations

import argparse

from lesionlocator.cli.command import Command, Output
from lesionlocator.register.base import register_pair


def run(args: argparse.Namespace) -> None:
    path = register_pair(args.fixed, args.moving, args.output, args.config.register, report_path=args.report)
    print(f"{args.fixed} -> {args.moving}: transform {path}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--fixed", required=True, help="follow-up image (NIfTI/NRRD/MHA or DICOM folder)")
    parser.add_argument("--moving", required=True, help="previous-session image")
    parser.add_argument("--report", help="optional JSON with overlap and metric values")


COMMANDS = [
    Command(
        "register",
        help="register a follow-up scan (fixed) to the previous session (moving); write an ITK transform",
        description="Register FIXED (the follow-up) to MOVING (the previous session) with the backend of the "
        "config's register section and write the ITK transform (.tfm or .h5), which maps follow-up world points "
        "to previous-session world points. An existing transform file is reused.",
        add_arguments=add_arguments,
        run=run,
        config=True,
        output=Output("transform file to write (.tfm or .h5)"),
    ),
]
