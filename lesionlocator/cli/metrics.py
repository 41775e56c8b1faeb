"""``lesionlocator measure | evaluate | aggregate | report | summary``: measurements, metrics, the cohort report."""

from __future__ import annotations

import argparse
from pathlib import Path


def _config(path: str | None):
    from lesionlocator.core.config import load_config

    return load_config(path).metrics


def run_measure(args: argparse.Namespace) -> None:
    from lesionlocator.measure.lesions import measure_patient

    sessions = [(name, None if image == "-" else image, labels) for name, image, labels in args.session]
    table = measure_patient(args.patient, sessions, args.output, status=args.status)
    print(f"{args.patient}: {table.num_rows} lesion-session row(s) -> {args.output}")


def run_evaluate(args: argparse.Namespace) -> None:
    from lesionlocator.evaluate.tracking import evaluate_patient

    config = _config(args.config)
    table = evaluate_patient(
        args.patient, [tuple(s) for s in args.session], args.output,
        correspondence=args.correspondence or config.correspondence,
        iou_threshold=config.detection_iou if args.iou is None else args.iou,
    )  # fmt: skip
    print(f"{args.patient}: {table.num_rows} evaluation row(s) -> {args.output}")


def run_aggregate(args: argparse.Namespace) -> None:
    from lesionlocator.aggregate.cohort import aggregate_cohort, per_patient_files
    from lesionlocator.measure.response import ResponseCriteria

    config = _config(args.config)
    counts = aggregate_cohort(
        per_patient_files(args.lesions), args.output,
        evaluation_files=per_patient_files(args.evaluation or []), sessions=args.sessions,
        criteria=ResponseCriteria.from_config(config), radius_mm=config.cpm_radius_mm,
        files_per_partition=config.files_per_partition,
    )  # fmt: skip
    print(", ".join(f"{k}: {v} row(s)" for k, v in counts.items()) + f" -> {args.output}")


def run_report(args: argparse.Namespace) -> None:
    from lesionlocator.aggregate.report import report_cohort

    failed = []
    if args.failed:
        failed = [line.strip() for line in Path(args.failed).read_text().splitlines() if line.strip()]
    report_cohort(args.dataset, args.output, failed_patients=failed, title=args.title)
    print(f"report -> {args.output}")


def run_summary(args: argparse.Namespace) -> None:
    from lesionlocator.aggregate.summary import run_summary as summary

    text = summary(args.results_dir) or f"no run.json in {args.results_dir}: the main job has not finished there\n"
    print(text, end="")


def add_cli(subparsers) -> None:
    measure = subparsers.add_parser(
        "measure",
        help="measure every tracked lesion of one patient (volume, RECIST diameters, centroid) to Parquet",
        description="Measure each lesion of a patient's instance label maps at every session: volume (mL), longest "
        "axial diameter and perpendicular short axis (mm, RECIST 1.1), world centroid (mm, LPS), mean intensity.",
    )
    measure.add_argument("--patient", required=True, help="patient label")
    measure.add_argument("--session", nargs=3, action="append", required=True, metavar=("NAME", "IMAGE", "LABELS"),
                         help="one session in time order: name, image ('-' for none) and uint32 label map; repeat per session")  # fmt: skip
    measure.add_argument("--status", help="tracking status table (Parquet or TSV: lesion_id, session, status[, organ])")
    measure.add_argument("-o", "--output", required=True, help="lesion table (Parquet) to write")
    measure.set_defaults(func=run_measure)

    evaluate = subparsers.add_parser(
        "evaluate",
        help="evaluate one patient's label maps against ground truth (Dice, centre distance, detection)",
        description="Per lesion and session: Dice, IoU, centre distance (mm), equivalent radius, one-to-one detection "
        "matching (Hungarian on IoU). Session metrics (CPM@r, Dice@r, F1, FP/FN volume) are derived by aggregate.",
    )
    evaluate.add_argument("--patient", required=True, help="patient label")
    evaluate.add_argument("--session", nargs=3, action="append", required=True, metavar=("NAME", "PRED", "GT"),
                          help="one session in time order: name, predicted and ground-truth label maps; repeat per session")  # fmt: skip
    evaluate.add_argument("--correspondence", choices=["id", "overlap"], help="pair lesions by ID or by detection (default: config)")
    evaluate.add_argument("--iou", type=float, help="detection IoU threshold (default: config, 0.1)")
    evaluate.add_argument("--config", help="study config YAML (default: config/config.yaml)")
    evaluate.add_argument("-o", "--output", required=True, help="evaluation table (Parquet) to write")
    evaluate.set_defaults(func=run_evaluate)

    aggregate = subparsers.add_parser(
        "aggregate",
        help="assemble per-patient tables into the cohort dataset (lesions, sessions, patients, summary) with dask",
        description="Read per-patient lesion (and evaluation) tables in batches with dask, assess RECIST 1.1 and "
        "volumetric response, and write a partitioned Parquet dataset readable with pandas and duckdb.",
    )
    aggregate.add_argument("lesions", nargs="+", help="per-patient lesion tables, or folders of them")
    aggregate.add_argument("--evaluation", nargs="+", help="per-patient evaluation tables, or folders of them")
    aggregate.add_argument("--sessions", help="ingest manifest (Parquet) listing every session, also those without lesions")
    aggregate.add_argument("--config", help="study config YAML (default: config/config.yaml)")
    aggregate.add_argument("-o", "--output", required=True, help="dataset folder to (re)write")
    aggregate.set_defaults(func=run_aggregate)

    report = subparsers.add_parser(
        "report",
        help="write the self-contained HTML cohort report",
        description="Waterfall of best response, spaghetti plots of volume and sum of diameters, status counts, "
        "Dice/CPM per session, lesions flagged for review and failed patients, in one HTML file.",
    )
    report.add_argument("dataset", help="cohort dataset folder written by aggregate")
    report.add_argument("--failed", help="text file listing failed patients, one per line")
    report.add_argument("--title", default="LesionLocator cohort report", help="report title")
    report.add_argument("-o", "--output", required=True, help="HTML file to write")
    report.set_defaults(func=run_report)

    summary = subparsers.add_parser(
        "summary",
        help="print the summary of a finished run (what the main job prints at its end)",
        description="Patients done and failed (with the first reason), lesions tracked, best overall responses, "
        "lesion-sessions flagged for review, and where the report and run.json are; read from RESULTS_DIR.",
    )
    summary.add_argument("results_dir", nargs="?", default="results", help="results_dir of the run (default: %(default)s)")
    summary.set_defaults(func=run_summary)
