"""Bench of one realistic CT patient through the whole workflow: wall, CPU seconds and peak memory per job.

    .venv/bin/python bench/bench_patient.py [--out DIR] [--cores 2] [--lesions 5] [--sessions 3]

The patient (issue #22's "realistic CT patient"): the embedded CT (``data/real/example_ct.nii.gz``,
3 mm) resampled onto a clinical grid, 512 x 512 x 168 voxels of 0.8 x 0.8 x 2 mm (cubic B-spline,
plus 8 HU of seeded noise so that the fine grid is not smoother than a real scan), used as the
synthetic generator's only source: 3 sessions, 5 lesions at baseline, default study config. The
cohort is generated first (not timed as patient compute), then ``snakemake --profile
profiles/default --cores 2`` runs every stage, and Snakemake's own ``benchmark:`` files give each
job's wall seconds, CPU seconds and peak resident memory (max_rss).

Printed: one row per job, the patient's critical path (:func:`critical_path`), the whole run's
wall and CPU seconds (Snakemake and every job), and the largest job's peak memory. Snakemake's
``cpu_time`` of a job covers only what its sampling saw; the whole run's CPU seconds are exact. Goal (issue #22): the whole patient <= 3 min wall and every job <= 3 GB.
"""

from __future__ import annotations

import argparse
import csv
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import yaml

REPO = Path(__file__).resolve().parent.parent
SIZE = (512, 512, 168)  # x, y, z voxels
SPACING = (0.8, 0.8, 2.0)  # mm


def clinical_grid(interpolator: int = sitk.sitkLinear, size=SIZE, spacing=SPACING) -> sitk.Image:
    """The embedded CT (float32) resampled onto ``size`` voxels (x, y, z) of ``spacing`` mm, centred on the
    original, with its direction; outside it -1024 HU. ``bench_register_tre.py`` registers this scan too."""
    source = sitk.ReadImage(str(REPO / "data/real/example_ct.nii.gz"), sitk.sitkFloat32)
    direction = np.asarray(source.GetDirection()).reshape(3, 3)
    centre = np.asarray(source.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in source.GetSize()]))
    origin = centre - direction @ ((np.asarray(size) - 1) / 2 * np.asarray(spacing))
    return sitk.Resample(source, list(size), sitk.Transform(), interpolator, origin.tolist(), list(spacing),
                         source.GetDirection(), -1024.0, sitk.sitkFloat32)


def clinical_ct(out: Path, seed: int = 0) -> Path:
    """The embedded CT on a 512 x 512 x 168, 0.8 x 0.8 x 2 mm grid (cubic B-spline), with 8 HU noise, as int16."""
    image = clinical_grid(sitk.sitkBSpline)
    array = sitk.GetArrayFromImage(image)
    array += np.random.default_rng(seed).normal(0.0, 8.0, array.shape).astype(np.float32)
    result = sitk.GetImageFromArray(np.clip(np.rint(array), -1024, 3071).astype(np.int16))
    result.CopyInformation(image)
    path = out / "ct_512x512x168.nii.gz"
    sitk.WriteImage(result, str(path), useCompression=True)
    return path


def read_benchmarks(results: Path) -> list[dict]:
    rows = []
    for tsv in sorted((results / "benchmarks").rglob("*.tsv")):
        with open(tsv) as handle:
            record = next(csv.DictReader(handle, delimiter="\t"))
        cpu = record.get("cpu_time", "NA")
        rows.append({
            "job": str(tsv.relative_to(results / "benchmarks").with_suffix("")),
            "wall_s": float(record["s"]),
            "cpu_s": float(cpu) if cpu not in ("NA", "") else float("nan"),
            "max_rss_mb": float(record["max_rss"]) if record["max_rss"] not in ("NA", "") else float("nan"),
        })
    return rows


def critical_path(wall: dict[str, float]) -> float:
    """Seconds along the patient's longest dependency chain: ingest, then the baseline segmentation and
    each follow-up's registration (independent), each tracking job after the previous one and its own
    registration, then measurement, evaluation, aggregation and the report."""
    ingest = wall.get("ingest/ingest_cohort", 0.0)
    ready = ingest + wall.get("segment_baseline/shard-0000", 0.0)
    t = 1
    while f"track_followup/shard-0000_t{t}" in wall:
        ready = max(ready, ingest + wall.get(f"register_pair/shard-0000_t{t}", 0.0)) + wall[f"track_followup/shard-0000_t{t}"]
        t += 1
    tail = ("measure_lesions/shard-0000", "evaluate_tracking/shard-0000", "aggregate/aggregate_cohort", "report/report_cohort")
    return ready + sum(wall.get(job, 0.0) for job in tail)


def build_cohort(out: Path, sessions: int, lesions: int) -> None:
    """The synthetic patient of the bench under ``out/cohort``, from :func:`clinical_ct`."""
    from lesionlocator.core.config import SyntheticConfig
    from synthetic.cohort import generate_cohort

    ct = clinical_ct(out)
    synthetic = SyntheticConfig(
        seed=7, n_patients=1, n_sessions=sessions, sources=[f"ct:{ct}"],
        organ_labels={str(ct): str(REPO / "data/real/example_seg.nii.gz")},
        lesions_per_patient=(lesions, lesions), p_new=0.5, p_vanish=0.0,
        spacing_jitter=0.0, fov_z_crop=0.0, output=out / "cohort",
    )
    generate_cohort(synthetic, out / "cohort")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="work folder (default: a temporary folder)")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--lesions", type=int, default=5)
    parser.add_argument("--sessions", type=int, default=3)
    args = parser.parse_args(argv)
    out = Path(args.out).resolve() if args.out else Path(tempfile.mkdtemp(prefix="bench_patient-"))
    out.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(REPO))

    start = time.perf_counter()
    if (out / "cohort").is_dir():  # made by an earlier run of this bench: the same seeded cohort
        shutil.rmtree(out / "results", ignore_errors=True)
    else:
        build_cohort(out, args.sessions, args.lesions)
        print(f"# cohort built in {time.perf_counter() - start:.0f} s: {out / 'cohort'}")
    study = {"results_dir": str(out / "results"), "cohort": {"root": str(out / "cohort")}}
    config = out / "study.yaml"
    config.write_text(yaml.safe_dump(study))
    command = [str(Path(sys.executable).parent / "snakemake"), "--profile", "profiles/default", "--cores", str(args.cores),
               "--configfile", str(config), "--quiet", "all"]
    start = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    process = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if process.returncode:
        print(process.stdout[-3000:], process.stderr[-6000:], sep="\n")
        return process.returncode
    rows = read_benchmarks(out / "results")
    print(f"{'job':40s} {'wall s':>8s} {'CPU s':>8s} {'peak MB':>8s}")
    for row in rows:
        print(f"{row['job']:40s} {row['wall_s']:8.1f} {row['cpu_s']:8.1f} {row['max_rss_mb']:8.0f}")
    print(f"# critical path (each job's own wall time, in dependency order): {critical_path({r['job']: r['wall_s'] for r in rows}):.0f} s")
    print(f"# whole run (snakemake, {args.cores} cores, ingest to report): {wall:.0f} s wall, "
          f"{after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime:.0f} CPU-s")
    print(f"# largest job peak: {max(r['max_rss_mb'] for r in rows):.0f} MB (goal: whole patient <= 180 s, every job <= 3072 MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
