"""Propagation of lesion prompts from the previous session (moving) into the follow-up (fixed).

``transform`` is always a registration transform in the ITK convention: it maps world points
(mm, LPS) of the FIXED follow-up to the MOVING previous session (see
:mod:`lesionlocator.register`). Prompts are :class:`lesionlocator.segment.Prompt` objects in the
voxel index frame (z, y, x) of the image they belong to.

* **point**: the moving-space point is mapped through the *inverse* transform, computed per point by
  Newton's method on the forward transform (finite-difference Jacobian), which is exact for linear
  transforms and converges in a few steps for smooth deformations.
* **mask**: the per-lesion binary mask is resampled onto the follow-up's own grid at full
  resolution with linear interpolation and thresholded at 0.5, so no coarse grid makes small
  lesions vanish; when nothing reaches 0.5 (a lesion of one or two voxels landing between voxel
  centres) the voxels at or above half the peak value are kept instead.
* **box**: the box's centre is mapped through the inverse transform (as a point) and the box keeps its
  size in mm (:func:`propagate_box`): the patient's rotation does not inflate it, and under the
  identity it is the very same box, so an unchanged scan gets its baseline prompt back exactly.

A mask (or box) is warped onto a region of the follow-up grid that may extend beyond the image, so
the fraction of the lesion that lands inside the follow-up's field of view is measured, not
guessed; below ``min_fraction_inside`` (and for a point outside) the lesion is reported as
:class:`OutOfFov` instead of a prompt. The returned prompts are clipped to the follow-up image.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Sequence, Union

import numpy as np
import SimpleITK as sitk

from lesionlocator.core.io import Geometry
from lesionlocator.core.regions import nonzero_index

if TYPE_CHECKING:
    from lesionlocator.segment.api import Prompt

log = logging.getLogger(__name__)

MARGIN_MM = 15.0
MAX_REGION_GROWTHS = 3


class InversionError(RuntimeError):
    """Newton's method did not find the fixed point that maps onto a moving point."""


@dataclass(frozen=True, eq=False)
class Propagated:
    """A lesion whose prompt landed in the follow-up: ``prompt`` is in the follow-up's voxel frame."""

    lesion_id: int
    prompt: "Prompt"
    fraction_inside: float
    status: Literal["propagated"] = "propagated"


@dataclass(frozen=True)
class OutOfFov:
    """A lesion whose prompt left the follow-up's field of view (``fraction_inside`` below the limit)."""

    lesion_id: int
    kind: str
    fraction_inside: float
    reason: str
    status: Literal["out_of_fov"] = "out_of_fov"


PropagationResult = Union[Propagated, OutOfFov]


# -- points --------------------------------------------------------------------------------------
def _jacobian(transform: sitk.Transform, x: np.ndarray, step: float) -> np.ndarray:
    columns = []
    for axis in range(3):
        delta = np.zeros(3)
        delta[axis] = step
        plus = np.asarray(transform.TransformPoint((x + delta).tolist()))
        minus = np.asarray(transform.TransformPoint((x - delta).tolist()))
        columns.append((plus - minus) / (2 * step))
    return np.stack(columns, axis=1)


def _leaves(transform: sitk.Transform) -> list[sitk.Transform]:
    """A (possibly nested) composite's transforms in storage order (the last is applied first)."""
    if transform.GetName() != "CompositeTransform":
        return [transform]
    composite = sitk.CompositeTransform(transform)
    return [leaf for i in range(composite.GetNumberOfTransforms()) for leaf in _leaves(composite.GetNthTransform(i))]


def _linear_inverse(transform: sitk.Transform, target: np.ndarray) -> np.ndarray | None:
    """``target`` mapped back through the inverse of the transform's linear stages alone (its deformations
    taken as the identity); None when a linear stage has no inverse. Exact where every deformation is
    zero, e.g. beyond the B-spline's domain of a ``[linear, bspline]`` registration."""
    x = target.copy()
    for leaf in _leaves(transform):  # T = t0(t1(...)): undo t0 first
        if not leaf.IsLinear():
            continue
        try:
            x = np.asarray(leaf.GetInverse().TransformPoint(x.tolist()), float)
        except RuntimeError:  # a singular matrix
            return None
    return x


