"""Target registration error and cost of the SimpleITK backend, per pair: wall and CPU seconds.

Cases:
* ``ct512``: a realistic CT, the embedded real CT resampled onto 512 x 512 x 168 voxels of
  0.8 x 0.8 x 2 mm; its follow-up is the same scan warped by a known rigid + smooth BSpline
  transform (tests/register/helpers.known_transform) on the same grid. TRE: |estimated(p) - true(p)|
  at body voxels (HU > -300) of the follow-up, every 5th voxel along each axis.
* ``synthetic``: every follow-up of a synthetic CT cohort and a synthetic MR cohort (seed 0,
  ``--patients`` patients x 3 sessions) against its previous session. TRE: the distance between each
  lesion's ground-truth centroid in the previous session and its follow-up centroid mapped through
  the transform (lesions present in both sessions; growth moves a centroid little, so this is an
  upper bound of the registration's own error near lesions).

Registrations run in this process on ``--threads`` SimpleITK threads; ``--set key=value`` overrides a
RegisterConfig field (repeatable), to compare settings.

    PYTHONPATH=. .venv/bin/python bench/bench_register_tre.py [--case ct512|synthetic|all] [--set bspline_spacing_mm=40]
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.bench_patient import clinical_grid  # noqa: E402
from lesionlocator.core.config import RegisterConfig, SyntheticConfig  # noqa: E402
from lesionlocator.register import build_registration  # noqa: E402
from tests.register.helpers import known_transform, landmark_errors  # noqa: E402

SOURCES = {"ct": "ct:data/real/example_ct.nii.gz", "mr": "mr:data/real/example_mr_sm.nii.gz"}


def timed_register(config: RegisterConfig, fixed: sitk.Image, moving: sitk.Image) -> tuple[sitk.Transform, float, float, dict]:
    registration = build_registration(config)
    wall, cpu = time.perf_counter(), time.process_time()
    transform = registration.register(fixed, moving)
    return transform, time.perf_counter() - wall, time.process_time() - cpu, registration.last_report


def case_ct512(config: RegisterConfig, seeds: list[int]) -> list[dict]:
    base = clinical_grid()  # linear interpolation, float32
    rows = []
    for seed in seeds:
        true = known_transform(base, "deformable", seed=seed)
        follow = sitk.Resample(base, base, true, sitk.sitkLinear, -1024.0)
        estimated, wall, cpu, report = timed_register(config, follow, base)
        errors = landmark_errors(estimated, true, follow)
        affine = landmark_errors(sitk.CompositeTransform([estimated.GetNthTransform(0)]), true, follow)
        rows.append({"pair": f"ct512 seed {seed}", "wall_s": wall, "cpu_s": cpu, "tre_mean": errors.mean(),
                     "tre_p95": np.percentile(errors, 95), "tre_max": errors.max(), "affine_tre_mean": affine.mean(),
                     "n": len(errors), "report": report})
    return rows


def centroids(labels: sitk.Image) -> dict[int, np.ndarray]:
    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.Execute(sitk.Cast(labels, sitk.sitkUInt32))
    return {int(label): np.asarray(stats.GetCentroid(label)) for label in stats.GetLabels()}


def case_synthetic(config: RegisterConfig, patients: int, folder: Path) -> list[dict]:
    from synthetic.cohort import generate_cohort

    rows = []
    for name, source in SOURCES.items():
        root = folder / name
        generate_cohort(SyntheticConfig(seed=0, n_patients=patients, n_sessions=3, sources=[source]), root)
        for patient in sorted(root.glob("sub-*")):
            sessions = sorted(patient.glob("ses-*"))
            for previous, current in itertools.pairwise(sessions):
                fixed = sitk.ReadImage(str(current / "image.nii.gz"), sitk.sitkFloat32)
                moving = sitk.ReadImage(str(previous / "image.nii.gz"), sitk.sitkFloat32)
                truth = root / "derivatives" / "groundtruth" / patient.name
                before = centroids(sitk.ReadImage(str(truth / previous.name / "lesions.nii.gz")))
                after = centroids(sitk.ReadImage(str(truth / current.name / "lesions.nii.gz")))
                estimated, wall, cpu, report = timed_register(config, fixed, moving)
                common = sorted(set(before) & set(after))
                errors = np.array([np.linalg.norm(np.subtract(estimated.TransformPoint(after[k].tolist()), before[k]))
                                   for k in common])
                rows.append({"pair": f"{name} {patient.name} {current.name}", "wall_s": wall, "cpu_s": cpu,
                             "tre_mean": errors.mean() if len(errors) else float("nan"),
                             "tre_max": errors.max() if len(errors) else float("nan"), "n": len(errors),
                             "size": fixed.GetSize(), "report": report})
    return rows


def print_rows(rows: list[dict]) -> None:
    for r in rows:
        extra = f" p95 {r['tre_p95']:.2f}, affine-only mean {r['affine_tre_mean']:.2f}" if "tre_p95" in r else ""
        print(f"  {r['pair']:28s} wall {r['wall_s']:6.1f} s  cpu {r['cpu_s']:6.1f} s  TRE mean {r['tre_mean']:.2f} "
              f"max {r['tre_max']:.2f} mm (n={r['n']}){extra}", flush=True)
    tre = [r["tre_mean"] for r in rows if np.isfinite(r["tre_mean"])]
    print(f"  total wall {sum(r['wall_s'] for r in rows):.1f} s, cpu {sum(r['cpu_s'] for r in rows):.1f} s; "
          f"mean of TRE means {np.mean(tre):.2f} mm, max of maxima {max(r['tre_max'] for r in rows if np.isfinite(r['tre_max'])):.2f} mm")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=["ct512", "synthetic", "all"], default="all")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--patients", type=int, default=2, help="patients per synthetic cohort")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="known-transform seeds of the ct512 case")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="RegisterConfig override (JSON value)")
    parser.add_argument("--verbose", action="store_true", help="log the backend's stage times")
    args = parser.parse_args()
    if args.verbose:
        logging.basicConfig(level=logging.DEBUG, format="    %(name)s: %(message)s")
        logging.getLogger("lesionlocator.core").setLevel(logging.INFO)
    overrides = {}
    for item in args.set:
        key, value = item.split("=", 1)
        overrides[key] = json.loads(value) if value[:1] in "[{0123456789.-tfn" else value
    config = RegisterConfig(threads=args.threads, **overrides)
    print(f"config overrides {overrides or 'none'}; threads {config.threads}")
    if args.case in ("ct512", "all"):
        print("ct512 (512 x 512 x 168, 0.8 x 0.8 x 2 mm):")
        print_rows(case_ct512(config, args.seeds))
    if args.case in ("synthetic", "all"):
        print(f"synthetic cohorts (seed 0, {args.patients} patients x 3 sessions, CT and MR):")
        with tempfile.TemporaryDirectory() as tmp:
            print_rows(case_synthetic(config, args.patients, Path(tmp)))


if __name__ == "__main__":
    main()
