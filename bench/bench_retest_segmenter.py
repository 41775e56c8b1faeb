"""What the measurement and the segmenter's settings do to the repositioned test-retest (issue 24).

The embedded CT's retest patient (bench_longitudinal.py --parts retest: seed 4, 3 lesions of 18-30 mm,
sessions 2-5 the baseline resampled by cubic B-spline through 4 degrees of rotation per session) is
segmented directly, each lesion from the baseline's box carried by the known transform (centre mapped,
size in mm kept, as the anchored tracker does), so that every variant sees the same prompts:

* ``network``: the bundled model as configured (mirroring, box cut); volumes from the binary mask
  (``binary``), from the sum of the foreground probability (``soft``); longest axial diameter from the
  voxel outline (``diameter``, as measured now) and from the 0.5 iso-contour of the probability on each
  slice (``subvoxel_diameter``, marching squares);
* ``partial_volume``: the same masks, volume corrected from the intensities at their boundary (Kuhnigk
  et al., IEEE TMI 2006;25:417-434): core = mask eroded by a voxel counts 1, each voxel of the band up
  to the mask dilated by 2 voxels counts (I - background) / (core - background), medians of the core
  and of a shell 3-5 voxels out; ``partial_volume_clipped`` clips those fractions to 0..1;
* ``smoothed``: every scan smoothed by a Gaussian of 0.7 voxel before the network;
* ``shifted8``: the probabilities of 8 copies of the scan resampled (cubic B-spline) on the grid shifted
  by 0 or half a voxel along each axis, mapped back (linear) and averaged.

Prints per variant and measure the range over lesions x follow-ups of the change from the baseline
(volume %, diameter mm), the range of the volume's error against the ground truth sampled on the same
grid (synthetic.retest.repositioned_truth, voxel count), and CPU seconds per session.

    PYTHONPATH=. .venv/bin/python bench/bench_retest_segmenter.py [--seed 4] [--source ct:data/real/example_ct.nii.gz] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk
from scipy import ndimage
from scipy.spatial import ConvexHull
from skimage import measure as skmeasure

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

N_SESSIONS = 5
CUBE = np.ones((3, 3, 3), bool)


def carried_boxes(prompts: list[dict], image: sitk.Image, transform: sitk.Transform | None):
    """Box prompts (voxel z, y, x) of the baseline's world boxes: centre through the inverse of
    ``transform`` (session world -> baseline world), size in mm kept."""
    from lesionlocator.segment.api import Prompt

    boxes = []
    for lesion in prompts:
        lo, hi = np.asarray(lesion["box"]["min"]), np.asarray(lesion["box"]["max"])
        centre = (lo + hi) / 2
        if transform is not None:
            centre = np.asarray(transform.GetInverse().TransformPoint(tuple(centre.tolist())))
        index = np.asarray(image.TransformPhysicalPointToContinuousIndex(tuple(centre.tolist())))
        half = (hi - lo) / 2 / np.asarray(image.GetSpacing())
        boxes.append(Prompt(lesion["id"], "box", box=(tuple((index - half)[::-1]), tuple((index + half)[::-1]))))
    return boxes


def probabilities(segmenter, image: sitk.Image, prompts) -> dict[int, np.ndarray]:
    shape = tuple(reversed(image.GetSize()))
    maps = {}
    for prediction in segmenter.predictions(image, prompts):
        full = np.zeros(shape, np.float32)
        full[prediction.slices] = prediction.probability
        maps[prediction.lesion_id] = full
    return maps


def shifted_probabilities(segmenter, image: sitk.Image, prompts) -> dict[int, np.ndarray]:
    """Mean probability of the 8 half-voxel-shifted copies of ``image``, on ``image``'s grid."""
    from lesionlocator.segment.api import Prompt

    offsets = [(a, b, c) for a in (0.0, 0.5) for b in (0.0, 0.5) for c in (0.0, 0.5)]
    total: dict[int, np.ndarray] = {}
    background = float(sitk.GetArrayViewFromImage(image).min())
    for offset in offsets:  # (x, y, z) voxels
        grid = sitk.Image(image.GetSize(), sitk.sitkFloat32)
        grid.CopyInformation(image)
        grid.SetOrigin(image.TransformContinuousIndexToPhysicalPoint(offset))
        moved = sitk.Resample(image, grid, sitk.Transform(), sitk.sitkBSpline, background, sitk.sitkFloat32)
        shift = np.asarray(offset)[::-1]
        moved_prompts = [Prompt(p.lesion_id, "box", box=(tuple(np.asarray(p.box[0]) - shift), tuple(np.asarray(p.box[1]) - shift)))
                         for p in prompts]
        for lesion_id, probability in probabilities(segmenter, moved, moved_prompts).items():
            field = sitk.GetImageFromArray(probability)
            field.CopyInformation(grid)
            back = sitk.GetArrayFromImage(sitk.Resample(field, image, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32))
            total[lesion_id] = total.get(lesion_id, 0.0) + back / len(offsets)
    return total


