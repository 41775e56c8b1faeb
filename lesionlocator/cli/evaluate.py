"""``lesionlocator evaluate``: one patient's label maps against ground truth (Dice, centre distance, detection)."""

from __future__ import annotations

import argparse

from lesionlocator.cli.command import Command, Output


def run(args: argparse.Namespace) -> None:
    from lesionlocator.evaluate.tracking import evaluate_patient

    config = args.config.metrics
    table = evaluate_patient(
        args.patient, [tuple(s) for s in args.session], args.output,
        correspondence=args.correspondence or config.correspondence,
        iou_threshold=config.detection_iou if args.iou is None else args.iou,
    )  # fmt: skip
    print(f"{args.patient}: {table.num_rows} evaluation row(s) -> {args.output}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--patient", required=True, help="patient label")
    parser.add_argument("--session", nargs=3, action="append", required=True, metavar=("NAME", "PRED", "GT"),
                        help="one session in time order: name, predicted and ground-truth label maps; repeat per session")  # fmt: skip
    parser.add_argument("--correspondence", choices=["id", "overlap"], help="pair lesions by ID or by detection (default: config)")
    parser.add_argument("--iou", type=float, help="detection IoU threshold (default: config, 0.1)")


COMMANDS = [
    Command(
        "evaluate",
        help="evaluate one patient's label maps against ground truth (Dice, centre distance, detection)",
        description="Per lesion and session: Dice, IoU, centre distance (mm), equivalent radius, one-to-one detection "
        "matching (Hungarian on IoU). Session metrics (CPM@r, Dice@r, F1, FP/FN volume) are derived by aggregate.",
        add_arguments=add_arguments,
        run=run,
        config=True,
        output=Output("evaluation table to write (.parquet, or .arrow for an Arrow IPC file as the pipeline writes)"),
    ),
]
