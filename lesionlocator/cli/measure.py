"""``lesionlocator measure``: volume, RECIST diameters and centroid of every tracked lesion of one patient."""

from __future__ import annotations

import argparse

from lesionlocator.cli.command import Command, Output


def run(args: argparse.Namespace) -> None:
    from lesionlocator.measure.lesions import measure_patient

    sessions = [(name, None if image == "-" else image, labels) for name, image, labels in args.session]
    table = measure_patient(args.patient, sessions, args.output, status=args.status)
    print(f"{args.patient}: {table.num_rows} lesion-session row(s) -> {args.output}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--patient", required=True, help="patient label")
    parser.add_argument("--session", nargs=3, action="append", required=True, metavar=("NAME", "IMAGE", "LABELS"),
                        help="one session in time order: name, image ('-' for none) and uint32 label map; repeat per session")  # fmt: skip
    parser.add_argument("--status", help="tracking status table (Parquet or TSV: lesion_id, session, status[, organ])")


COMMANDS = [
    Command(
        "measure",
        help="measure every tracked lesion of one patient (volume, RECIST diameters, centroid) to Parquet",
        description="Measure each lesion of a patient's instance label maps at every session: volume (mL), longest "
        "axial diameter and perpendicular short axis (mm, RECIST 1.1), world centroid (mm, LPS), mean intensity.",
        add_arguments=add_arguments,
        run=run,
        output=Output("lesion table (Parquet) to write"),
    ),
]
