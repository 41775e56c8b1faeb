"""Synthetic registration cases: the real CT warped by a known transform onto a different grid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

REAL_CT = Path(__file__).resolve().parents[2] / "data" / "real" / "example_ct.nii.gz"
# A non-identity direction for the follow-up grid: rotated 90 degrees about z (x -> y).
ROTATED_DIRECTION = (0.0, -1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0)


def real_ct() -> sitk.Image:
    return sitk.ReadImage(str(REAL_CT), sitk.sitkFloat32)


def image_center(image: sitk.Image) -> np.ndarray:
    return np.asarray(image.TransformContinuousIndexToPhysicalPoint([(s - 1) / 2 for s in image.GetSize()]))


def known_transform(moving: sitk.Image, kind: str, seed: int = 0) -> sitk.CompositeTransform:
    """A fixed->moving transform: rigid, affine (rigid + scaling/shear) or deformable (rigid + BSpline)."""
    center = image_center(moving)
    rigid = sitk.Euler3DTransform(center.tolist(), np.deg2rad(3), np.deg2rad(-2), np.deg2rad(4), (6.0, -8.0, 14.0))
    if kind == "rigid":
        return sitk.CompositeTransform([rigid])
    if kind == "affine":
        affine = sitk.AffineTransform(3)
        affine.SetCenter(center.tolist())
        matrix = np.asarray(rigid.GetMatrix()).reshape(3, 3) @ np.array([[1.04, 0.02, 0.0], [0.0, 0.97, 0.03], [0.0, 0.0, 1.02]])
        affine.SetMatrix(matrix.ravel().tolist())
        affine.SetTranslation(rigid.GetTranslation())
        return sitk.CompositeTransform([affine])
    bspline = sitk.BSplineTransformInitializer(moving, [3, 3, 3])
    rng = np.random.default_rng(seed)
    bspline.SetParameters(rng.normal(0.0, 3.0, len(bspline.GetParameters())).tolist())
    return sitk.CompositeTransform([rigid, bspline])


def follow_up(moving: sitk.Image, transform: sitk.Transform, *, z_fraction: float = 0.7,
              spacing=(2.5, 2.5, 4.0), direction=ROTATED_DIRECTION) -> sitk.Image:
    """``moving`` resampled through ``transform`` on a new grid: other spacing, direction, and only the
    upper ``z_fraction`` of the z field of view (so the sessions' FOV differ in z)."""
    size = np.asarray(moving.GetSize())
    corners = np.array([moving.TransformIndexToPhysicalPoint([int(i * (size[0] - 1)), int(j * (size[1] - 1)), int(k * (size[2] - 1))])
                        for i in (0, 1) for j in (0, 1) for k in (0, 1)])
    lo, hi = corners.min(0), corners.max(0)
    d = np.asarray(direction).reshape(3, 3)
    extent_axes = np.abs(d.T @ (hi - lo))  # extent along each new image axis
    extent_axes[2] *= z_fraction
    new_size = [max(2, int(e / s)) for e, s in zip(extent_axes, spacing)]
    # Choose the origin so that the grid covers [lo, hi] in x/y and the top of the z range.
    top = np.array([lo[0], lo[1], hi[2] - extent_axes[2]])
    # The grid's world bounding box starts at origin + the negative parts of each axis vector.
    axis_vectors = d * (np.asarray(new_size) * np.asarray(spacing))
    origin = top - np.minimum(axis_vectors, 0).sum(axis=1)
    return sitk.Resample(moving, [int(s) for s in new_size], transform, sitk.sitkLinear, origin.tolist(),
                         list(spacing), list(direction), -1024.0, sitk.sitkFloat32)


def landmark_errors(estimated: sitk.Transform, true: sitk.Transform, fixed: sitk.Image, step: int = 5) -> np.ndarray:
    """|estimated(p) - true(p)| in mm at body voxels (HU > -300) of the follow-up, every ``step``-th voxel."""
    array = sitk.GetArrayViewFromImage(fixed)
    index = np.argwhere(array > -300)[::step * step * step]
    errors = []
    for z, y, x in index:
        p = fixed.TransformIndexToPhysicalPoint([int(x), int(y), int(z)])
        errors.append(np.linalg.norm(np.subtract(estimated.TransformPoint(p), true.TransformPoint(p))))
    return np.asarray(errors)
