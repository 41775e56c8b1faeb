"""Bench: the new-lesion candidate detector on a cohort it was not tuned on (issue 24).

``config/synth_longitudinal.yaml``'s generator settings with another seed (default 25) and fewer patients
(default 16 x 4 sessions): every follow-up is registered to its previous session with the default
registration (``register_pair``), the previous scan is resampled onto the follow-up's detection grid
(``previous_on_followup``) and :func:`lesionlocator.track.candidates.find_candidates` runs at each
threshold given. The exclusion zone around tracked lesions comes from the *true* lesions (every lesion
of the follow-up and the previous session but this session's new ones), so the figures are those of the
detector alone, not of the tracker's misses. A candidate is a true one when a true new lesion has a
voxel within one voxel of its centre.

Prints, per threshold, the new lesions found at first sighting, the false candidates per follow-up, and
the scores of the true and the false candidates (for ``track.candidate_confirm_score``), with wall and
CPU seconds (the machine may be shared). Registrations and the synthetic cohort are kept in ``--out``
and reused by a rerun.

    .venv/bin/python bench/bench_candidates.py [--seed 25] [--patients 16] [--thresholds 3.0 3.5 4.0] [--out DIR]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk
import yaml

REPO = Path(__file__).resolve().parent.parent


def _cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    return own.ru_utime + own.ru_stime


def follow_ups(out: Path, seed: int, patients: int):
    """Yield (name, follow-up image, previous scan on its detection grid, valid, exclude, true new-lesion
    labels on that grid) for every follow-up of the generated cohort."""
    from lesionlocator.core.config import RegisterConfig, SyntheticConfig, TrackConfig
    from lesionlocator.core.io import Geometry
    from lesionlocator.register.base import load_transform, register_pair
    from lesionlocator.track.candidates import detection_reference
    from lesionlocator.track.followup import near_tracked_lesions, previous_on_followup
    from synthetic.cohort import generate_cohort

    settings = yaml.safe_load((REPO / "config" / "synth_longitudinal.yaml").read_text())["synthetic"]
    sources = [source.split(":", 1) for source in settings["sources"]]  # kind:path, relative to the repository
    settings.update(seed=seed, n_patients=patients, sources=[f"{kind}:{REPO / path}" for kind, path in sources],
                    organ_labels={str(REPO / k): str(REPO / v) for k, v in settings["organ_labels"].items()})
    cohort = out / "cohort"
    truth_path = cohort / "derivatives" / "groundtruth" / "groundtruth.parquet"
    if not truth_path.is_file():
        generate_cohort(SyntheticConfig(**{**settings, "output": str(cohort)}), cohort)
    truth = pd.read_parquet(truth_path)
    register, track = RegisterConfig(), TrackConfig()
    for patient in sorted(truth.patient.unique()):
        n_sessions = int(truth[truth.patient == patient].session_index.max()) + 1
        for t in range(1, n_sessions):
            now, before = f"{t + 1:02d}", f"{t:02d}"
            fixed = cohort / f"sub-{patient}" / f"ses-{now}" / "image.nii.gz"
            moving = cohort / f"sub-{patient}" / f"ses-{before}" / "image.nii.gz"
            transform_path = out / "transforms" / f"{patient}_{now}.tfm"
            transform_path.parent.mkdir(parents=True, exist_ok=True)
            register_pair(fixed, moving, transform_path, register)
            transform = load_transform(transform_path)
            image, previous = sitk.ReadImage(str(fixed)), sitk.ReadImage(str(moving))
            labels_dir = cohort / "derivatives" / "groundtruth" / f"sub-{patient}"
            lesions = sitk.GetArrayFromImage(sitk.ReadImage(str(labels_dir / f"ses-{now}" / "lesions.nii.gz")))
            previous_lesions = sitk.ReadImage(str(labels_dir / f"ses-{before}" / "lesions.nii.gz"))
            new_ids = truth[(truth.patient == patient) & (truth.session == now) & (truth.status == "new")].lesion_id.tolist()
            tracked = np.where(np.isin(lesions, new_ids), 0, lesions).astype(np.uint32)
            exclude = near_tracked_lesions(tracked, sitk.GetArrayFromImage(previous_lesions), Geometry.of(previous_lesions), image,
                                           transform, track.candidate_exclusion_mm)
            warped, valid = previous_on_followup(previous, image, transform)
            new = sitk.GetImageFromArray(np.where(np.isin(lesions, new_ids), lesions, 0).astype(np.uint32))
            new.CopyInformation(image)
            new_on_grid = sitk.Resample(new, detection_reference(image), sitk.Transform(), sitk.sitkNearestNeighbor, 0)
            yield f"{patient}_{now}", image, warped, valid, exclude, sitk.GetArrayFromImage(new_on_grid), len(new_ids)


def main() -> None:
    from lesionlocator.core.config import TrackConfig
    from lesionlocator.track.candidates import detection_reference, find_candidates

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=25)
    parser.add_argument("--patients", type=int, default=16)
    parser.add_argument("--thresholds", type=float, nargs="+", default=[3.0, 3.5, 4.0])
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="bench_candidates_"))
    out.mkdir(parents=True, exist_ok=True)
    print(f"outputs under {out}")
    wall, cpu = time.perf_counter(), _cpu()
    scans = list(follow_ups(out, args.seed, args.patients))
    print(f"cohort seed {args.seed}: {len(scans)} follow-ups, {sum(s[-1] for s in scans)} new lesions; made and registered in "
          f"{time.perf_counter() - wall:.0f} s wall, {_cpu() - cpu:.0f} CPU-s")
    for threshold in args.thresholds:
        wall, cpu = time.perf_counter(), _cpu()
        found, false, scores = 0, 0, {True: [], False: []}
        for _, image, warped, valid, exclude, truth, _ in scans:
            result = find_candidates(image, warped, valid, exclude, TrackConfig(candidate_threshold=threshold))
            grid = (truth.shape != tuple(image.GetSize()[::-1]))
            hit = set()
            for candidate in result.candidates:
                centre = candidate.centre_zyx
                if grid:  # candidate centres are follow-up voxels; the truth is on the detection grid
                    centre = detection_reference(image).TransformPhysicalPointToContinuousIndex(
                        image.TransformContinuousIndexToPhysicalPoint([float(v) for v in centre[::-1]]))[::-1]
                z, y, x = (int(round(v)) for v in centre)
                near = truth[max(z - 1, 0):z + 2, max(y - 1, 0):y + 2, max(x - 1, 0):x + 2]
                true = bool((near > 0).any())
                if true:
                    hit.add(int(near[near > 0][0]))
                else:
                    false += 1
                scores[true].append(round(candidate.score, 1))
            found += len(hit)
        n_new = sum(s[-1] for s in scans)
        print(f"threshold {threshold}: new lesions found {found}/{n_new} ({found / max(n_new, 1):.2f}), false candidates "
              f"{false} ({false / len(scans):.2f} per follow-up); {time.perf_counter() - wall:.0f} s wall, {_cpu() - cpu:.0f} CPU-s")
        print(f"  scores of true candidates {sorted(scores[True])}")
        print(f"  scores of false candidates {sorted(scores[False])}")


if __name__ == "__main__":
    main()