def invert_point(
    transform: sitk.Transform,
    moving_world: Sequence[float],
    *,
    tolerance_mm: float = 1e-3,
    accept_mm: float | None = None,
    max_iterations: int = 50,
    step_mm: float = 0.5,
) -> np.ndarray:
    """The fixed-space world point (mm, LPS) that ``transform`` maps onto ``moving_world``.

    Newton's method with a central finite-difference Jacobian (``step_mm``), started from the inverse of
    the transform's linear part (exact where the deformation is zero, e.g. beyond a B-spline's domain,
    whose edge is a kink Newton cannot cross from outside) and then from the point itself. The best
    iterate is returned when its residual is within ``accept_mm`` (default: ``tolerance_mm``), else
    :class:`InversionError`.
    """
    target = np.asarray(moving_world, dtype=float)
    best, best_residual = target, np.inf
    guess = _linear_inverse(transform, target)
    starts = [target.copy()] if guess is None or np.array_equal(guess, target) else [guess, target.copy()]
    for x in starts:
        for _ in range(max_iterations):
            residual_vec = np.asarray(transform.TransformPoint(x.tolist())) - target
            residual = float(np.linalg.norm(residual_vec))
            if residual < best_residual:
                best, best_residual = x.copy(), residual
            if residual <= tolerance_mm:
                return x
            try:
                update = np.linalg.solve(_jacobian(transform, x, step_mm), residual_vec)
            except np.linalg.LinAlgError:
                break
            # Damp huge steps (a poorly conditioned Jacobian far from the solution).
            norm = float(np.linalg.norm(update))
            if norm > 100.0:
                update *= 100.0 / norm
            x = x - update
    if best_residual <= (tolerance_mm if accept_mm is None else accept_mm):
        return best
    raise InversionError(f"cannot invert the transform at {target.round(2).tolist()} (residual {best_residual:.3g} mm)")


def propagate_point(transform: sitk.Transform, moving_world: Sequence[float]) -> np.ndarray:
    """A previous-session world point (mm, LPS) mapped into the follow-up's world frame."""
    return invert_point(transform, moving_world)


# -- masks ---------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class WarpedMask:
    """A warped mask cropped to the follow-up image: ``mask`` starts at voxel ``offset`` (z, y, x)."""

    mask: np.ndarray
    offset: tuple[int, int, int]
    fraction_inside: float
    voxels_total: int

    def full(self, shape_zyx: Sequence[int]) -> np.ndarray:
        """The mask pasted into a bool array of the follow-up's shape."""
        out = np.zeros(tuple(shape_zyx), dtype=bool)
        z, y, x = self.offset
        dz, dy, dx = self.mask.shape
        out[z : z + dz, y : y + dy, x : x + dx] = self.mask
        return out

    def bounding_box(self) -> tuple[tuple[int, int, int], tuple[int, int, int]] | None:
        """Inclusive voxel bounding box (min_zyx, max_zyx) in the follow-up, or None when empty."""
        where = nonzero_index(self.mask)
        if where.size == 0:
            return None
        lo = where.min(0) + np.asarray(self.offset)
        hi = where.max(0) + np.asarray(self.offset)
        return tuple(int(v) for v in lo), tuple(int(v) for v in hi)


def _crop_image(mask_zyx: np.ndarray, geometry: Geometry) -> tuple[sitk.Image, np.ndarray] | None:
    """The mask cropped to its bounding box plus one voxel, as a float32 image at its true place."""
    where = nonzero_index(mask_zyx)
    if where.size == 0:
        return None
    lo = np.maximum(where.min(0) - 1, 0)
    hi = np.minimum(where.max(0) + 2, np.asarray(mask_zyx.shape))
    crop = mask_zyx[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]].astype(np.float32)
    image = sitk.GetImageFromArray(crop)
    image.SetSpacing(geometry.spacing)
    image.SetDirection(geometry.direction)
    image.SetOrigin(tuple(float(v) for v in geometry.index_to_world(lo.astype(float))))
    return image, lo


