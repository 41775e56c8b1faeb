"""``lesionlocator ingest``: discover and validate a cohort, write its manifest."""

from __future__ import annotations

import argparse

from lesionlocator.cli.command import Command, Output
from lesionlocator.ingest.cohort import ingest_cohort


def run(args: argparse.Namespace) -> None:
    manifest = ingest_cohort(args.output, root=args.root, table=args.table, verify_pixels=not args.headers_only)
    print(f"{manifest.patient.nunique()} patient(s), {len(manifest)} session(s) -> {args.output}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--root", help="BIDS-like cohort root folder")
    source.add_argument("--table", help="cohort.tsv with explicit paths")
    parser.add_argument("--headers-only", action="store_true", help="read image headers only (faster, misses truncated files)")


COMMANDS = [
    Command(
        "ingest",
        help="validate a BIDS-like cohort or a cohort.tsv and write the manifest (Parquet)",
        description="Discover a BIDS-like cohort (sub-<patient>/ses-<session>/) or read a cohort.tsv, "
        "validate images, prompts and masks, and write one manifest row per patient x session.",
        add_arguments=add_arguments,
        run=run,
        output=Output("manifest Parquet file to write"),
    ),
]