def subvoxel_diameter(probability: np.ndarray, spacing_xyz) -> float:
    """Longest axial diameter (mm) of the 0.5 iso-contour of ``probability`` (z, y, x) over its slices."""
    scale = np.array([spacing_xyz[1], spacing_xyz[0]])
    longest = 0.0
    for z in np.flatnonzero((probability > 0.5).any(axis=(1, 2))):
        contours = skmeasure.find_contours(np.pad(probability[z], 1), 0.5)
        points = np.concatenate(contours) * scale
        if len(points) < 3:
            continue
        hull = points[ConvexHull(points).vertices]
        longest = max(longest, float(np.sqrt(((hull[:, None] - hull[None]) ** 2).sum(-1)).max()))
    return longest


def partial_volume(image: np.ndarray, mask: np.ndarray, others: np.ndarray, clip: bool) -> float:
    """Partial-volume corrected voxel count of ``mask`` (see the module docstring)."""
    core = ndimage.binary_erosion(mask, CUBE)
    core = core if core.any() else mask
    band = ndimage.binary_dilation(mask, CUBE, iterations=2) & ~core
    shell = ndimage.binary_dilation(mask, CUBE, iterations=5) & ~ndimage.binary_dilation(mask, CUBE, iterations=3) & ~others
    lesion, background = np.median(image[core]), np.median(image[shell])
    fraction = (image[band] - background) / (lesion - background)
    return float(core.sum() + (np.clip(fraction, 0.0, 1.0) if clip else fraction).sum())


