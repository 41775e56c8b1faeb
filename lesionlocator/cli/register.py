"""``lesionlocator register``: register a follow-up scan to the previous session, write the transform."""

from __future__ import annotations

import argparse

from lesionlocator.core.config import load_config
from lesionlocator.register.base import register_pair


def run(args: argparse.Namespace) -> None:
    config = load_config(args.config).register
    path = register_pair(args.fixed, args.moving, args.output, config, report_path=args.report)
    print(f"{args.fixed} -> {args.moving}: transform {path}")


def add_cli(subparsers) -> None:
    parser = subparsers.add_parser(
        "register",
        help="register a follow-up scan (fixed) to the previous session (moving); write an ITK transform",
        description="Register FIXED (the follow-up) to MOVING (the previous session) with the backend of the "
        "config's register section and write the ITK transform (.tfm or .h5), which maps follow-up world points "
        "to previous-session world points. An existing transform file is reused.",
    )
    parser.add_argument("--fixed", required=True, help="follow-up image (NIfTI/NRRD/MHA or DICOM folder)")
    parser.add_argument("--moving", required=True, help="previous-session image")
    parser.add_argument("-o", "--output", required=True, help="transform file to write (.tfm or .h5)")
    parser.add_argument("--config", help="study config YAML (default: config/config.yaml)")
    parser.add_argument("--report", help="optional JSON with overlap and metric values")
    parser.set_defaults(func=run)
