"""The per-shard stage functions that the Snakemake rules call (one function per rule).

Each takes the manifest, the shard's patients and the validated :class:`StudyConfig`, builds its
model or registration once, and runs every patient through :func:`lesionlocator.core.shards.run_shard`
(per-patient skip when up to date, failure isolation, a shard report as the job's output). The
same functions serve ``lesionlocator track`` for a single patient without Snakemake.
"""

from __future__ import annotations

import logging
import math
from functools import cache
from pathlib import Path
from typing import Callable

import pandas as pd
import pyarrow.parquet as pq

from lesionlocator.core.config import StudyConfig
from lesionlocator.core.errors import LesionLocatorError
from lesionlocator.core.io import Geometry, read_image
from lesionlocator.core.layout import ResultsLayout
from lesionlocator.core.shards import PatientTask, patient_time_budget, read_done, run_shard
from lesionlocator.ingest.cohort import read_manifest
from lesionlocator.register.base import build_registration, quality_record_path, register_pair
from lesionlocator.segment.api import check_prompts
from lesionlocator.stage_keys import stage_key
from lesionlocator.track.followup import (
    SessionScan,
    baseline_prompts,
    baseline_rows,
    read_followup_inputs,
    track_followup,
    write_labels,
    write_tracking,
)

log = logging.getLogger(__name__)


def patient_sessions(manifest_path: str | Path) -> dict[str, list[dict]]:
    """Manifest rows (plain dicts; missing values are None) per patient, in time order."""
    by_patient: dict[str, list[dict]] = {}
    for row in read_manifest(manifest_path, as_records=True):
        by_patient.setdefault(row["patient"], []).append(row)
    for rows in by_patient.values():
        rows.sort(key=lambda r: r["session_index"])
    return by_patient


def _scans(rows: list[dict]) -> list[SessionScan]:
    def path(value: str | None) -> Path | None:
        return Path(value) if value else None

    return [SessionScan(r["session"], int(r["session_index"]), Path(r["image"]), path(r["prompts"]), path(r["prompt_mask"])) for r in rows]


def _budget(config: StudyConfig, rows: list[dict]) -> float:
    """A patient's time budget (s) in a stage that reads the images of ``rows`` (manifest rows)."""
    voxels = sum(math.prod(int(n) for n in row["size"]) for row in rows)
    return patient_time_budget(config.workflow.patient_time_budget_s, voxels)


def _lazy(factory: Callable[[], object]) -> Callable[[], object]:
    """Build the model (or registration) on first use only: a shard that is up to date loads nothing."""
    return cache(factory)


def _export_dicom_seg(row: dict, labels, reference, layout: ResultsLayout, patient: str, config: StudyConfig) -> None:
    """For a session read from a DICOM series: the tracked lesions as DICOM-SEG (``track.dicom_seg``)."""
    if row["image_format"] != "dicom" or not config.track.dicom_seg:
        return
    from lesionlocator.core.dicomseg import write_dicom_seg
    from lesionlocator.core.io import image_from_array

    output = layout.dicom_seg(patient, row["session"])
    output.unlink(missing_ok=True)
    write_dicom_seg(image_from_array(labels, reference), row["image"], output, patient, row["session"])


def ingest_manifest(output: str | Path, verify_pixels: bool = True, strict: bool = False, **source: str | Path) -> pd.DataFrame:
    """Ingest the cohort into the manifest (the workflow's first job; ``source``: ``root=`` or ``table=``).

    A cohort that cannot be ingested stops the whole run, so its error (each file with its problem)
    goes to the log before it is raised: the job's log file, where Snakemake points, says why.
    ``strict`` (``cohort.strict``): a folder or file skipped for a near-miss name is an error.
    """
    from lesionlocator.ingest.cohort import ingest_cohort

    try:
        return ingest_cohort(output, verify_pixels=verify_pixels, strict=strict, **source)
    except LesionLocatorError as err:
        log.error("the cohort cannot be ingested; nothing was written to %s\n%s", output, err)
        raise
    except Exception:
        log.exception("the cohort cannot be ingested; nothing was written to %s", output)
        raise


