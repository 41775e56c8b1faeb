"""``lesionlocator ingest``: discover and validate a cohort, write its manifest."""

from __future__ import annotations

import argparse

from lesionlocator.cli.command import Command, Output
from lesionlocator.ingest.cohort import ingest_cohort


def run(args: argparse.Namespace) -> None:
    manifest = ingest_cohort(args.output, root=args.root, table=args.table, verify_pixels=not args.headers_only, strict=args.strict)
    print(f"{manifest.patient.nunique()} patient(s), {len(manifest)} session(s) -> {args.output}")
    ignored = manifest.attrs.get("ignored", [])
    if ignored:
        print(f"ignored {len(ignored)} folder(s)/file(s) with near-miss names (--strict refuses them):")
        print("\n".join(f"  {line}" for line in ignored))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--root", help="BIDS-like cohort root folder")
    source.add_argument("--table", help="cohort.tsv with explicit paths")
    parser.add_argument("--headers-only", action="store_true", help="read image headers only (faster, misses truncated files)")
    parser.add_argument(
        "--strict", action="store_true",
        help="refuse folders and files whose names look like patients or sessions but are not sub-<label>/ses-<label> "
        "(Sub-P002, sub_P003, ses_03), instead of ignoring them with a warning (cohort.strict)",
    )


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
