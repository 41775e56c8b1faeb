"""``lesionlocator track``: every lesion of one patient through all sessions, without Snakemake.

Ingests the cohort into ``RESULTS_DIR/ingest/manifest.parquet`` (or takes an existing manifest),
then runs :func:`lesionlocator.pipeline.track_patient` (baseline segmentation, one registration per
consecutive pair, anchored tracking, new-lesion candidates) and prints one summary table per
session. Outputs are the same files the workflow writes, under ``RESULTS_DIR/patients/sub-<P>/``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pyarrow.parquet as pq

from lesionlocator.cli.command import Command, Output
from lesionlocator.core.config import StudyConfig
from lesionlocator.core.errors import LesionLocatorError


def _config(args: argparse.Namespace) -> StudyConfig:
    track = args.config.track.model_copy(
        update={
            **({"candidates": False} if args.no_candidates else {}),
            **({"qc_figures": True} if args.qc_figures else {}),
        }
    )
    return args.config.model_copy(update={"results_dir": Path(args.output), "track": track})


def summary_lines(results_dir: Path, patient: str, manifest: Path) -> list[str]:
    """One block per session: lesion ID, status, volume (mL), score; candidates last."""
    from lesionlocator.core.layout import ResultsLayout
    from lesionlocator.pipeline import patient_sessions

    layout = ResultsLayout(results_dir)
    lines = []
    for row in patient_sessions(manifest)[patient]:
        path = layout.tracking(patient, row["session"])
        lines.append(f"ses-{row['session']}")
        if not path.is_file():
            lines.append("  (not tracked)")
            continue
        records = sorted(pq.read_table(path).to_pylist(), key=lambda r: (r["is_candidate"], r["lesion_id"]))
        lines.append(f"  {'lesion':>10}  {'status':<14}{'volume_ml':>10}{'score':>8}")
        for r in records:
            lines.append(f"  {r['lesion_id']:>10}  {r['status']:<14}{r['volume_ml']:>10.2f}{r['score']:>8.2f}")
    return lines


def run(args: argparse.Namespace) -> None:
    from lesionlocator.core.layout import LABEL_PATTERN
    from lesionlocator.core.lock import results_lock
    from lesionlocator.ingest.cohort import ingest_cohort
    from lesionlocator.pipeline import label_list, patient_sessions, track_patient

    if not LABEL_PATTERN.fullmatch(args.patient):
        raise LesionLocatorError(
            f"invalid patient label {args.patient!r}: letters and digits only, without sub- (e.g. P001)"
        )
    config = _config(args)
    results = Path(config.results_dir)
    # the same lock as a Snakemake run: never two runs writing to one results folder
    with results_lock(results, f"lesionlocator track --patient {args.patient}"):
        if args.manifest:
            manifest = source = Path(args.manifest)
            if not manifest.is_file():
                raise LesionLocatorError(f"{manifest}: no such manifest (lesionlocator ingest writes one)")
        else:
            manifest, source = results / "ingest" / "manifest.parquet", Path(args.root)
            ingest_cohort(manifest, root=args.root)
        patients = patient_sessions(manifest)
        if args.patient not in patients:
            raise LesionLocatorError(f"{source}: patient {args.patient!r} not found (patients: {label_list(patients)})")
        reports = track_patient(manifest, args.patient, config, results / "shards" / "track_patient" / f"sub-{args.patient}")
    print("\n".join(summary_lines(results, args.patient, manifest)))
    failures = [
        f"{report['stage']}: {item['error']}"
        for report in reports
        for item in report["patients"].values()
        if item["outcome"] == "failed"
    ]
    if failures:
        raise LesionLocatorError(f"patient {args.patient} failed at " + "; ".join(failures))
    print(f"-> {layout_dir(results, args.patient)}")


def layout_dir(results: Path, patient: str) -> Path:
    from lesionlocator.core.layout import ResultsLayout

    return ResultsLayout(results).patient_dir(patient)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--root", help="BIDS-like cohort root folder (ingested first)")
    source.add_argument("--manifest", help="an existing manifest Parquet (from lesionlocator ingest)")
    parser.add_argument("--patient", required=True, help="patient label, e.g. P001 (without sub-)")
    parser.add_argument("--no-candidates", action="store_true", help="skip the new-lesion candidate search")
    parser.add_argument("--qc-figures", action="store_true", help="write a QC figure (PNG) per lesion")


COMMANDS = [
    Command(
        "track",
        help="segment and track every lesion of one patient through all its sessions (no Snakemake)",
        description="Track one patient: ingest the cohort (into RESULTS_DIR/ingest/manifest.parquet), segment "
        "the prompted lesions at baseline, register each follow-up to the previous session once, segment "
        "each lesion from its anchored prompt (track.prompt_source), and report its status per session (present, "
        "vanished, out_of_fov, merged, split, uncertain, lost) plus new lesions and the reader's reviews. Writes per "
        "session "
        "lesions.nii.gz, candidates.nii.gz, to_previous.tfm and tracking.parquet under "
        "RESULTS_DIR/patients/sub-<patient>/ and prints a summary table. Holds RESULTS_DIR/lesionlocator.lock "
        "while it runs, as a Snakemake run does: refused while another run writes to the same folder.",
        add_arguments=add_arguments,
        run=run,
        config=True,
        output=Output("results folder (RESULTS_DIR)"),
    ),
]