def segment_baseline_shard(manifest_path: str | Path, patients: list[str], config: StudyConfig, report_path: str | Path) -> dict:
    """Segment the prompted lesions at every patient's baseline; the segmenter is built once."""
    from lesionlocator.segment.session import build_segmenter

    layout = ResultsLayout(Path(config.results_dir))
    sessions = patient_sessions(manifest_path)
    segmenter = _lazy(lambda: build_segmenter(config.segment))
    tasks = []
    for patient in patients:
        base = sessions[patient][0]
        key = stage_key("segment_baseline", config, base["image_sha256"], base["prompts_sha256"])

        def run(patient=patient, base=base) -> None:
            image = read_image(base["image"])
            prompts_json = Path(base["prompts"]) if base["prompts"] else None
            prompt_mask = Path(base["prompt_mask"]) if base["prompt_mask"] else None
            if prompts_json is None and prompt_mask is None:
                raise ValueError(f"patient {patient}: the baseline has neither prompts.json nor prompt_mask")
            prompts = baseline_prompts(image, prompts_json, prompt_mask, config.track.baseline_prompt)
            source = " + ".join(str(p) for p in (prompts_json, prompt_mask) if p is not None)
            prompts = check_prompts(prompts, Geometry.of(image).shape_zyx, source=source)
            result = segmenter().segment(image, prompts)
            scan = _scans(sessions[patient])[0]
            ids = sorted(int(p.lesion_id) for p in prompts)
            rows = baseline_rows(patient, scan, result.labels, Geometry.of(image), ids, result.scores, result.by_fallback)
            write_labels(result.labels, image, layout.labels(patient, scan.session))
            _export_dicom_seg(base, result.labels, image, layout, patient, config)
            write_tracking(rows, layout.tracking(patient, scan.session))

        tasks.append(PatientTask(patient, layout.patient_dir(patient), key, run, budget_s=_budget(config, [base])))
    return run_shard("segment_baseline", tasks, report_path)


def register_shard(
    manifest_path: str | Path, patients: list[str], t: int, config: StudyConfig, report_path: str | Path
) -> dict:
    """Register session ``t`` to ``t-1`` for every shard patient that has a session ``t``.

    Each pair's record (quality figures, :func:`lesionlocator.register.base.register_pair`) goes beside
    its transform, also when it fails; a pair below ``register.min_similarity`` fails its patient. A
    patient has the time budget of its two images (:func:`lesionlocator.core.shards.patient_time_budget`).
    """
    layout = ResultsLayout(Path(config.results_dir))
    sessions = patient_sessions(manifest_path)
    registration = _lazy(lambda: build_registration(config.register))
    tasks = []
    for patient in patients:
        rows = sessions[patient]
        if len(rows) <= t:
            continue
        key = stage_key("register", config, t, rows[t]["image_sha256"], rows[t - 1]["image_sha256"])
        output = layout.transform(patient, rows[t]["session"])

        def run(rows=rows, output=output) -> None:
            output.unlink(missing_ok=True)  # inputs changed: never reuse a stale transform
            record = quality_record_path(output)
            record.unlink(missing_ok=True)
            register_pair(rows[t]["image"], rows[t - 1]["image"], output, config.register, report_path=record, registration=registration())

        tasks.append(PatientTask(patient, layout.patient_dir(patient), key, run, budget_s=_budget(config, rows[t - 1 : t + 1])))
    return run_shard(f"register_t{t}", tasks, report_path)


def _previous_stage(t: int) -> str:
    return "segment_baseline" if t == 1 else f"track_t{t - 1}"