def _fixed_region(transform, crop: sitk.Image, fixed: Geometry, margin_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """Fixed voxel range (lo, hi inclusive, z y x) covering the inverse-mapped crop plus a margin."""
    size = np.asarray(crop.GetSize(), float)
    corners_xyz = np.array([[i, j, k] for i in (-0.5, size[0] - 0.5) for j in (-0.5, size[1] - 0.5) for k in (-0.5, size[2] - 0.5)])
    fixed_index = []
    for corner in corners_xyz:
        moving_world = crop.TransformContinuousIndexToPhysicalPoint(corner.tolist())
        # the region is padded by the margin and grown while the warped mask touches its border, so a corner
        # beyond the deformation's domain need not be exact
        fixed_index.append(fixed.world_to_index(invert_point(transform, moving_world, tolerance_mm=0.05, accept_mm=margin_mm)))
    fixed_index = np.asarray(fixed_index)
    pad = np.ceil(margin_mm / np.asarray(fixed.spacing)[::-1]).astype(int) + 1
    return np.floor(fixed_index.min(0)).astype(int) - pad, np.ceil(fixed_index.max(0)).astype(int) + pad


def _resample_region(transform, crop: sitk.Image, fixed: Geometry, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    size_zyx = hi - lo + 1
    origin = fixed.index_to_world(lo.astype(float))
    warped = sitk.Resample(
        crop, [int(v) for v in size_zyx[::-1]], transform, sitk.sitkLinear,
        [float(v) for v in origin], fixed.spacing, fixed.direction, 0.0, sitk.sitkFloat32,
    )
    return sitk.GetArrayFromImage(warped)


def _touches_border(values: np.ndarray) -> bool:
    faces = (values[0], values[-1], values[:, 0], values[:, -1], values[:, :, 0], values[:, :, -1])
    return any(float(face.max()) > 1e-3 for face in faces)


def warp_mask(
    transform: sitk.Transform,
    mask_zyx: np.ndarray,
    moving: Geometry,
    fixed: Geometry,
    *,
    margin_mm: float = MARGIN_MM,
) -> WarpedMask:
    """Warp a previous-session binary mask (moving voxel frame) onto the follow-up's full-resolution grid.

    Linear interpolation then a 0.5 threshold (half the peak value when nothing reaches 0.5). The
    fraction of the warped lesion inside the follow-up image is measured on a region that extends
    past the image border.
    """
    mask_zyx = np.asarray(mask_zyx, dtype=bool)
    if mask_zyx.shape != moving.shape_zyx:
        raise ValueError(f"mask shape {mask_zyx.shape} differs from the moving image's {moving.shape_zyx}")
    cropped = _crop_image(mask_zyx, moving)
    if cropped is None:
        return WarpedMask(np.zeros((0, 0, 0), bool), (0, 0, 0), 0.0, 0)
    crop, _ = cropped
    lo, hi = _fixed_region(transform, crop, fixed, margin_mm)
    for growth in range(MAX_REGION_GROWTHS + 1):
        values = _resample_region(transform, crop, fixed, lo, hi)
        if not _touches_border(values) or growth == MAX_REGION_GROWTHS:
            break
        pad = np.ceil(margin_mm * 2 ** (growth + 1) / np.asarray(fixed.spacing)[::-1]).astype(int)
        lo, hi = lo - pad, hi + pad
    peak = float(values.max())
    binary = values >= 0.5
    if not binary.any() and peak > 0:
        binary = values >= 0.5 * peak
        log.debug("tiny lesion: kept %d voxel(s) at >= half the peak %.2f", int(binary.sum()), peak)
    total = int(binary.sum())
    shape = np.asarray(fixed.shape_zyx)
    in_lo = np.clip(lo, 0, shape)
    in_hi = np.clip(hi + 1, 0, shape)
    if np.any(in_hi <= in_lo):
        return WarpedMask(np.zeros((0, 0, 0), bool), (0, 0, 0), 0.0, total)
    a, b = in_lo - lo, in_hi - lo
    inside = binary[a[0] : b[0], a[1] : b[1], a[2] : b[2]]
    fraction = float(inside.sum()) / total if total else 0.0
    return WarpedMask(inside, tuple(int(v) for v in in_lo), fraction, total)


def box_mask(box: tuple[Sequence[float], Sequence[float]], shape_zyx: Sequence[int]) -> np.ndarray:
    """Bool mask of the voxels whose centres lie in an inclusive (continuous) voxel box (z, y, x).

    A box thinner than a voxel keeps the voxel nearest its centre; the box is clipped to the image.
    """
    lo, hi = np.asarray(box[0], float), np.asarray(box[1], float)
    start = np.ceil(lo - 1e-6).astype(int)
    stop = np.floor(hi + 1e-6).astype(int)
    centre = np.rint((lo + hi) / 2).astype(int)
    thin = stop < start
    start, stop = np.where(thin, centre, start), np.where(thin, centre, stop)
    shape = np.asarray(shape_zyx)
    start, stop = np.clip(start, 0, shape - 1), np.clip(stop, 0, shape - 1)
    mask = np.zeros(tuple(shape_zyx), dtype=bool)
    mask[start[0] : stop[0] + 1, start[1] : stop[1] + 1, start[2] : stop[2] + 1] = True
    return mask


# -- prompts -------------------------------------------------------------------------------------
def propagate_prompt(
    prompt: "Prompt",
    transform: sitk.Transform,
    moving: Geometry,
    fixed: Geometry,
    *,
    min_fraction_inside: float = 0.5,
) -> PropagationResult:
    """One previous-session prompt (moving voxel frame) as a follow-up prompt, or :class:`OutOfFov`."""
    from lesionlocator.segment.api import Prompt

    lesion_id = int(prompt.lesion_id)
    if prompt.kind == "point":
        moving_world = moving.index_to_world(np.asarray(prompt.point, float))
        try:
            index = fixed.world_to_index(invert_point(transform, moving_world))
        except InversionError as err:
            return OutOfFov(lesion_id, "point", 0.0, str(err))
        if not fixed.contains_index(index):
            return OutOfFov(lesion_id, "point", 0.0, f"point maps to voxel {np.round(index, 1).tolist()} outside the follow-up")
        return Propagated(lesion_id, Prompt(lesion_id, "point", point=tuple(float(v) for v in index)), 1.0)

    if prompt.kind == "box":
        return propagate_box(prompt, transform, moving, fixed, min_fraction_inside=min_fraction_inside)
    try:
        warped = warp_mask(transform, prompt.mask, moving, fixed)
    except InversionError as err:
        return OutOfFov(lesion_id, prompt.kind, 0.0, str(err))
    box = warped.bounding_box()
    if warped.voxels_total == 0:
        return OutOfFov(lesion_id, prompt.kind, 0.0, "the prompt is empty after warping")
    if box is None or warped.fraction_inside < min_fraction_inside:
        return OutOfFov(
            lesion_id, prompt.kind, warped.fraction_inside,
            f"{warped.fraction_inside:.0%} of the warped {prompt.kind} lies inside the follow-up "
            f"(min_fraction_inside {min_fraction_inside:.0%})",
        )
    return Propagated(lesion_id, Prompt(lesion_id, "mask", mask=warped.full(fixed.shape_zyx)), warped.fraction_inside)


def propagate_box(
    prompt: "Prompt", transform: sitk.Transform, moving: Geometry, fixed: Geometry, *, min_fraction_inside: float = 0.5
) -> PropagationResult:
    """A box prompt carried by its centre, at its own size: the centre (continuous voxel index of
    ``moving``, z y x) is mapped to world, through the inverse transform, and into ``fixed``'s voxel index;
    the box keeps its extent in mm along the scanners' axes (converted to ``fixed``'s spacing and
    direction), clipped to the follow-up. The patient's rotation moves the box but does not inflate it
    (the box around a rotated box would give the segmenter more room on every repositioning, and its mask
    grows); a lesion that outgrows its box is caught by the tracker (:mod:`lesionlocator.track.anchors`).
    Under the identity the very same box. ``fraction_inside``: the share of the box's volume inside the image."""
    from lesionlocator.segment.api import Prompt

    lesion_id = int(prompt.lesion_id)
    lo, hi = (np.asarray(c, float) for c in prompt.box)
    centre = (lo + hi) / 2
    centre_world = moving.index_to_world(centre)
    try:
        new_centre = fixed.world_to_index(invert_point(transform, centre_world))
    except InversionError as err:
        return OutOfFov(lesion_id, "box", 0.0, str(err))
    half = np.zeros(3)
    for axis in range(3):  # each half-edge of the box as a world vector, expressed in the follow-up's voxel axes
        step = np.zeros(3)
        step[axis] = (hi[axis] - lo[axis]) / 2
        edge_world = moving.index_to_world(centre + step) - centre_world
        half += np.abs(fixed.world_to_index(fixed.index_to_world(np.zeros(3)) + edge_world))
    new_lo, new_hi = new_centre - half, new_centre + half
    upper = np.asarray(fixed.shape_zyx, float) - 1
    clip_lo, clip_hi = np.clip(new_lo, 0, upper), np.clip(new_hi, 0, upper)
    full = np.prod(new_hi - new_lo + 1)
    inside = np.prod(np.clip(clip_hi - clip_lo + 1, 0, None)) if np.all(new_hi >= 0) and np.all(new_lo <= upper) else 0.0
    fraction = float(inside / full)
    if fraction < min_fraction_inside or fraction == 0.0:
        return OutOfFov(lesion_id, "box", fraction, f"{fraction:.0%} of the carried box lies inside the follow-up "
                        f"(min_fraction_inside {min_fraction_inside:.0%})")
    # rounded to 1e-6 voxel: the round trip through world coordinates must not move a bound that lies on a
    # voxel or half-voxel (where the segmenter's cut decides which layer is in) by floating-point noise
    box = (tuple(float(v) for v in np.round(clip_lo, 6)), tuple(float(v) for v in np.round(clip_hi, 6)))
    return Propagated(lesion_id, Prompt(lesion_id, "box", box=box), fraction)


def propagate_prompts(
    prompts: Sequence["Prompt"],
    transform: sitk.Transform,
    moving: Geometry,
    fixed: Geometry,
    *,
    min_fraction_inside: float = 0.5,
) -> dict[int, PropagationResult]:
    """Every prompt of the previous session propagated into the follow-up, keyed by lesion ID."""
    return {
        int(p.lesion_id): propagate_prompt(p, transform, moving, fixed, min_fraction_inside=min_fraction_inside)
        for p in prompts
    }