def run(out: Path, seed: int = 4, source: str = "ct:data/real/example_ct.nii.gz") -> pd.DataFrame:
    from lesionlocator.core.config import SegmentConfig, SyntheticConfig
    from lesionlocator.core.io import Geometry, read_image
    from lesionlocator.measure.lesions import measure_labels
    from lesionlocator.segment.nnunet import NnUNetSegmenter
    from synthetic.cohort import generate_cohort
    from synthetic.retest import repositioned_truth, repositioning, write_retest_cohort

    config = SyntheticConfig(seed=seed, n_patients=1, n_sessions=1, sources=[source],
                             lesions_per_patient=(3, 3), diameter_mm=(18.0, 30.0))
    generate_cohort(config, out / "cohort")
    sessions = write_retest_cohort(out / "cohort", "P001", out / "retest", N_SESSIONS, rigid=True)
    segmenter = NnUNetSegmenter(SegmentConfig(fallback="none"))
    baseline = read_image(out / "cohort" / "sub-P001" / "ses-01" / "image.nii.gz")
    prompts = json.loads((out / "cohort" / "sub-P001" / "ses-01" / "prompts.json").read_text())["lesions"]
    geometry = Geometry.of(baseline)
    voxel = float(np.prod(baseline.GetSpacing()))
    rows = []
    for s in range(N_SESSIONS):
        image = read_image(sessions / "sub-P001" / f"ses-{s + 1:02d}" / "image.nii.gz")
        boxes = carried_boxes(prompts, image, repositioning(baseline, s) if s else None)
        truth = sitk.GetArrayFromImage(repositioned_truth(out / "cohort", config, "P001", s))
        array = sitk.GetArrayFromImage(image).astype(np.float64)
        smoothed = sitk.SmoothingRecursiveGaussian(sitk.Cast(image, sitk.sitkFloat32), [0.7 * v for v in image.GetSpacing()])
        for variant, make in (("network", lambda: probabilities(segmenter, image, boxes)),
                              ("smoothed", lambda: probabilities(segmenter, smoothed, boxes)),
                              ("shifted8", lambda: shifted_probabilities(segmenter, image, boxes))):
            cpu = time.process_time()
            maps = make()
            cpu = time.process_time() - cpu
            labels = np.zeros(array.shape, np.int64)
            for lesion_id, probability in sorted(maps.items()):
                labels[(probability > 0.5) & (labels == 0)] = lesion_id
            measured = measure_labels(labels, geometry).set_index("lesion_id")
            for lesion_id, probability in sorted(maps.items()):
                mask = labels == lesion_id
                row = dict(variant=variant, session=s, lesion_id=lesion_id, cpu_s=cpu, truth=float((truth == lesion_id).sum()),
                           binary=float(mask.sum()), soft=float(probability.sum()),
                           diameter=float(measured.loc[lesion_id, "longest_diameter_mm"]),
                           subvoxel_diameter=subvoxel_diameter(probability, image.GetSpacing()))
                if variant == "network":
                    others = (labels > 0) & ~mask
                    row["partial_volume"] = partial_volume(array, mask, others, clip=False)
                    row["partial_volume_clipped"] = partial_volume(array, mask, others, clip=True)
                rows.append(row)
    frame = pd.DataFrame(rows)
    frame["voxel_ml"] = voxel / 1000.0
    return frame


def summarise(frame: pd.DataFrame) -> pd.DataFrame:
    lines = []
    measures = [("binary", "volume"), ("soft", "volume"), ("partial_volume", "volume"), ("partial_volume_clipped", "volume"),
                ("diameter", "diameter"), ("subvoxel_diameter", "diameter")]
    for variant, rows in frame.groupby("variant", sort=False):
        base = rows[rows["session"] == 0].set_index("lesion_id")
        follow = rows[rows["session"] > 0]
        cpu = rows.groupby("session")["cpu_s"].first().mean()
        for column, kind in measures:
            if column not in rows or rows[column].isna().all():
                continue
            reference = follow["lesion_id"].map(base[column])
            change = (follow[column] / reference - 1) * 100 if kind == "volume" else follow[column] - reference
            line = {"variant": variant, "measure": column, "change": f"{change.min():+.1f}..{change.max():+.1f} "
                    + ("%" if kind == "volume" else "mm"), "cpu_s_per_session": round(cpu, 1)}
            if kind == "volume":
                error = (rows[column] / rows["truth"] - 1) * 100
                line["error_vs_truth"] = f"{error.min():+.1f}..{error.max():+.1f} %"
            lines.append(line)
    return pd.DataFrame(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=4, help="the retest patient's cohort seed")
    parser.add_argument("--source", default="ct:data/real/example_ct.nii.gz", help="its source scan")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    os.chdir(REPO)
    out = args.out or Path(tempfile.mkdtemp(prefix="bench_retest_segmenter_"))
    out.mkdir(parents=True, exist_ok=True)
    wall, cpu = time.perf_counter(), time.process_time()
    frame = run(out, args.seed, args.source)
    print(summarise(frame).to_string(index=False))
    print(f"{time.perf_counter() - wall:.0f} s wall, {time.process_time() - cpu:.0f} CPU-s; outputs under {out}")


if __name__ == "__main__":
    main()