def upstream_stages(t: int, through_track: bool = True) -> list[tuple[str, int | None]]:
    """The (stage, session index) whose shard reports a later stage reads to skip the patients that
    failed upstream: ``track`` (through session index ``t``, or ``t - 1`` without ``through_track``)
    and ``register`` (through ``t``), then ``segment_baseline``; latest first.

    Latest first because :func:`lesionlocator.core.shards.failure_reasons` lets a later report's
    ``failed`` replace an earlier one's: so a patient that failed twice (its segmentation, and a
    registration that runs beside it) is reported with its earliest failure, the root cause. The
    measure and evaluate jobs read every report of their shard, not only the last tracking job's:
    a patient with fewer sessions than the shard's longest is not in that job's report.
    """
    chain: list[tuple[str, int | None]] = []
    for k in range(t, 0, -1):
        if through_track or k < t:
            chain.append(("track", k))
        chain.append(("register", k))
    return chain + [("segment_baseline", None)]


def _report_name(stage: str, t: int | None) -> str:
    """The report file name of a stage of ``lesionlocator track`` (one patient, no shard)."""
    return f"{stage}.json" if t is None else f"{stage}_t{t}.json"


def track_shard(
    manifest_path: str | Path,
    patients: list[str],
    t: int,
    config: StudyConfig,
    report_path: str | Path,
    upstream_reports: list[str | Path] = (),
) -> dict:
    """Track every lesion into session ``t`` for every shard patient that has one (autoregressive)."""
    from lesionlocator.segment.session import build_segmenter

    layout = ResultsLayout(Path(config.results_dir))
    sessions = patient_sessions(manifest_path)
    segmenter = _lazy(lambda: build_segmenter(config.segment))
    tasks = []
    for patient in patients:
        rows = sessions[patient]
        if len(rows) <= t:
            continue
        patient_dir = layout.patient_dir(patient)
        # the reader's prompts of session t: a correction reruns tracking from t on, not registration
        key = stage_key("track", config, t, read_done(patient_dir, _previous_stage(t)), read_done(patient_dir, f"register_t{t}"),
                        rows[t]["prompts_sha256"])

        def run(patient=patient, rows=rows) -> None:
            scans = _scans(rows)
            inputs = read_followup_inputs(
                scans,
                t,
                labels_paths=[layout.labels(patient, s.session) for s in scans[:t]],
                transform_paths=[None] + [layout.transform(patient, s.session) for s in scans[1 : t + 1]],
                tracking_paths=[layout.tracking(patient, s.session) for s in scans[:t]],
                track=config.track,
            )
            model = segmenter()
            result = track_followup(patient, scans, t, inputs, model, config.track, config.register.min_fraction_inside,
                                    second_opinion=getattr(model, "fallback", None))
            reference = inputs.image
            write_labels(result.labels, reference, layout.labels(patient, scans[t].session))
            _export_dicom_seg(rows[t], result.labels, reference, layout, patient, config)
            write_labels(result.candidates, reference, layout.candidates(patient, scans[t].session))
            write_tracking(result.rows, layout.tracking(patient, scans[t].session))
            if config.track.qc_figures and t == len(scans) - 1:
                from lesionlocator.track.qc import write_qc_figures

                all_rows = inputs.previous_rows + result.rows
                write_qc_figures(
                    [s.image for s in scans], [layout.labels(patient, s.session) for s in scans], all_rows,
                    [s.session for s in scans], layout.patient_dir(patient) / "qc",
                )

        # the follow-up, the previous session and the baseline (prompts, the vanishing test)
        budget = _budget(config, [rows[0], rows[t - 1], rows[t]] if t > 1 else rows[: t + 1])
        tasks.append(PatientTask(patient, patient_dir, key, run, budget_s=budget))
    return run_shard(f"track_t{t}", tasks, report_path, upstream_reports)


