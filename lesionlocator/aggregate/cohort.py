"""Assemble the per-patient tables of a cohort into one partitioned Parquet dataset, with dask.

Layout of the dataset folder (every table readable with ``pandas.read_parquet(folder / name)``,
``duckdb`` ``read_parquet('folder/name/**/*.parquet', hive_partitioning=true)`` or
:func:`read_cohort_table`)::

    lesions/session_index=<k>/part-<i>.parquet      LESION_SCHEMA (session_index in the folder name)
    sessions/part-<i>.parquet                       SESSION_SCHEMA (RECIST / volumetric response)
    patients/part-<i>.parquet                       PATIENT_SCHEMA (best overall response)
    evaluation/session_index=<k>/part-<i>.parquet   EVALUATION_SCHEMA (when ground truth exists)
    session_metrics/part-<i>.parquet                SESSION_METRICS_SCHEMA (when ground truth exists)
    status_evaluation/session_index=<k>/part-<i>.parquet   STATUS_EVALUATION_SCHEMA (reported vs true status
                                                    per lesion-session, when ground truth exists)
    status_confusion/part-00000.parquet             STATUS_CONFUSION_SCHEMA (counts of true x reported
                                                    status class per session_index)
    summary/part-00000.parquet                      SUMMARY_SCHEMA (cohort figures, tidy)
    registration/part-00000.parquet                 REGISTRATION_SCHEMA (each follow-up's registration quality)

How it stays fast and bounded in memory: ``PYTHONPATH=. .venv/bin/python bench/bench_aggregate.py
--evaluation`` (10,000 patients, 30,000 files, 3 M rows) and the README's "Scale" section give the
figures. A cProfile (process time) splits a run into reading the 30,000 files (about a third), RECIST
assessment (a fifth), the partitioned writes, the figures and dask.

* opening a small file is most of the cost: every per-patient table this step reads is an Arrow IPC
  file (``.arrow``, about 0.03 CPU-ms to open; a small Parquet file costs 0.3 CPU-ms, pyarrow's floor
  and DuckDB's too): the evaluation and status evaluation tables, which only this step reads, and the
  copy of each lesion table that the measure stage writes beside the users' Parquet file
  (:meth:`~lesionlocator.core.layout.ResultsLayout.measurements_arrow`);
* dask reads *batches* of files (``files_per_partition``, default 2000, one ``dask.delayed`` task
  each, on the threaded scheduler; ``dask.dataframe``, 0.5 s to import, is not needed), each file
  read whole into memory and parsed by its own single-threaded reader
  (:func:`~lesionlocator.core.io.read_patient_table`), the batch's schema checked once: no scan
  planning, no per-file tasks, a task graph of tens of tasks, not 10,000;
* a batch stays in Arrow: it is sorted by the partition key and written as it was read (one file
  per session_index, a single row group, dictionaries on string columns only), and only the columns
  a figure reads go to pandas;
* each partition holds whole patients (a file is one patient), so response assessment and the
  per-session metrics run per partition (their cost is partly per call, hence partitions of
  thousands of files); only small partial sums come back to the client, so a cohort larger than
  memory streams through partition by partition.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import sys
import time
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from lesionlocator.core.config import MetricsConfig
from lesionlocator.core.errors import InputError
from lesionlocator.core.hashing import json_sha256, package_versions, tree_sha256
from lesionlocator.core.io import ARROW_SUFFIX, atomic_directory, patient_table_format, read_patient_table, write_json
from lesionlocator.core.progress import Progress
from lesionlocator.evaluate.longitudinal import (
    STATUS_CONFUSION_SCHEMA,
    STATUS_EVALUATION_SCHEMA,
    ratios_of_counts,
    status_confusion,
    status_counts_by_session,
)
from lesionlocator.evaluate.tracking import EVALUATION_SCHEMA, SESSION_METRICS_SCHEMA, lesion_outcomes, session_metrics
from lesionlocator.measure.lesions import LESION_SCHEMA
from lesionlocator.measure.response import ASSESSED_COLUMNS, PATIENT_SCHEMA, SESSION_SCHEMA, assess_response

log = logging.getLogger(__name__)

#: Cohort figures in tidy form: one row per (scope, session_index, metric).
SUMMARY_SCHEMA = pa.schema(
    [
        pa.field("scope", pa.string(), nullable=False),
        pa.field("session_index", pa.int32()),
        pa.field("metric", pa.string(), nullable=False),
        pa.field("value", pa.float64()),
    ]
)

#: One row per registered pair (a follow-up against the previous session), failed patients included:
#: the registration quality check of :func:`lesionlocator.register.base.register_pair`.
REGISTRATION_SCHEMA = pa.schema(
    [
        pa.field("patient", pa.string(), nullable=False),
        pa.field("session", pa.string(), nullable=False),
        pa.field("session_index", pa.int32(), nullable=False),
        pa.field("similarity", pa.float64()),  # normalised cross-correlation; null: not computed
        pa.field("min_similarity", pa.float64()),
        pa.field("passed", pa.bool_(), nullable=False),
        pa.field("shared_fraction", pa.float64()),  # of the follow-up's body, shown by both scans
        pa.field("error", pa.string()),
    ]
)

TABLE_SCHEMAS = {
    "lesions": LESION_SCHEMA,
    "sessions": SESSION_SCHEMA,
    "patients": PATIENT_SCHEMA,
    "evaluation": EVALUATION_SCHEMA,
    "session_metrics": SESSION_METRICS_SCHEMA,
    "summary": SUMMARY_SCHEMA,
    "registration": REGISTRATION_SCHEMA,
    "status_evaluation": STATUS_EVALUATION_SCHEMA,
    "status_confusion": STATUS_CONFUSION_SCHEMA,
}
#: Tables written with hive partitioning by session_index.
PARTITIONED = ("lesions", "evaluation", "status_evaluation")
#: Scope of the partial sums that become the status_confusion table, not summary rows.
_CONFUSION_SCOPE = "_status_confusion"
_OUTPUT_OPTIONS = dict(compression="lz4", write_statistics=True)
#: The evaluation and status evaluation columns the figures read (the rest is only written back).
_EVALUATION_INPUTS = ["patient", "session", "session_index", "gt_lesion_id", "detection", "gt_volume_ml", "pred_volume_ml", "dice",
                      "centre_distance_mm", "gt_equivalent_radius_mm"]  # fmt: skip
_STATUS_INPUTS = ["patient", "session_index", "gt_lesion_id", "pred_lesion_id", "pred_status", "true_class", "pred_class", "correct",
                  "flagged", "new_candidate", "centroid_distance_mm"]  # fmt: skip


def _output_options(schema: pa.Schema) -> dict:
    """Writer options of a cohort table: LZ4 (a third less CPU than zstd for 9 % more bytes) and
    statistics; dictionary encoding for its string
    columns only (patient, session, status repeat; a float column's values rarely do, and trying a
    dictionary on it first costs about as much as the rest of the write)."""
    return dict(_OUTPUT_OPTIONS, use_dictionary=[f.name for f in schema if pa.types.is_string(f.type)])


def _read_batch(files: Sequence[str], schema: pa.Schema) -> pa.Table:
    """Read a batch of per-patient files into one Arrow table of ``schema`` (one chunk per column), in
    the order of ``files``.

    Each file is read into memory in one go and parsed by its own single-threaded reader
    (:func:`~lesionlocator.core.io.read_patient_table`: under half the CPU time of one dataset scan
    of the batch's tiny files: no scan planning, no per-file tasks, no small reads per column). When
    the files do not all have exactly ``schema`` (checked once, by the concatenation), each file
    that differs is read again through a ``pyarrow.dataset`` scan with the declared schema (missing
    nullable columns read as nulls, castable types cast), as the whole batch once was. The table
    stays in Arrow: it is written back as it is, and only the columns a figure needs go to pandas.
    """
    try:
        tables = [read_patient_table(path) for path in files]
        try:
            table = pa.concat_tables(tables) if tables else schema.empty_table()
        except pa.ArrowInvalid:  # schemas differ between files
            table = None
        if table is None or not table.schema.equals(schema):
            tables = [t if t.schema.equals(schema) else _read_as(path, schema) for t, path in zip(tables, files)]
            table = pa.concat_tables(tables)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError) as err:
        for path in files:
            _check_file(path, schema)
        raise InputError(files[0], f"cannot read this batch of per-patient tables ({err})") from None
    # a file that lacks a column reads as nulls there: required columns must have none
    if any(table.column(f.name).null_count for f in schema if not f.nullable):
        for path in files:
            _check_file(path, schema)
    return table.combine_chunks().replace_schema_metadata(None)


def _read_as(path: str, schema: pa.Schema) -> pa.Table:
    """One file read with the declared schema (a dataset scan: missing nullable columns as nulls)."""
    return ds.dataset([str(path)], schema=schema, format=patient_table_format(path)).to_table(use_threads=False)


def _check_file(path: str, schema: pa.Schema) -> None:
    try:
        found = pa.ipc.open_file(path).schema if patient_table_format(path) == "ipc" else pq.read_schema(path)
    except (pa.ArrowInvalid, OSError) as err:
        raise InputError(path, f"not a readable {'Arrow' if patient_table_format(path) == 'ipc' else 'Parquet'} file ({err})") from None
    if not found.remove_metadata().equals(schema):
        missing = sorted(set(schema.names) - set(found.names))
        raise InputError(path, f"schema differs from the declared one{f' (missing {missing})' if missing else ''}")


def _to_table(frame: pd.DataFrame | pa.Table, schema: pa.Schema) -> pa.Table:
    """Exactly ``schema`` (no pandas metadata); an Arrow table read with that schema is taken as it is."""
    if isinstance(frame, pa.Table):
        return frame.select(schema.names)
    return pa.Table.from_pandas(frame[schema.names], schema=schema, preserve_index=False).replace_schema_metadata(None)


def _write_partitioned(table: pa.Table, schema: pa.Schema, folder: Path, part: int) -> None:
    """One file per session_index, rows sorted by the partition key first (one row group each)."""
    table = _to_table(table, schema)
    table = table.sort_by([("session_index", "ascending"), ("patient", "ascending")])
    keys = table.column("session_index").to_numpy()
    body = table.drop_columns(["session_index"])
    if len(keys) == 0:
        return
    options = _output_options(body.schema)
    bounds = np.flatnonzero(np.diff(keys)) + 1
    starts = np.concatenate([[0], bounds])
    stops = np.concatenate([bounds, [len(keys)]])
    for start, stop in zip(starts, stops):
        target = folder / f"session_index={int(keys[start])}"
        target.mkdir(parents=True, exist_ok=True)
        pq.write_table(body.slice(start, stop - start), target / f"part-{part:05d}.parquet", **options)


def _write_plain(frame: pd.DataFrame, schema: pa.Schema, folder: Path, part: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(_to_table(frame, schema), folder / f"part-{part:05d}.parquet", **_output_options(schema))


def _lesion_partials(lesions: pd.DataFrame, sessions: pd.DataFrame, patients: pd.DataFrame) -> pd.DataFrame:
    """Summable figures of one partition: (scope, session_index, metric, value) sums."""
    rows = []
    present = lesions[lesions["voxel_count"] > 0]
    for index, group in present.groupby("session_index"):
        rows += [("session_index", index, "n_lesions_present", len(group)),
                 ("session_index", index, "total_volume_ml", group["volume_ml"].sum())]  # fmt: skip
    for (index, status), n in lesions.groupby(["session_index", "status"]).size().items():
        rows.append(("session_index", index, f"n_status_{status}", n))
    for index, group in sessions.groupby("session_index"):
        rows.append(("session_index", index, "n_sessions", len(group)))
        rows.append(("session_index", index, "sum_pct_change_baseline", group["pct_change_baseline"].sum()))
        rows.append(("session_index", index, "n_pct_change_baseline", group["pct_change_baseline"].notna().sum()))
        for response, n in group["recist_response"].value_counts().items():
            rows.append(("session_index", index, f"n_recist_{response}", n))
        for response, n in group["volumetric_response"].value_counts().items():
            rows.append(("session_index", index, f"n_volumetric_{response}", n))
    rows.append(("all", None, "n_patients", len(patients)))
    rows.append(("all", None, "n_lesions", patients["n_lesions"].sum()))
    rows.append(("all", None, "n_flagged_lesions", patients["n_flagged"].sum()))
    for response, n in patients["best_response"].value_counts().items():
        rows.append(("all", None, f"n_best_{response}", n))
    return pd.DataFrame(rows, columns=["scope", "session_index", "metric", "value"])


def _evaluation_partials(evaluation: pd.DataFrame, radius_mm: float) -> pd.DataFrame:
    """Summable evaluation figures of one partition, by the per-row rules of :func:`lesion_outcomes`."""
    rows = lesion_outcomes(evaluation, radius_mm)
    work = pd.DataFrame(
        {
            "session_index": evaluation["session_index"],
            "n_gt": rows["is_gt"], "tp": rows["tp"], "fp": rows["fp"], "fn": rows["fn"],
            "sum_dice": rows["dice"].where(rows["is_gt"], 0.0),
            "n_within_r": rows["within_r"], "n_within_radius": rows["within_radius"],
            "sum_dice_within_r": rows["dice_within_r"].where(rows["within_r"], 0.0),
            "sum_distance": rows["centre_distance_mm"].fillna(0.0), "n_distance": rows["centre_distance_mm"].notna(),
            "fp_volume_ml": rows["fp_volume_ml"], "fn_volume_ml": rows["fn_volume_ml"],
        }
    )  # fmt: skip
    sums = work.groupby("session_index").sum().astype(float)
    by_session = sums.reset_index().melt(id_vars="session_index", var_name="metric", value_name="value")
    overall = sums.sum().rename("value").rename_axis("metric").reset_index()
    followups = sums[sums.index > 0].sum().rename("value").rename_axis("metric").reset_index()
    return pd.concat(
        [by_session.assign(scope="eval_session_index"), overall.assign(scope="eval_all", session_index=None),
         followups.assign(scope="eval_followup", session_index=None)],
        ignore_index=True,
    )  # fmt: skip


def _status_partials(status: pd.DataFrame) -> pd.DataFrame:
    """Summable status figures of one partition (:func:`~lesionlocator.evaluate.longitudinal.status_counts_by_session`,
    per session index and over all sessions) and its confusion counts (scope ``_CONFUSION_SCOPE``,
    metric ``<true class>|<predicted class>``)."""
    by_session = status_counts_by_session(status)
    rows = [("status_all", None, metric, value) for metric, value in by_session.sum().items()]
    rows += [("status_session_index", index, metric, value) for index, counts in by_session.iterrows() for metric, value in counts.items()]
    confusion = status_confusion(status)
    rows += [(_CONFUSION_SCOPE, r.session_index, f"{r.true_class}|{r.pred_class}", float(r.n)) for r in confusion.itertuples()]
    return pd.DataFrame(rows, columns=["scope", "session_index", "metric", "value"])


def _confusion_of_partials(partials: pd.DataFrame) -> pd.DataFrame:
    """The status_confusion table (:data:`STATUS_CONFUSION_SCHEMA`) from the confusion partial sums."""
    rows = partials.groupby(["session_index", "metric"], sort=True)["value"].sum().reset_index()
    classes = rows["metric"].str.split("|", n=1, expand=True) if len(rows) else pd.DataFrame(columns=[0, 1])
    frame = pd.DataFrame({"session_index": rows["session_index"].astype("int32"), "true_class": classes[0],
                          "pred_class": classes[1], "n": rows["value"].round().astype("int64")})  # fmt: skip
    return frame.sort_values(["session_index", "true_class", "pred_class"], ignore_index=True)[STATUS_CONFUSION_SCHEMA.names]


def _finish_summary(partials: pd.DataFrame) -> pd.DataFrame:
    """Add up partition sums and derive ratios (pooled over lesions / sessions)."""
    if partials.empty:
        return pd.DataFrame(columns=SUMMARY_SCHEMA.names)
    partials = partials.assign(session_index=partials["session_index"].astype("Int32"))
    sums = partials.groupby(["scope", "session_index", "metric"], dropna=False, sort=True)["value"].sum().reset_index()
    derived = []
    for (scope, index), group in sums.groupby(["scope", "session_index"], dropna=False, sort=True):
        value = dict(zip(group["metric"], group["value"]))

        def ratio(a, b):
            return value.get(a, 0.0) / value[b] if value.get(b) else np.nan

        if scope == "session_index":
            derived.append((scope, index, "mean_pct_change_baseline", ratio("sum_pct_change_baseline", "n_pct_change_baseline")))
        if scope.startswith("status"):
            derived += [(scope, index, metric, v) for metric, v in ratios_of_counts(value).items()]
        if scope.startswith("eval"):
            tp, fp, fn = value.get("tp", 0.0), value.get("fp", 0.0), value.get("fn", 0.0)
            derived += [
                (scope, index, "precision", tp / (tp + fp) if tp + fp else np.nan),
                (scope, index, "recall", tp / (tp + fn) if tp + fn else np.nan),
                (scope, index, "f1", 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else np.nan),
                (scope, index, "mean_dice", ratio("sum_dice", "n_gt")),
                (scope, index, "cpm_at_r", ratio("n_within_r", "n_gt")),
                (scope, index, "cpm_at_radius", ratio("n_within_radius", "n_gt")),
                (scope, index, "dice_at_r", ratio("sum_dice_within_r", "n_within_r")),
                (scope, index, "mean_centre_distance_mm", ratio("sum_distance", "n_distance")),
            ]
    result = pd.concat([sums, pd.DataFrame(derived, columns=SUMMARY_SCHEMA.names)], ignore_index=True)
    result["session_index"] = result["session_index"].astype("Int32")
    result["value"] = result["value"].astype(float)
    return result.sort_values(["scope", "session_index", "metric"], na_position="first", kind="mergesort").reset_index(drop=True)


def _batches(files: Sequence[str | Path], size: int) -> list[list[str]]:
    files = sorted(str(f) for f in files)
    return [files[i : i + size] for i in range(0, len(files), size)]


def _read_sessions(sessions: pd.DataFrame | str | Path | None) -> pd.DataFrame | None:
    if sessions is None or isinstance(sessions, pd.DataFrame):
        return sessions
    path = Path(sessions)
    if not path.exists():
        raise InputError(path, "file not found")
    frame = pd.read_parquet(path, columns=["patient", "session", "session_index"])
    return frame


def registration_table(records: Iterable[tuple[str, str, int, str | Path]]) -> pd.DataFrame:
    """The registration table (:data:`REGISTRATION_SCHEMA`) from ``(patient, session, session_index,
    record)``: each pair's JSON record (``to_previous.json``); a pair without a record (not
    registered: its patient failed before) has no row."""
    rows = []
    for patient, session, session_index, path in records:
        try:
            record = json.loads(Path(path).read_text())
        except FileNotFoundError:
            continue
        except (OSError, ValueError) as err:
            raise InputError(path, f"cannot read the registration record ({err})") from None
        rows.append({"patient": patient, "session": session, "session_index": int(session_index), "passed": bool(record.get("passed")),
                     **{k: record.get(k) for k in ("similarity", "min_similarity", "shared_fraction", "error")}})  # fmt: skip
    frame = pd.DataFrame(rows, columns=REGISTRATION_SCHEMA.names)
    return frame.sort_values(["patient", "session_index"], ignore_index=True)


def aggregate_cohort(
    lesion_files: Sequence[str | Path],
    output_dir: str | Path,
    evaluation_files: Sequence[str | Path] = (),
    sessions: pd.DataFrame | str | Path | None = None,
    criteria: MetricsConfig = MetricsConfig(),
    radius_mm: float = 25.0,
    files_per_partition: int = 2000,
    num_workers: int | None = None,
    registration_records: Iterable[tuple[str, str, int, str | Path]] = (),
    status_files: Sequence[str | Path] = (),
) -> dict[str, int]:
    """Build the cohort dataset folder from per-patient lesion (and evaluation) tables, Parquet or Arrow
    IPC files (:func:`~lesionlocator.core.io.read_patient_table`).

    ``status_files``: per-patient status evaluations (:data:`STATUS_EVALUATION_SCHEMA`, written by
    :func:`lesionlocator.evaluate.longitudinal.evaluate_patient_longitudinal`), which give the
    status_evaluation and status_confusion tables and the ``status_*`` summary figures.
    ``sessions`` (a frame or the ingest manifest Parquet; columns patient, session,
    session_index) adds sessions without lesions; ``registration_records`` (patient, session,
    session_index, JSON record) fill the registration table (:func:`registration_table`). The
    folder is built next to ``output_dir`` and renamed into place, so a failed run leaves the
    previous dataset untouched. Returns row counts per table. Output is byte-identical for the same
    inputs.
    """
    import dask

    missing = [str(f) for f in list(lesion_files) + list(evaluation_files) + list(status_files) if not os.path.exists(f)]
    if missing:
        raise InputError(missing[0], f"file not found ({len(missing)} per-patient table(s) missing)")
    session_frame = _read_sessions(sessions)
    output_dir = Path(output_dir)
    with atomic_directory(output_dir) as work:
        tasks = []
        lesion_batches = _batches(lesion_files, files_per_partition)
        for part, batch in enumerate(lesion_batches):
            frame = dask.delayed(_read_batch)(batch, LESION_SCHEMA)
            tasks.append(dask.delayed(_process_lesions)(frame, part, work, session_frame, criteria))
        for part, batch in enumerate(_batches(evaluation_files, files_per_partition)):
            frame = dask.delayed(_read_batch)(batch, EVALUATION_SCHEMA)
            tasks.append(dask.delayed(_process_evaluation)(frame, part, work, radius_mm))
        for part, batch in enumerate(_batches(status_files, files_per_partition)):
            frame = dask.delayed(_read_batch)(batch, STATUS_EVALUATION_SCHEMA)
            tasks.append(dask.delayed(_process_status_evaluation)(frame, part, work))
        progress = Progress("aggregate", total=len(tasks), unit="batch", units="batches", logger=log)
        with progress, _batch_progress(progress):
            results = dask.compute(*tasks, scheduler="threads", num_workers=num_workers or min(4, os.cpu_count() or 1))
        seen = set().union(*(r[2] for r in results)) if results else set()
        if session_frame is not None and not set(session_frame["patient"]) <= seen:
            # patients of the manifest without any lesion row still get their sessions and patient rows
            rest = session_frame[~session_frame["patient"].isin(seen)]
            results = list(results) + [_process_lesions(LESION_SCHEMA.empty_table(), len(lesion_batches), work, rest, criteria)]
        counts: dict[str, int] = {}
        partials = []
        for partial, table_counts, _ in results:
            partials.append(partial)
            for name, n in table_counts.items():
                counts[name] = counts.get(name, 0) + n
        partials = pd.concat(partials, ignore_index=True) if partials else pd.DataFrame(columns=SUMMARY_SCHEMA.names)
        is_confusion = partials["scope"].eq(_CONFUSION_SCOPE)
        confusion = _confusion_of_partials(partials[is_confusion])
        _write_plain(confusion, STATUS_CONFUSION_SCHEMA, work / "status_confusion", 0)
        counts["status_confusion"] = len(confusion)
        summary = _finish_summary(partials[~is_confusion])
        _write_plain(summary, SUMMARY_SCHEMA, work / "summary", 0)
        counts["summary"] = len(summary)
        registration = registration_table(registration_records)
        _write_plain(registration, REGISTRATION_SCHEMA, work / "registration", 0)
        counts["registration"] = len(registration)
        for name in TABLE_SCHEMAS:
            (work / name).mkdir(exist_ok=True)
    log.info("cohort dataset -> %s (%s)", output_dir, ", ".join(f"{k}: {v}" for k, v in counts.items()))
    return counts


def _batch_progress(progress: Progress):
    """A dask callback that counts each finished batch (one ``_process_*`` task) on ``progress``."""
    from dask.callbacks import Callback

    def posttask(key, result, dsk, state, worker_id) -> None:
        name = str(key[0] if isinstance(key, tuple) else key)
        if name.startswith(("_process_lesions-", "_process_evaluation-", "_process_status_evaluation-")):
            table = name.removeprefix("_process_").split("-")[0]
            progress.advance(f"{table}: {result[1][table]} rows")

    return Callback(posttask=posttask)


def _process_lesions(lesions: pa.Table, part: int, work: Path, sessions, criteria) -> tuple[pd.DataFrame, dict, set]:
    frame = lesions.select(ASSESSED_COLUMNS).to_pandas()
    if sessions is not None and len(frame):
        sessions = sessions[sessions["patient"].isin(frame["patient"].unique())]
    session_frame, patient_frame = assess_response(frame, sessions, criteria)
    _write_partitioned(lesions, LESION_SCHEMA, work / "lesions", part)
    _write_plain(session_frame, SESSION_SCHEMA, work / "sessions", part)
    _write_plain(patient_frame, PATIENT_SCHEMA, work / "patients", part)
    counts = {"lesions": len(frame), "sessions": len(session_frame), "patients": len(patient_frame)}
    return _lesion_partials(frame, session_frame, patient_frame), counts, set(patient_frame["patient"])


def _process_evaluation(evaluation: pa.Table, part: int, work: Path, radius_mm: float) -> tuple[pd.DataFrame, dict, set]:
    frame = evaluation.select(_EVALUATION_INPUTS).to_pandas()
    metrics = session_metrics(frame, radius_mm)
    _write_partitioned(evaluation, EVALUATION_SCHEMA, work / "evaluation", part)
    _write_plain(metrics, SESSION_METRICS_SCHEMA, work / "session_metrics", part)
    counts = {"evaluation": len(frame), "session_metrics": len(metrics)}
    return _evaluation_partials(frame, radius_mm), counts, set()


def _process_status_evaluation(status: pa.Table, part: int, work: Path) -> tuple[pd.DataFrame, dict, set]:
    _write_partitioned(status, STATUS_EVALUATION_SCHEMA, work / "status_evaluation", part)
    frame = status.select(_STATUS_INPUTS).to_pandas()
    return _status_partials(frame), {"status_evaluation": len(frame)}, set()


def read_cohort_table(dataset_dir: str | Path, name: str, columns: Sequence[str] | None = None, filter=None) -> pd.DataFrame:
    """Read one table of a cohort dataset with its declared schema (partition key restored)."""
    if name not in TABLE_SCHEMAS:
        raise ValueError(f"unknown table {name!r}; one of {sorted(TABLE_SCHEMAS)}")
    schema = TABLE_SCHEMAS[name]
    folder = Path(dataset_dir) / name
    if not folder.is_dir():
        raise InputError(folder, "no such table in the cohort dataset")
    if name in PARTITIONED:
        partitioning = ds.partitioning(pa.schema([schema.field("session_index")]), flavor="hive")
        dataset = ds.dataset(folder, schema=schema, format="parquet", partitioning=partitioning)
    else:
        dataset = ds.dataset(folder, schema=schema, format="parquet")
    table = dataset.to_table(columns=list(columns) if columns else schema.names, filter=filter)
    sort = [c for c in ("patient", "session_index", "lesion_id", "gt_lesion_id", "pred_lesion_id", "scope", "metric") if c in table.column_names]
    return table.sort_by([(c, "ascending") for c in sort]).to_pandas() if sort else table.to_pandas()


# --- run manifest ---------------------------------------------------------------------------------

RUN_PACKAGES = ("lesionlocator", "numpy", "scipy", "pandas", "pyarrow", "dask", "SimpleITK", "torch", "nnunetv2",
                "snakemake", "pydantic", "connected-components-3d")  # fmt: skip


def write_run_manifest(
    path: str | Path,
    config,
    checkpoint: str | Path | None = None,
    timings: dict[str, float] | None = None,
    extra: dict | None = None,
) -> dict:
    """Write ``run.json``: config hash, package versions, checkpoint hash, timings (s), platform."""
    versions = package_versions(RUN_PACKAGES)
    checkpoint_info = None
    if checkpoint is not None:
        checkpoint = Path(checkpoint)
        if not checkpoint.exists():
            raise InputError(checkpoint, "checkpoint not found")
        checkpoint_info = {"path": str(checkpoint), "sha256": tree_sha256(checkpoint)}
    manifest = {
        "config_sha256": json_sha256(config),
        "packages": versions,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "checkpoint": checkpoint_info,
        "timings_s": dict(sorted((timings or {}).items())),
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if extra:
        manifest.update(extra)
    write_json(manifest, path)
    return manifest


def per_patient_files(paths: Iterable[str | Path]) -> list[Path]:
    """The per-patient tables named by ``paths`` (files, or folders of Parquet and Arrow IPC tables; helper
    for CLIs). In a folder, a table kept in both formats under one name (the pipeline's
    ``measurements.parquet`` and ``measurements.arrow``) counts once, as its Arrow copy."""
    out = []
    for path in map(Path, paths):
        if not path.is_dir():
            out.append(path)
            continue
        tables = {p.stem: p for p in sorted(path.glob("*.parquet"))}
        tables.update({p.stem: p for p in sorted(path.glob(f"*{ARROW_SUFFIX}"))})
        out += sorted(tables.values())
    return out
