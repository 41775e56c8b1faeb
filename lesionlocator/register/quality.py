"""Registration quality: does the follow-up look like the previous scan once registered?

Computed after registration, whatever the backend, on the region both scans show: the follow-up's
body (Otsu foreground) where the transform maps inside the previous scan's grid. The figure is the
normalised cross-correlation (Pearson's r) of the follow-up and the previous scan warped onto it
there, both smoothed onto an isotropic :data:`QUALITY_GRID_MM` grid (so that noise and small residual
deformations do not count). It lies in [-1, 1] and is invariant to a linear intensity change (an MR
gain, a CT calibration shift). A follow-up without a body of at least :data:`MIN_SHARED_VOXELS`
voxels (a phantom's small blob on a noisy background) is compared over the whole field of view both
scans show.

Measured with ``bench/bench_registration_quality.py`` (default registration): sessions of the same
anatomy 0.82-0.98 (synthetic CT 0.93-0.96, synthetic MR 0.82-0.94, the registration tests' CT pairs
0.96-0.98), scans of another body region forced onto each other 0.19-0.47 (the issue's chest baseline
and pelvis follow-up: 0.35, at 50% overlap); same-anatomy pairs left unregistered (identity) score
0.0-0.66. ``register.min_similarity`` (0.6) lies between.

The figure compares intensities voxel by voxel, so it assumes both sessions have the same modality
(CT and CT, MR and MR); a CT follow-up of an MR baseline scores low even when aligned.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import SimpleITK as sitk

from lesionlocator.register.api import RegistrationError
from lesionlocator.register.sitk_backend import body_mask, coarse_image, sitk_threads

#: Spacing (mm) of the isotropic grid the figure is computed on (fixed: the figure's scale, and so
#: ``register.min_similarity``, must not depend on the registration's own settings).
QUALITY_GRID_MM = 4.0
#: Fewer shared voxels than this (on the 4 mm grid: 6.4 mL) leave the figure undefined.
MIN_SHARED_VOXELS = 100


@dataclass(frozen=True)
class RegistrationQuality:
    """How well a registered pair matches, on the region both scans show.

    ``similarity``: normalised cross-correlation of the follow-up and the warped previous scan there
    (None when the shared region is under :data:`MIN_SHARED_VOXELS`); ``shared_fraction``: the
    fraction of the follow-up's body that maps inside the previous scan; ``shared_ml``: its volume.
    """

    similarity: float | None
    shared_fraction: float
    shared_ml: float

    def as_dict(self) -> dict:
        return asdict(self)


def normalized_cross_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson's r of two equally long samples (0 when either is constant)."""
    a = a.astype(np.float64) - a.mean()
    b = b.astype(np.float64) - b.mean()
    norm = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / norm) if norm > 0 else 0.0


def registration_quality(fixed: sitk.Image, moving: sitk.Image, transform: sitk.Transform) -> RegistrationQuality:
    """The quality of ``transform`` (fixed/follow-up world mm -> moving/previous world mm, ITK's
    direction) for the pair ``fixed``, ``moving``; figures rounded to 4 decimals. SimpleITK runs on
    one thread here, whatever the global setting, so that every rerun writes the same record."""
    with sitk_threads(1):
        fixed_c = coarse_image(fixed, QUALITY_GRID_MM)
        moving_c = coarse_image(moving, QUALITY_GRID_MM)
        try:
            body = sitk.GetArrayFromImage(body_mask(fixed_c)) > 0
        except RegistrationError:
            body = None
        grid = sitk.Image(moving_c.GetSize(), sitk.sitkUInt8) + 1
        grid.CopyInformation(moving_c)
        inside = sitk.GetArrayFromImage(sitk.Resample(grid, fixed_c, transform, sitk.sitkNearestNeighbor, 0)) > 0
        warped = sitk.GetArrayFromImage(sitk.Resample(moving_c, fixed_c, transform, sitk.sitkLinear, 0.0))
    if body is None or body.sum() < MIN_SHARED_VOXELS:  # no body to speak of (a phantom's blob): the field of view
        body = np.ones(fixed_c.GetSize()[::-1], dtype=bool)
    shared = body & inside
    n_shared = int(shared.sum())
    fraction = round(n_shared / max(int(body.sum()), 1), 4)
    shared_ml = round(n_shared * QUALITY_GRID_MM**3 / 1000.0, 1)
    if n_shared < MIN_SHARED_VOXELS:
        return RegistrationQuality(None, fraction, shared_ml)
    similarity = normalized_cross_correlation(sitk.GetArrayFromImage(fixed_c)[shared], warped[shared])
    return RegistrationQuality(round(similarity, 4), fraction, shared_ml)