def track_patient(manifest_path: str | Path, patient: str, config: StudyConfig, report_dir: str | Path) -> list[dict]:
    """Every stage of one patient in order, measurement included (the ``lesionlocator track`` command)."""
    sessions = patient_sessions(manifest_path)
    if patient not in sessions:
        raise LesionLocatorError(f"{manifest_path}: patient {patient!r} not found (patients: {label_list(sessions)})")
    report_dir = Path(report_dir)
    reports = [segment_baseline_shard(manifest_path, [patient], config, report_dir / _report_name("segment_baseline", None))]
    for t in range(1, len(sessions[patient])):
        reports.append(register_shard(manifest_path, [patient], t, config, report_dir / _report_name("register", t)))
        upstream = [report_dir / _report_name(stage, k) for stage, k in upstream_stages(t, through_track=False)]
        reports.append(track_shard(manifest_path, [patient], t, config, report_dir / _report_name("track", t), upstream))
    upstream = [report_dir / _report_name(stage, k) for stage, k in upstream_stages(len(sessions[patient]) - 1)]
    reports.append(measure_shard(manifest_path, [patient], config, report_dir / "measure.json", upstream))
    return reports


def label_list(labels, shown: int = 10) -> str:
    """``"A1, B2, ... (and 8 more)"``: the first ``shown`` labels, for an error message."""
    labels = list(labels)
    more = f" (and {len(labels) - shown} more)" if len(labels) > shown else ""
    return ", ".join(labels[:shown]) + more


def _last_stage(n_sessions: int) -> str:
    return "segment_baseline" if n_sessions == 1 else f"track_t{n_sessions - 1}"


def measure_shard(
    manifest_path: str | Path, patients: list[str], config: StudyConfig, report_path: str | Path, upstream_reports: list[str | Path] = ()
) -> dict:
    """Measure every tracked lesion of each shard patient at every session (lesion table per patient)."""
    from lesionlocator.measure.lesions import measure_patient

    layout = ResultsLayout(Path(config.results_dir))
    sessions = patient_sessions(manifest_path)
    tasks = []
    for patient in patients:
        rows = sessions[patient]
        patient_dir = layout.patient_dir(patient)
        key = stage_key("measure", config, read_done(patient_dir, _last_stage(len(rows))))

        def run(patient=patient, rows=rows) -> None:
            scans = _scans(rows)
            status = pd.concat(
                [pq.read_table(layout.tracking(patient, s.session)).to_pandas() for s in scans], ignore_index=True
            )
            status = status[["lesion_id", "session", "status", "score", "by_fallback", "is_new", "first_session_index", "review_reason",
                             "reader"]]
            measure_patient(
                patient,
                [(s.session, s.image, layout.labels(patient, s.session)) for s in scans],
                output=[layout.measurements(patient), layout.measurements_arrow(patient)],
                status=status,
                confirm_score=config.track.candidate_confirm_score,
            )

        tasks.append(PatientTask(patient, patient_dir, key, run, budget_s=_budget(config, rows)))
    return run_shard("measure", tasks, report_path, upstream_reports)


