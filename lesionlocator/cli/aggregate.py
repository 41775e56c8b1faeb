"""``lesionlocator aggregate | report | summary``: the cohort dataset, its HTML report, the run's summary."""

from __future__ import annotations

import argparse
from pathlib import Path

from lesionlocator.cli.command import Command, Output


def run_aggregate(args: argparse.Namespace) -> None:
    from lesionlocator.aggregate.cohort import aggregate_cohort, per_patient_files

    config = args.config.metrics
    counts = aggregate_cohort(
        per_patient_files(args.lesions), args.output,
        evaluation_files=per_patient_files(args.evaluation or []), sessions=args.sessions,
        criteria=config, radius_mm=config.cpm_radius_mm,
        files_per_partition=config.files_per_partition,
    )  # fmt: skip
    print(", ".join(f"{k}: {v} row(s)" for k, v in counts.items()) + f" -> {args.output}")


def run_report(args: argparse.Namespace) -> None:
    from lesionlocator.aggregate.report import report_cohort

    failed = []
    if args.failed:
        failed = [line.strip() for line in Path(args.failed).read_text().splitlines() if line.strip()]
    report_cohort(args.dataset, args.output, failed_patients=failed, title=args.title, manifest=args.manifest, results_dir=args.results_dir)
    print(f"report -> {args.output}")


def run_summary(args: argparse.Namespace) -> None:
    from lesionlocator.aggregate.summary import run_summary as summary

    text = summary(args.results_dir) or f"no run.json in {args.results_dir}: the main job has not finished there\n"
    print(text, end="")


def add_aggregate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("lesions", nargs="+", help="per-patient lesion tables, or folders of them")
    parser.add_argument("--evaluation", nargs="+", help="per-patient evaluation tables, or folders of them")
    parser.add_argument("--sessions", help="ingest manifest (Parquet) listing every session, also those without lesions")


def add_report_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", help="cohort dataset folder written by aggregate")
    parser.add_argument("--failed", help="text file listing failed patients, one per line")
    parser.add_argument("--title", default="LesionLocator cohort report", help="report title")
    parser.add_argument("--manifest", help="ingest manifest (Parquet): times in days from acq_time, and the scans of the thumbnails")
    parser.add_argument("--results-dir", help="results_dir of the run: the tracker's label maps, for lesion thumbnails (with --manifest)")


def add_summary_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results_dir", nargs="?", default="results", help="results_dir of the run (default: %(default)s)")


COMMANDS = [
    Command(
        "aggregate",
        help="assemble per-patient tables into the cohort dataset (lesions, sessions, patients, summary) with dask",
        description="Read per-patient lesion (and evaluation) tables in batches with dask, assess RECIST 1.1 and "
        "volumetric response, and write a partitioned Parquet dataset readable with pandas and duckdb.",
        add_arguments=add_aggregate_arguments,
        run=run_aggregate,
        config=True,
        output=Output("dataset folder to (re)write"),
    ),
    Command(
        "report",
        help="write the self-contained HTML cohort report",
        description="Waterfall of best response, spaghetti plots of volume and sum of diameters, status counts, "
        "Dice/CPM per session, lesions flagged for review and failed patients, in one HTML file.",
        add_arguments=add_report_arguments,
        run=run_report,
        output=Output("HTML file to write"),
    ),
    Command(
        "summary",
        help="print the summary of a finished run (what the main job prints at its end)",
        description="Patients done and failed (with the first reason), lesions tracked, best overall responses, "
        "lesion-sessions flagged for review, and where the report and run.json are; read from RESULTS_DIR.",
        add_arguments=add_summary_arguments,
        run=run_summary,
    ),
]
