"""Bench: aggregate 1,000,000 lesion-session rows from 10,000 per-patient files into the cohort dataset.

Setup (not timed): writes the per-patient lesion tables with the project's own writer
(``lesionlocator.core.io.write_patient_table``), 20 lesions x 5 sessions per patient, in the format
the pipeline's aggregation reads (``measurements.arrow``, Arrow IPC, which the measure stage writes
beside the users' ``measurements.parquet``), and with
``--evaluation`` the tables the real rule also reads when there is ground truth: per patient an
evaluation table (EVALUATION_SCHEMA) and a status evaluation (STATUS_EVALUATION_SCHEMA), one row per
lesion-session each (3 x 10,000 files, 3,000,000 rows), in the pipeline's format (Arrow IPC, ``.arrow``).
Timed: ``lesionlocator.aggregate.cohort.aggregate_cohort`` (dask) in a fresh process, reporting wall
seconds, CPU seconds (user + system of that process, all its threads) and peak resident memory
(ru_maxrss of that process, which includes the interpreter and imports); then, in the same process,
``lesionlocator.measure.response.assess_response`` alone on all rows at once (wall and CPU seconds).

    .venv/bin/python bench/bench_aggregate.py                 # 10,000 files, 1,000,000 rows
    .venv/bin/python bench/bench_aggregate.py --patients 100  # smoke run
    .venv/bin/python bench/bench_aggregate.py --evaluation    # with the evaluation tables
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from lesionlocator.core.config import MetricsConfig
from lesionlocator.core.io import read_patient_table, write_patient_table
from lesionlocator.core.layout import ResultsLayout
from lesionlocator.evaluate.longitudinal import DECIDED, FLAGGED, STATUS_EVALUATION_SCHEMA
from lesionlocator.evaluate.tracking import EVALUATION_SCHEMA
from lesionlocator.measure.lesions import LESION_SCHEMA

#: The tables the pipeline aggregates are Arrow IPC files (``measurements.arrow``, ``evaluation.arrow``,
#: ``status_evaluation.arrow``).
LESION_SUFFIX = ResultsLayout(Path(".")).measurements_arrow("P").suffix
EVALUATION_SUFFIX = ResultsLayout(Path(".")).evaluation("P").suffix


def synthetic_patient(rng: np.random.Generator, patient: str, n_lesions: int, n_sessions: int) -> pa.Table:
    """A plausible lesion table: diameters 5-60 mm growing or shrinking, a few lesions vanishing."""
    session = np.repeat(np.arange(n_sessions), n_lesions)
    lesion = np.tile(np.arange(1, n_lesions + 1), n_sessions)
    base = rng.uniform(5, 60, n_lesions)
    growth = rng.normal(1.0, 0.3, n_lesions).clip(0.2, None)
    diameter = base[lesion - 1] * growth[lesion - 1] ** session
    diameter[(rng.random(diameter.size) < 0.05) & (session > 0)] = 0.0
    voxels = np.round((diameter / 2.0) ** 3 * 4.19).astype(np.int64)
    diameter[voxels == 0] = 0.0
    n = diameter.size
    present = voxels > 0
    return pa.table(
        {
            "patient": [patient] * n,
            "session": [f"ses-{i:02d}" for i in session],
            "session_index": session.astype(np.int32),
            "lesion_id": lesion.astype(np.int64),
            "status": np.where(present, "present", "vanished"),
            "by_fallback": np.zeros(n, bool),
            "is_new": np.zeros(n, bool),
            "first_session_index": np.zeros(n, np.int32),
            "new_lesion": pa.nulls(n, pa.string()),
            "reader": pa.nulls(n, pa.string()),
            "needs_review": np.zeros(n, bool),
            "review_reason": pa.nulls(n, pa.string()),
            "organ": pa.nulls(n, pa.string()),
            "n_fragments": present.astype(np.int32),
            "voxel_count": voxels,
            "volume_ml": voxels * 0.001,
            "longest_diameter_mm": diameter,
            "short_axis_mm": diameter * 0.6,
            "diameter_slice": pa.array(np.where(present, 10, 0), pa.int32(), mask=~present),
            "slice_thickness_mm": np.full(n, 1.0),
            "centroid_x_mm": pa.array(rng.normal(0, 50, n), mask=~present),
            "centroid_y_mm": pa.array(rng.normal(0, 50, n), mask=~present),
            "centroid_z_mm": pa.array(rng.normal(0, 50, n), mask=~present),
            "mean_intensity": pa.array(rng.normal(40, 10, n), mask=~present),
        },
        schema=LESION_SCHEMA,
    )


def synthetic_evaluation(rng: np.random.Generator, patient: str, n_lesions: int, n_sessions: int) -> tuple[pa.Table, pa.Table]:
    """Plausible evaluation and status evaluation tables: one row per lesion-session, 85 % detected
    (tp), 10 % missed (fn), 5 % false positives (no GT lesion); most statuses right."""
    session = np.repeat(np.arange(n_sessions), n_lesions)
    lesion = np.tile(np.arange(1, n_lesions + 1), n_sessions).astype(np.int64)
    n = session.size
    detection = rng.choice(np.array(["tp", "fn", "fp"]), n, p=[0.85, 0.10, 0.05])
    is_gt, matched = detection != "fp", detection != "fn"
    dice = np.where(matched & is_gt, rng.uniform(0.5, 0.95, n), 0.0)
    volume = rng.uniform(0.1, 50.0, n)
    distance = rng.uniform(0.0, 10.0, n)
    names = [patient] * n
    sessions = [f"ses-{i:02d}" for i in session]
    evaluation = pa.table(
        {
            "patient": names, "session": sessions, "session_index": session.astype(np.int32),
            "gt_lesion_id": pa.array(lesion, mask=~is_gt), "pred_lesion_id": pa.array(lesion, mask=~matched),
            "detection": detection,
            "gt_volume_ml": pa.array(volume, mask=~is_gt), "pred_volume_ml": pa.array(volume * 1.05, mask=~matched),
            "dice": pa.array(dice, mask=~is_gt), "iou": pa.array(dice / (2 - dice), mask=~is_gt),
            "centre_distance_mm": pa.array(distance, mask=~(is_gt & matched)),
            "gt_equivalent_radius_mm": pa.array(np.cbrt(volume * 1000 * 3 / (4 * np.pi)), mask=~is_gt),
            "det_pred_lesion_id": pa.array(lesion, mask=~matched), "det_iou": pa.array(dice / (2 - dice), mask=~matched),
        },
        schema=EVALUATION_SCHEMA,
    )  # fmt: skip
    true_class = np.where(is_gt, rng.choice(np.array(DECIDED), n, p=[0.8, 0.1, 0.05, 0.05]), "none")
    wrong = rng.random(n) < 0.1
    pred_class = np.where(~matched, "none", np.where(wrong, rng.choice(np.array(DECIDED + FLAGGED), n), true_class))
    status = pa.table(
        {
            "patient": names, "session": sessions, "session_index": session.astype(np.int32),
            "gt_lesion_id": pa.array(lesion, mask=~is_gt), "pred_lesion_id": pa.array(lesion, mask=~matched),
            "true_status": pa.array(true_class, mask=~is_gt), "pred_status": pa.array(pred_class, mask=~matched),
            "true_class": true_class, "pred_class": pred_class,
            "correct": (true_class == pred_class) & np.isin(pred_class, DECIDED), "flagged": np.isin(pred_class, FLAGGED),
            "gt_is_new": (true_class == "new"), "pred_is_new": (pred_class == "new"),
            "new_candidate": (pred_class == "new") & (session > 0),
            "centroid_distance_mm": pa.array(distance, mask=~(is_gt & matched)),
        },
        schema=STATUS_EVALUATION_SCHEMA,
    )  # fmt: skip
    return evaluation, status


def make_inputs(folder: Path, patients: int, lesions: int, sessions: int, evaluation: bool = False, seed: int = 0) -> dict[str, list[Path]]:
    """Per-patient tables under ``folder``: ``{"lesions": [...], "evaluation": [...], "status": [...]}``."""
    rng = np.random.default_rng(seed)
    files = {"lesions": [], "evaluation": [], "status": []}
    for i in range(patients):
        name = f"P{i:05d}"
        path = folder / f"{name}{LESION_SUFFIX}"
        write_patient_table(synthetic_patient(rng, name, lesions, sessions), path)
        files["lesions"].append(path)
        if evaluation:
            for kind, table in zip(("evaluation", "status"), synthetic_evaluation(rng, name, lesions, sessions)):
                (folder / kind).mkdir(exist_ok=True)
                path = folder / kind / f"{name}{EVALUATION_SUFFIX}"
                write_patient_table(table, path)
                files[kind].append(path)
    return files


def _timed_child(list_file: str, output: str, files_per_partition: int) -> None:
    from lesionlocator.aggregate.cohort import aggregate_cohort
    from lesionlocator.measure.response import assess_response

    inputs = json.loads(Path(list_file).read_text())
    files = inputs["lesions"]
    start, cpu = time.perf_counter(), time.process_time()
    counts = aggregate_cohort(files, output, evaluation_files=inputs["evaluation"], status_files=inputs["status"],
                              files_per_partition=files_per_partition)  # fmt: skip
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    lesions = pa.concat_tables([read_patient_table(path) for path in files]).to_pandas()
    start, cpu = time.perf_counter(), time.process_time()
    assess_response(lesions)
    assess = {"assess_seconds": time.perf_counter() - start, "assess_cpu_seconds": time.process_time() - cpu, "assess_rows": len(lesions)}
    print(json.dumps({"seconds": seconds, "cpu_seconds": cpu_seconds, "peak_rss_mb": peak_mb, "counts": counts, **assess}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patients", type=int, default=10_000)
    parser.add_argument("--lesions", type=int, default=20, help="lesions per patient")
    parser.add_argument("--sessions", type=int, default=5, help="sessions per patient")
    parser.add_argument("--files-per-partition", type=int, default=MetricsConfig().files_per_partition)
    parser.add_argument("--evaluation", action="store_true", help="also the per-patient evaluation and status evaluation tables")
    parser.add_argument("--workdir", help="keep inputs/outputs here (default: a temporary folder)")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _timed_child(args.child[0], args.child[1], int(args.child[2]))
        return
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.workdir or tmp)
        inputs = work / "per_patient"
        start = time.perf_counter()
        kinds = ("lesions", "evaluation", "status") if args.evaluation else ("lesions",)
        suffix = {"lesions": LESION_SUFFIX, "evaluation": EVALUATION_SUFFIX, "status": EVALUATION_SUFFIX}
        found = {kind: sorted((inputs / ("" if kind == "lesions" else kind)).glob(f"*{suffix[kind]}")) for kind in kinds}
        if any(len(found[kind]) != args.patients for kind in kinds):
            inputs.mkdir(parents=True, exist_ok=True)
            found = make_inputs(inputs, args.patients, args.lesions, args.sessions, evaluation=args.evaluation)
        files = {kind: [str(p) for p in found.get(kind, [])] for kind in ("lesions", "evaluation", "status")}
        n_files = sum(map(len, files.values()))
        print(f"setup: {n_files} files, {n_files * args.lesions * args.sessions} rows in {time.perf_counter() - start:.1f} s")
        list_file = work / "files.json"
        list_file.write_text(json.dumps(files))
        out = subprocess.run(
            [sys.executable, __file__, "--child", str(list_file), str(work / "cohort"), str(args.files_per_partition)],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        result = json.loads(out.stdout.strip().splitlines()[-1])
        size_mb = sum(p.stat().st_size for p in (work / "cohort").rglob("*") if p.is_file()) / 1e6
        print(f"aggregate: {result['seconds']:.2f} s wall, {result['cpu_seconds']:.2f} s CPU, peak RSS {result['peak_rss_mb']:.0f} MB,"
              f" dataset {size_mb:.1f} MB")
        print(f"assess_response alone: {result['assess_rows']} rows in {result['assess_seconds']:.2f} s wall,"
              f" {result['assess_cpu_seconds']:.2f} s CPU")
        print("rows: " + ", ".join(f"{k} {v}" for k, v in result["counts"].items()))


if __name__ == "__main__":
    main()
