"""Deformations between sessions, all as *backward* maps (output point -> where to sample).

* mass effect: a growing lesion pushes the surrounding tissue outward. The field is
  ``m = k * grad(G_sigma * B)`` with ``B`` the lesion's mask at the follow-up size: near the lesion
  surface it points inward (the follow-up samples tissue from closer to the centre), with
  ``k = dR * sqrt(2 pi) * sigma`` so that the displacement at the surface equals the change of
  radius ``dR``; shrinking lesions pull tissue in. The field is scaled down until its Jacobian
  determinant is >= :data:`MIN_JACOBIAN` everywhere, so it is smooth and invertible.
* repositioning: rigid (Euler angles about the scan centre, translation) composed with a smooth
  B-spline deformation on a coarse control grid.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from lesionlocator.core.io import Geometry

MIN_JACOBIAN = 0.3
FIELD_SPACING_MM = 6.0  # smooth fields (sigma >= 10 mm, 80 mm B-spline grid) are sampled this coarsely


def coarse_geometry(geometry: Geometry, spacing_mm: float = FIELD_SPACING_MM) -> Geometry:
    """A grid over the same domain with voxels of about ``spacing_mm`` (never finer than the input)."""
    factor = np.maximum(1, np.round(spacing_mm / np.asarray(geometry.spacing))).astype(int)
    size = (np.asarray(geometry.size) - 1) // factor + 2
    spacing = np.asarray(geometry.spacing) * factor
    return Geometry(tuple(int(s) for s in size), tuple(spacing.tolist()), geometry.origin, geometry.direction)


def grid_points(geometry: Geometry, box: tuple[slice, slice, slice] | None = None) -> np.ndarray:
    """World coordinates (z, y, x, 3) of the voxel centres of ``geometry`` (or of a sub-box)."""
    shape = geometry.shape_zyx
    box = box or tuple(slice(0, n) for n in shape)
    axes = [np.arange(s.start, s.stop, dtype=np.float64) for s in box]
    zz, yy, xx = np.meshgrid(*axes, indexing="ij")
    return geometry.index_to_world(np.stack([zz, yy, xx], axis=-1))


def jacobian_determinant(displacement: np.ndarray, geometry: Geometry) -> np.ndarray:
    """det(I + d(disp)/d(world)) of a displacement field (z, y, x, 3 world mm components)."""
    direction = geometry.direction_matrix
    spacing_zyx = geometry.spacing[::-1]
    # d[c][k]: derivative of world component c along image axis k (x, y, z), then to world axes
    d_axes = [np.gradient(displacement[..., c], *spacing_zyx)[::-1] for c in range(3)]
    jac = [[sum(d_axes[c][k] * direction[j, k] for k in range(3)) + (1.0 if c == j else 0.0) for j in range(3)] for c in range(3)]
    (a, b, c), (d, e, f), (g, h, i) = jac
    return a * (e * i - f * h) - b * (d * i - f * g) + c * (d * h - e * g)


def _support(field: np.ndarray, pad: int = 2) -> tuple[slice, ...]:
    """The bounding box (plus ``pad`` voxels) of the non-zero part of a vector field."""
    nonzero = np.argwhere(np.any(field != 0, axis=-1))
    lo = np.maximum(nonzero.min(axis=0) - pad, 0)
    hi = np.minimum(nonzero.max(axis=0) + pad + 1, field.shape[:3])
    return tuple(slice(a, b) for a, b in zip(lo, hi))


def to_transform(displacement: np.ndarray, geometry: Geometry) -> sitk.DisplacementFieldTransform:
    """A SimpleITK transform of a displacement field (z, y, x, 3) on ``geometry``."""
    image = sitk.GetImageFromArray(displacement.astype(np.float64), isVector=True)
    image.SetSpacing(geometry.spacing)
    image.SetOrigin(geometry.origin)
    image.SetDirection(geometry.direction)
    return sitk.DisplacementFieldTransform(image)


def mass_effect_field(
    lesion_masks: list[tuple[np.ndarray, tuple[slice, slice, slice], float, float]],
    geometry: Geometry,
) -> np.ndarray:
    """Sum of the mass effects of several lesions on ``geometry`` (a coarse grid).

    Each entry is ``(soft_mask, box, delta_radius_mm, sigma_mm)``: the lesion's mask (0..1) on the
    sub-box ``box`` of the grid at its new size, its change of radius since baseline and the reach
    of the push. Returns a displacement field (z, y, x, 3), world mm, with Jacobian >= MIN_JACOBIAN.
    """
    field = np.zeros(geometry.shape_zyx + (3,), dtype=np.float64)
    spacing_zyx = np.asarray(geometry.spacing[::-1])
    direction = geometry.direction_matrix
    for soft, box, delta, sigma in lesion_masks:
        if delta == 0 or not soft.any():
            continue
        pad = np.ceil(3 * sigma / spacing_zyx).astype(int) + 1
        shape = geometry.shape_zyx
        big = tuple(slice(max(b.start - p, 0), min(b.stop + p, n)) for b, p, n in zip(box, pad, shape))
        local = np.zeros(tuple(s.stop - s.start for s in big))
        inner = tuple(slice(b.start - g.start, b.stop - g.start) for b, g in zip(box, big))
        local[inner] = soft
        smooth = ndimage.gaussian_filter(local, sigma / spacing_zyx, mode="constant")
        grads = np.gradient(smooth, *spacing_zyx)  # along z, y, x array axes
        axes = np.stack(grads[::-1], axis=-1)  # along image axes x, y, z
        scale = delta * np.sqrt(2 * np.pi) * sigma
        field[big] += scale * (axes @ direction.T)
    if not field.any():
        return field
    support = _support(field)
    for _ in range(20):
        if jacobian_determinant(field[support], geometry).min() >= MIN_JACOBIAN:
            break
        field *= 0.75
    return field


def repositioning(
    geometry: Geometry, rng: np.random.Generator, rotation_deg: float, translation_mm: float,
    nonrigid_mm: float, grid_mm: float,
) -> sitk.Transform:
    """A random rigid + smooth non-rigid transform (output world -> anatomy world) over ``geometry``'s
    domain. Identity when every magnitude is 0."""
    centre = geometry.index_to_world((np.asarray(geometry.shape_zyx) - 1) / 2.0)
    rigid = sitk.Euler3DTransform()
    rigid.SetCenter(tuple(centre.tolist()))
    angles = np.deg2rad(rng.uniform(-rotation_deg, rotation_deg, 3)) if rotation_deg else np.zeros(3)
    rigid.SetRotation(*angles.tolist())
    shift = rng.uniform(-translation_mm, translation_mm, 3) if translation_mm else np.zeros(3)
    rigid.SetTranslation(tuple(shift.tolist()))
    # The B-spline is identity outside its domain; after the rigid step points can leave the image's
    # own domain, so the domain is padded by the largest rigid reach plus one control spacing
    # (otherwise the field would jump at the domain border and fold).
    extent = np.asarray(geometry.spacing) * np.asarray(geometry.size)
    pad = translation_mm * np.sqrt(3) + np.linalg.norm(extent) * np.sin(np.deg2rad(rotation_deg)) + grid_mm
    padded = extent + 2 * pad
    reference = sitk.Image([int(n) for n in np.ceil(padded / np.asarray(geometry.spacing))], sitk.sitkUInt8)
    reference.SetSpacing(geometry.spacing)
    reference.SetDirection(geometry.direction)
    corner = np.asarray(geometry.origin) - geometry.direction_matrix @ np.full(3, pad)
    reference.SetOrigin(tuple(corner.tolist()))
    mesh = [int(max(1, round(e / grid_mm))) for e in padded]
    bspline = sitk.BSplineTransformInitializer(reference, mesh, order=3)
    n = len(bspline.GetParameters())
    if nonrigid_mm:
        # a cubic B-spline whose control-point displacements stay below 0.3 x the control spacing
        # cannot fold (sufficient bound ~0.4, Rueckert et al. 2006)
        cap = 0.3 * float(min(padded[i] / mesh[i] for i in range(3)))
        coefficients = np.clip(rng.normal(0.0, nonrigid_mm, n), -cap, cap)
    else:
        coefficients = np.zeros(n)
    bspline.SetParameters(tuple(coefficients.tolist()))
    return sitk.CompositeTransform([bspline, rigid])  # rigid first, then the smooth deformation


def displacement_of(transform: sitk.Transform, geometry: Geometry) -> np.ndarray:
    """The displacement (z, y, x, 3, world mm) of ``transform`` at the voxel centres of ``geometry``."""
    field = sitk.TransformToDisplacementField(
        transform, sitk.sitkVectorFloat64, [int(s) for s in geometry.size], geometry.origin, geometry.spacing, geometry.direction
    )
    return sitk.GetArrayFromImage(field)


def invert_point(transform: sitk.Transform, target: np.ndarray, iterations: int = 10) -> np.ndarray:
    """The point x with transform(x) ~= target (fixed-point iteration; exact for rigid, close for
    small smooth deformations)."""
    x = np.asarray(target, dtype=float)
    for _ in range(iterations):
        mapped = np.asarray(transform.TransformPoint(tuple(x.tolist())))
        step = target - mapped
        x = x + step
        if np.abs(step).max() < 1e-3:
            break
    return x
