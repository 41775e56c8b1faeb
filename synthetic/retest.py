"""Test-retest cohorts: one baseline scan repeated in every session, unchanged or rigidly repositioned.

Nothing changes between the sessions of such a patient but the acquisition, so every lesion's
volume and diameter must stay at its baseline value and every response must be SD: a tracker whose
measurements walk on these scans (a mask fed back as the next prompt grows a little each time) is
caught here. Built from a patient of a generated cohort (its baseline image and prompts):

* ``rigid=False``: the baseline image copied into ``n_sessions`` sessions, byte for byte;
* ``rigid=True``: session ``s`` is the baseline resampled (cubic B-spline, which blurs less than
  linear interpolation) onto the same grid through a known
  rigid transform (rotation about the image centre and a translation, growing with ``s``), as if the
  patient lay differently on the table; the transform of each session is written beside it
  (``repositioning.tfm``: world points of that session to the baseline's, mm LPS).

:func:`repositioned_truth` renders the ground truth of a repositioned session: the baseline's lesion
shapes sampled at that session's voxel centres (not its label map resampled), so that the change a
measurement shows can be split into what the grid does to the truth itself and what the segmenter adds.

Layout: what :func:`lesionlocator.ingest.cohort.ingest_cohort` reads (``sub-<P>/ses-<S>/image.nii.gz``,
prompts at the baseline only, ``sub-<P>_sessions.tsv`` with dates ``interval_days`` apart).
"""

from __future__ import annotations

import copy
import shutil
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from lesionlocator.core.config import SyntheticConfig
from lesionlocator.core.io import atomic_directory, image_from_array, read_image, write_image

ROTATION_DEG = 4.0  # per session, about the image centre (axes alternate: z, y, x)
TRANSLATION_MM = (6.0, -5.0, 3.0)  # per session


def repositioning(image: sitk.Image, session: int) -> sitk.Euler3DTransform:
    """The known rigid transform of session ``session`` (0: identity): world points of the session to the
    baseline's (mm, LPS), a rotation of ``ROTATION_DEG`` per session about the image centre and a
    translation of ``TRANSLATION_MM`` per session."""
    centre = image.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2.0 for n in image.GetSize()])
    angles = np.zeros(3)
    angles[(2 - session) % 3] = np.deg2rad(ROTATION_DEG * session)
    return sitk.Euler3DTransform(centre, *angles.tolist(), tuple(session * v for v in TRANSLATION_MM))


def write_retest_cohort(
    cohort: str | Path, patient: str, out: str | Path, n_sessions: int = 5, rigid: bool = False, interval_days: int = 30
) -> Path:
    """A test-retest cohort at ``out`` from ``patient``'s baseline in the generated ``cohort``."""
    source = Path(cohort) / f"sub-{patient}"
    baseline = sorted(p for p in source.glob("ses-*") if p.is_dir())[0]
    image = read_image(baseline / "image.nii.gz")
    out = Path(out)
    with atomic_directory(out) as tmp:
        rows = ["session_id\tacq_time"]
        for s in range(n_sessions):
            label = f"{s + 1:02d}"
            session_dir = tmp / f"sub-{patient}" / f"ses-{label}"
            session_dir.mkdir(parents=True)
            if s == 0 or not rigid:
                shutil.copyfile(baseline / "image.nii.gz", session_dir / "image.nii.gz")
            else:
                transform = repositioning(image, s)
                background = float(sitk.GetArrayViewFromImage(image).min())
                moved = sitk.Resample(image, image, transform, sitk.sitkBSpline, background, image.GetPixelID())
                write_image(moved, session_dir / "image.nii.gz")
                sitk.WriteTransform(transform, str(session_dir / "repositioning.tfm"))
            if s == 0:
                for name in ("prompts.json", "prompt_mask.nii.gz"):
                    if (baseline / name).exists():
                        shutil.copyfile(baseline / name, session_dir / name)
            rows.append(f"ses-{label}\t{(date(2021, 1, 4) + timedelta(days=s * interval_days)).isoformat()}")
        (tmp / f"sub-{patient}" / f"sub-{patient}_sessions.tsv").write_text("\n".join(rows) + "\n")
    return out


def repositioned_truth(cohort: str | Path, config: SyntheticConfig, patient: str, session: int) -> sitk.Image:
    """The ground-truth lesion label map (uint32, lesion IDs of the cohort) of retest session ``session``
    (0: the baseline) of ``patient`` in the ``cohort`` generated from ``config``: each lesion's exact shape
    sampled at the voxel centres of the baseline's grid moved by :func:`repositioning` (what the
    repositioned image of :func:`write_retest_cohort` shows), with the baseline's geometry. At session 0
    it is the cohort's own baseline mask. Plans the cohort again from ``config`` (the very object, not the
    copy in ``dataset_description.json``: its dicts come back there with sorted keys, and the planner draws
    sites in the order of ``site_weights``)."""
    from synthetic.cohort import plan_cohort, render_session

    plans, sources = plan_cohort(config)
    plan = copy.deepcopy(next(p for p in plans if p.patient == patient))
    baseline = plan.sessions[0]
    image = read_image(sorted(p for p in (Path(cohort) / f"sub-{patient}").glob("ses-*") if p.is_dir())[0] / "image.nii.gz")
    baseline.transform = repositioning(image, session) if session else None
    _, labels, _, _ = render_session(plan, sources[plan.spec], 0, config)
    return image_from_array(labels, image)
