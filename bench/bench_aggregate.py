"""Bench: aggregate 1,000,000 lesion-session rows from 10,000 per-patient files into the cohort dataset.

Setup (not timed): writes the per-patient lesion tables with the project's own writer
(``lesionlocator.core.io.write_patient_table``), 20 lesions x 5 sessions per patient.
Timed: ``lesionlocator.aggregate.cohort.aggregate_cohort`` (dask) in a fresh process, reporting wall
seconds, CPU seconds (user + system of that process, all its threads) and peak resident memory
(ru_maxrss of that process, which includes the interpreter and imports); then, in the same process,
``lesionlocator.measure.response.assess_response`` alone on all rows at once (wall and CPU seconds).

    .venv/bin/python bench/bench_aggregate.py                 # 10,000 files, 1,000,000 rows
    .venv/bin/python bench/bench_aggregate.py --patients 100  # smoke run
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

from lesionlocator.core.io import write_patient_table
from lesionlocator.measure.lesions import LESION_SCHEMA


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


def make_inputs(folder: Path, patients: int, lesions: int, sessions: int, seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    files = []
    for i in range(patients):
        path = folder / f"P{i:05d}.parquet"
        write_patient_table(synthetic_patient(rng, f"P{i:05d}", lesions, sessions), path)
        files.append(path)
    return files


def _timed_child(list_file: str, output: str, files_per_partition: int) -> None:
    import pyarrow.dataset as ds

    from lesionlocator.aggregate.cohort import aggregate_cohort
    from lesionlocator.measure.response import assess_response

    files = Path(list_file).read_text().split("\n")
    start, cpu = time.perf_counter(), time.process_time()
    counts = aggregate_cohort(files, output, files_per_partition=files_per_partition)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    lesions = ds.dataset(files, schema=LESION_SCHEMA, format="parquet").to_table().to_pandas()
    start, cpu = time.perf_counter(), time.process_time()
    assess_response(lesions)
    assess = {"assess_seconds": time.perf_counter() - start, "assess_cpu_seconds": time.process_time() - cpu, "assess_rows": len(lesions)}
    print(json.dumps({"seconds": seconds, "cpu_seconds": cpu_seconds, "peak_rss_mb": peak_mb, "counts": counts, **assess}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patients", type=int, default=10_000)
    parser.add_argument("--lesions", type=int, default=20, help="lesions per patient")
    parser.add_argument("--sessions", type=int, default=5, help="sessions per patient")
    parser.add_argument("--files-per-partition", type=int, default=1000)
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
        files = sorted(inputs.glob("*.parquet")) if inputs.is_dir() else []
        if len(files) != args.patients:
            inputs.mkdir(parents=True, exist_ok=True)
            files = make_inputs(inputs, args.patients, args.lesions, args.sessions)
        print(f"setup: {len(files)} files, {args.patients * args.lesions * args.sessions} rows in {time.perf_counter() - start:.1f} s")
        list_file = work / "files.txt"
        list_file.write_text("\n".join(map(str, files)))
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
