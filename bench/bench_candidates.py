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

``--froc``: one more run at the lowest threshold given (up to 50 candidates per follow-up) prints the
recall against false candidates per follow-up at score cuts (a free-response curve of the detector), and
why each true new lesion the lowest cut misses is missed (:func:`miss_cause`): outside or at the edge of
the previous scan's field of view, at the body surface, no contrast to its shell beyond its noise, or a
score below the cut (or the detector's gates).

    .venv/bin/python bench/bench_candidates.py [--seed 25] [--patients 16] [--thresholds 3.0 3.5 4.0] [--froc] [--out DIR]
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


def _candidate_hits(image, truth, candidates) -> tuple[dict[int, float], list[float]]:
    """(true new-lesion ID -> best score of a candidate on it, scores of the false candidates). A candidate
    is on a true new lesion when one has a voxel within one voxel of its centre (the detection grid)."""
    from lesionlocator.track.candidates import detection_reference

    reference = detection_reference(image) if truth.shape != tuple(image.GetSize()[::-1]) else None
    hits: dict[int, float] = {}
    false: list[float] = []
    for candidate in candidates:
        centre = candidate.centre_zyx
        if reference is not None:  # candidate centres are follow-up voxels; the truth is on the detection grid
            centre = reference.TransformPhysicalPointToContinuousIndex(
                image.TransformContinuousIndexToPhysicalPoint([float(v) for v in centre[::-1]]))[::-1]
        z, y, x = (int(round(v)) for v in centre)
        near = truth[max(z - 1, 0):z + 2, max(y - 1, 0):y + 2, max(x - 1, 0):x + 2]
        if (near > 0).any():
            lesion = int(near[near > 0][0])
            hits[lesion] = max(hits.get(lesion, 0.0), candidate.score)
        else:
            false.append(candidate.score)
    return hits, false


def search_maps(image, valid) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A follow-up on the detection grid with the maps the search's region is cut from
    (:func:`lesionlocator.track.candidates.search_depths`): (scan, spacing z y x mm, depth in the body,
    depth in the previous field of view)."""
    from lesionlocator.track import candidates as detector

    reference = detector.detection_reference(image)
    spacing = np.asarray(reference.GetSpacing(), float)[::-1]
    current = sitk.GetArrayFromImage(sitk.Resample(sitk.Cast(image, sitk.sitkFloat32), reference, sitk.Transform(),
                                                   sitk.sitkLinear, 0.0))
    _, body_depth, fov_depth = detector.search_depths(current, valid.astype(bool), spacing)
    return current, spacing, body_depth, fov_depth


def miss_cause(maps, valid, mask) -> str:
    """Why the detector cannot see a true new lesion (``mask``: bool, z y x of the detection grid; ``maps``:
    :func:`search_maps` of its follow-up), by the first that applies: less than half of it inside the
    previous scan's field of view; deepest voxel within ``FOV_MARGIN_MM`` of that field's edge or within
    ``SURFACE_MARGIN_MM`` of the body surface (the search skips both); its contrast to its 2-6 mm shell
    below the shell's robust SD now; else the score or the gates."""
    from lesionlocator.track import candidates as detector
    from lesionlocator.track.evidence import lesion_levels

    current, spacing, body_depth, fov_depth = maps
    if valid[mask].mean() < 0.5:
        return "outside the previous field of view"
    if fov_depth[mask].max() <= detector.FOV_MARGIN_MM:
        return "at the edge of the previous field of view"
    if body_depth[mask].max() <= detector.SURFACE_MARGIN_MM:
        return "at the body surface"
    levels = lesion_levels(current, mask, spacing)
    if levels is None or abs(levels.contrast) < levels.noise:
        return "contrast below its shell's noise"
    return "score below the cut, or gated"


def froc(scans, threshold: float) -> None:
    """Recall at first sighting against false candidates per follow-up at score cuts, from one run at
    ``threshold`` (up to 50 candidates per follow-up), and the causes of the misses at that threshold."""
    from collections import Counter

    from lesionlocator.core.config import TrackConfig
    from lesionlocator.track.candidates import find_candidates

    wall, cpu = time.perf_counter(), _cpu()
    best: list[float] = []  # per true new lesion: its best candidate score (0: none)
    false: list[float] = []
    causes: Counter = Counter()
    for _, image, warped, valid, exclude, truth, _ in scans:
        result = find_candidates(image, warped, valid, exclude, TrackConfig(candidate_threshold=threshold, candidate_max=50))
        hits, wrong = _candidate_hits(image, truth, result.candidates)
        false += wrong
        missed = [lesion for lesion in (int(v) for v in np.unique(truth[truth > 0])) if lesion not in hits]
        best += list(hits.values()) + [0.0] * len(missed)
        maps = search_maps(image, valid) if missed else None  # once per follow-up
        for lesion in missed:
            causes[miss_cause(maps, valid, truth == lesion)] += 1
    best_scores, false_scores = np.asarray(best), np.asarray(false)
    print(f"free-response curve (one run at {threshold}; {time.perf_counter() - wall:.0f} s wall, {_cpu() - cpu:.0f} CPU-s):")
    for cut in sorted({threshold, 3.0, 3.5, 4.0, 5.0, 6.0}):
        if cut >= threshold:
            found = int((best_scores >= cut).sum())
            print(f"  score >= {cut}: {found}/{best_scores.size} new lesions ({found / max(best_scores.size, 1):.2f}) at "
                  f"{(false_scores >= cut).sum() / len(scans):.2f} false candidates per follow-up")
    print(f"  missed at {threshold}: " + "; ".join(f"{cause} {n}" for cause, n in causes.most_common()))


def main() -> None:
    from lesionlocator.core.config import TrackConfig
    from lesionlocator.track.candidates import find_candidates

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=25)
    parser.add_argument("--patients", type=int, default=16)
    parser.add_argument("--thresholds", type=float, nargs="+", default=[3.0, 3.5, 4.0])
    parser.add_argument("--froc", action="store_true", help="also the free-response curve and the causes of misses")
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
            hits, wrong = _candidate_hits(image, truth, result.candidates)
            found += len(hits)
            false += len(wrong)
            scores[True] += [round(v, 1) for v in hits.values()]
            scores[False] += [round(v, 1) for v in wrong]
        n_new = sum(s[-1] for s in scans)
        print(f"threshold {threshold}: new lesions found {found}/{n_new} ({found / max(n_new, 1):.2f}), false candidates "
              f"{false} ({false / len(scans):.2f} per follow-up); {time.perf_counter() - wall:.0f} s wall, {_cpu() - cpu:.0f} CPU-s")
        print(f"  scores of true candidates {sorted(scores[True])}")
        print(f"  scores of false candidates {sorted(scores[False])}")
    if args.froc:
        froc(scans, min(args.thresholds))


if __name__ == "__main__":
    main()