def evaluate_shard(
    manifest_path: str | Path, patients: list[str], config: StudyConfig, report_path: str | Path, upstream_reports: list[str | Path] = ()
) -> dict:
    """Evaluate each shard patient against its ground truth (the sessions that have a GT mask): the
    label maps (Dice, centre distance, detection: ``evaluation.arrow``) and each lesion's reported
    status and the new lesions (``status_evaluation.arrow`` beside it; Arrow IPC files). True statuses come from the
    GT status table beside the GT masks' folders (``derivatives/groundtruth/groundtruth.parquet``, as the
    synthetic generator writes it), else from the masks (:mod:`lesionlocator.evaluate.longitudinal`)."""
    import hashlib

    from lesionlocator.evaluate.longitudinal import (
        STATUS_EVALUATION_FILE,
        SessionFiles,
        evaluate_patient_longitudinal,
        groundtruth_table_path,
        read_truth_table,
    )

    layout = ResultsLayout(Path(config.results_dir))
    sessions = patient_sessions(manifest_path)
    tasks = []
    for patient in patients:
        rows = [r for r in sessions[patient] if r["groundtruth"]]
        if not rows:
            continue
        tables = sorted({groundtruth_table_path(r["groundtruth"], patient, r["session"]) for r in rows} - {None})
        truth = pd.concat([read_truth_table(t, patient) for t in tables], ignore_index=True) if tables else None
        truth_hash = None if truth is None else hashlib.sha256(pd.util.hash_pandas_object(truth, index=False).to_numpy().tobytes()).hexdigest()
        patient_dir = layout.patient_dir(patient)
        key = stage_key("evaluate", config, read_done(patient_dir, _last_stage(len(sessions[patient]))), [r["fingerprint"] for r in rows],
                        truth_hash)  # fmt: skip

        def run(patient=patient, rows=rows, truth=truth) -> None:
            files = [SessionFiles(r["session"], int(r["session_index"]), layout.labels(patient, r["session"]), Path(r["groundtruth"]),
                                  layout.tracking(patient, r["session"]), layout.candidates(patient, r["session"])) for r in rows]  # fmt: skip
            evaluate_patient_longitudinal(
                patient,
                files,
                truth,
                evaluation_output=layout.evaluation(patient),
                status_output=layout.patient_dir(patient) / STATUS_EVALUATION_FILE,
                correspondence=config.metrics.correspondence,
                iou_threshold=config.metrics.detection_iou,
            )

        tasks.append(PatientTask(patient, patient_dir, key, run, budget_s=_budget(config, rows)))
    return run_shard("evaluate", tasks, report_path, upstream_reports)


def aggregate_results(
    manifest_path: str | Path, config: StudyConfig, shard_reports: list[str | Path], output_dir: str | Path, run_json: str | Path
) -> dict:
    """The cohort dataset (dask-built, partitioned Parquet) from the per-patient tables of the
    patients that finished and the registration records of every pair, plus ``run.json`` (config
    hash, versions, checkpoint hash, failures)."""
    from lesionlocator.aggregate.cohort import aggregate_cohort, write_run_manifest
    from lesionlocator.core.shards import failure_reasons

    layout = ResultsLayout(Path(config.results_dir))
    failures = failure_reasons(shard_reports)
    failed = set(failures)
    manifest = read_manifest(manifest_path)
    patients = [p for p in dict.fromkeys(manifest["patient"]) if p not in failed]  # manifest order
    lesion_files = [layout.measurements_arrow(p) for p in patients]
    evaluation_files = [layout.evaluation(p) for p in patients if layout.evaluation(p).exists()]
    from lesionlocator.evaluate.longitudinal import STATUS_EVALUATION_FILE

    status_files = [layout.patient_dir(p) / STATUS_EVALUATION_FILE for p in patients]
    status_files = [f for f in status_files if f.exists()]
    followups = manifest[manifest["session_index"] > 0]  # every registered pair, failed patients included
    records = [(r.patient, r.session, r.session_index, quality_record_path(layout.transform(r.patient, r.session))) for r in followups.itertuples()]
    counts = aggregate_cohort(
        lesion_files,
        output_dir,
        evaluation_files=evaluation_files,
        sessions=manifest[~manifest["patient"].isin(failed)][["patient", "session", "session_index"]],
        criteria=config.metrics,
        radius_mm=config.metrics.cpm_radius_mm,
        files_per_partition=config.metrics.files_per_partition,
        registration_records=records,
        status_files=status_files,
    )
    checkpoint = config.segment.model_folder
    write_run_manifest(
        run_json,
        config,
        checkpoint=checkpoint,
        extra={
            "failed_patients": sorted(failed),
            "failures": failures,
            "row_counts": counts,
            "resolved_config": config.model_dump(mode="json"),
        },
    )
    return counts

