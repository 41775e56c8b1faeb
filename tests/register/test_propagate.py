"""Propagation of point, box and mask prompts through known transforms (no registration here)."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from lesionlocator.core.io import Geometry
from lesionlocator.register import load_transform, save_transform
from lesionlocator.segment import Prompt
from lesionlocator.track.propagate import (
    InversionError,
    OutOfFov,
    Propagated,
    box_mask,
    invert_point,
    propagate_prompt,
    propagate_prompts,
    warp_mask,
)

OBLIQUE = sitk.Euler3DTransform((0, 0, 0), 0.3, -0.2, 0.5).GetMatrix()
# Previous session: anisotropic, oblique. Follow-up: another spacing, flipped axes, other FOV.
MOVING = Geometry(size=(60, 50, 30), spacing=(1.5, 1.2, 3.0), origin=(-40.0, -30.0, -45.0), direction=tuple(OBLIQUE))
FIXED = Geometry(size=(70, 64, 40), spacing=(1.3, 1.4, 2.5), origin=(45.0, 40.0, -50.0), direction=(-1, 0, 0, 0, -1, 0, 0, 0, 1))


def rigid(translation=(4.0, -6.0, 3.0)) -> sitk.Transform:
    return sitk.CompositeTransform([sitk.Euler3DTransform((0, 0, 0), 0.05, -0.08, 0.1, translation)])


def deformable(seed: int = 0, amplitude: float = 2.5) -> sitk.CompositeTransform:
    grid = sitk.Image([int(s) for s in FIXED.size], sitk.sitkUInt8)
    grid.SetSpacing(FIXED.spacing)
    grid.SetOrigin(FIXED.origin)
    grid.SetDirection(FIXED.direction)
    bspline = sitk.BSplineTransformInitializer(grid, [3, 3, 3])
    bspline.SetParameters(np.random.default_rng(seed).normal(0, amplitude, len(bspline.GetParameters())).tolist())
    return sitk.CompositeTransform([rigid().GetNthTransform(0), bspline])


def sphere(geometry: Geometry, centre_world, radius_mm: float) -> np.ndarray:
    zyx = np.indices(geometry.shape_zyx).reshape(3, -1).T
    world = geometry.index_to_world(zyx)
    inside = np.linalg.norm(world - np.asarray(centre_world), axis=1) <= radius_mm
    return inside.reshape(geometry.shape_zyx)


def centroid_world(mask: np.ndarray, geometry: Geometry) -> np.ndarray:
    return geometry.index_to_world(np.argwhere(mask).mean(0))


def test_invert_point_is_accurate_for_deformable_transforms():
    transform = deformable(seed=1)
    rng = np.random.default_rng(2)
    for fixed_point in rng.uniform(-40, 40, (25, 3)):
        moving_point = transform.TransformPoint(fixed_point.tolist())
        assert np.allclose(invert_point(transform, moving_point), fixed_point, atol=1e-2)


@pytest.mark.parametrize("make", [rigid, deformable])
def test_point_round_trip(make):
    transform = make()
    moving_index = np.array([15.0, 24.5, 30.25])  # z, y, x of the previous session
    result = propagate_prompt(Prompt(7, "point", point=tuple(moving_index)), transform, MOVING, FIXED)
    assert isinstance(result, Propagated) and result.prompt.kind == "point"
    fixed_world = FIXED.index_to_world(np.asarray(result.prompt.point))
    back = MOVING.world_to_index(np.asarray(transform.TransformPoint(fixed_world.tolist())))
    assert np.allclose(back, moving_index, atol=1e-2)


@pytest.mark.parametrize("make", [rigid, deformable])
def test_mask_moves_with_the_anatomy(make):
    transform = make()
    lesion = sphere(MOVING, (2.0, 3.0, -5.0), 9.0)
    result = propagate_prompt(Prompt(3, "mask", mask=lesion), transform, MOVING, FIXED)
    assert isinstance(result, Propagated) and result.fraction_inside == 1.0
    warped = result.prompt.mask
    assert warped.shape == FIXED.shape_zyx and warped.dtype == bool
    # The warped centroid maps back onto the lesion's centroid (within a voxel).
    back = np.asarray(transform.TransformPoint(centroid_world(warped, FIXED).tolist()))
    assert np.linalg.norm(back - centroid_world(lesion, MOVING)) < 1.5
    volume_before = lesion.sum() * np.prod(MOVING.spacing)
    volume_after = warped.sum() * np.prod(FIXED.spacing)
    assert abs(volume_after / volume_before - 1) < 0.2


def test_two_voxel_lesion_survives():
    transform = rigid(translation=(0.37, -0.41, 1.1))  # lands between follow-up voxel centres
    lesion = np.zeros(MOVING.shape_zyx, bool)
    lesion[12, 20, 30:32] = True
    result = propagate_prompt(Prompt(9, "mask", mask=lesion), transform, MOVING, FIXED)
    assert isinstance(result, Propagated)
    warped = result.prompt.mask
    assert 1 <= warped.sum() <= 8
    back = np.asarray(transform.TransformPoint(centroid_world(warped, FIXED).tolist()))
    assert np.linalg.norm(back - centroid_world(lesion, MOVING)) < 3.0


def test_box_propagates_as_the_bounding_box_of_its_warped_voxels():
    shift = (5.0, -3.0, 7.5)
    transform = sitk.CompositeTransform([sitk.TranslationTransform(3, shift)])
    box = ((8.0, 15.0, 20.0), (14.0, 25.0, 32.0))
    result = propagate_prompt(Prompt(2, "box", box=box), transform, MOVING, FIXED)
    assert isinstance(result, Propagated) and result.prompt.kind == "box"
    lo, hi = (np.asarray(c) for c in result.prompt.box)
    # Every moving box corner, mapped by the inverse (a pure translation), lies in the new box (+-1 voxel).
    corners = MOVING.index_to_world(np.array([[a, b, c] for a in box_zyx(box, 0) for b in box_zyx(box, 1) for c in box_zyx(box, 2)]))
    mapped = FIXED.world_to_index(corners - np.asarray(shift))
    assert np.all(mapped >= lo - 1) and np.all(mapped <= hi + 1)
    # And the new box is not much larger than the mapped corners' bounding box.
    assert np.all(lo >= np.floor(mapped.min(0)) - 1) and np.all(hi <= np.ceil(mapped.max(0)) + 1)


def box_zyx(box, axis):
    return (box[0][axis], box[1][axis])


def test_box_mask_rasterises_inclusive_and_thin_boxes():
    mask = box_mask(((1, 2, 3), (2, 2, 5)), (5, 6, 7))
    assert mask.sum() == 2 * 1 * 3 and mask[1, 2, 3] and mask[2, 2, 5]
    thin = box_mask(((1.2, 2.2, 3.2), (1.4, 2.4, 3.4)), (5, 6, 7))
    assert thin.sum() == 1 and thin[1, 2, 3]


def test_out_of_fov_is_reported_not_guessed():
    transform = rigid()
    far = MOVING.world_to_index(np.asarray(transform.TransformPoint((300.0, 0.0, 0.0))))
    point = propagate_prompt(Prompt(1, "point", point=tuple(far)), transform, MOVING, FIXED)
    assert isinstance(point, OutOfFov) and point.fraction_inside == 0.0 and point.status == "out_of_fov"

    # A sphere centred on the follow-up's y = 0 border (well inside the previous scan): half inside.
    border = np.asarray(FIXED.index_to_world(np.array([20.0, -0.5, 35.0])))
    centre = np.asarray(transform.TransformPoint(border.tolist()))
    half = sphere(MOVING, centre, 7.0)
    assert MOVING.contains_index(MOVING.world_to_index(centre), tolerance=-5)
    result = propagate_prompt(Prompt(4, "mask", mask=half), transform, MOVING, FIXED, min_fraction_inside=0.3)
    assert isinstance(result, Propagated) and 0.35 < result.fraction_inside < 0.65
    strict = propagate_prompt(Prompt(4, "mask", mask=half), transform, MOVING, FIXED, min_fraction_inside=0.8)
    assert isinstance(strict, OutOfFov) and strict.fraction_inside == pytest.approx(result.fraction_inside)


def test_saved_transform_gives_identical_propagation(tmp_path):
    transform = deformable(seed=4)
    loaded = load_transform(save_transform(transform, tmp_path / "t.tfm"))
    lesion = sphere(MOVING, (0.0, 0.0, 0.0), 6.0)
    prompts = [Prompt(1, "point", point=(14.0, 22.0, 31.0)), Prompt(2, "mask", mask=lesion), Prompt(3, "box", box=((5, 5, 5), (9, 12, 15)))]
    a = propagate_prompts(prompts, transform, MOVING, FIXED)
    b = propagate_prompts(prompts, loaded, MOVING, FIXED)
    assert a[1].prompt.point == b[1].prompt.point
    assert np.array_equal(a[2].prompt.mask, b[2].prompt.mask)
    assert a[3].prompt.box == b[3].prompt.box


def test_warp_mask_rejects_wrong_shape():
    with pytest.raises(ValueError, match="differs from the moving image"):
        warp_mask(rigid(), np.zeros((2, 2, 2), bool), MOVING, FIXED)


def test_lesion_at_the_edge_of_a_thin_slab_is_propagated():
    """A B-spline deformation is zero beyond its domain (the follow-up's extent), so near a thin slab's last
    slice the map has a gap: moving points there have no exact preimage. A lesion inside the slab whose
    cropped mask reaches into that gap is still carried (a 20-slice MR: every such lesion was out_of_fov)."""
    slab = Geometry(size=(64, 64, 20), spacing=(2.0, 2.0, 3.0), origin=(0.0, 0.0, 0.0), direction=(1, 0, 0, 0, 1, 0, 0, 0, 1))
    grid = sitk.Image([int(s) for s in slab.size], sitk.sitkUInt8)
    grid.SetSpacing(slab.spacing)
    bspline = sitk.BSplineTransformInitializer(grid, [2, 2, 2])
    n = len(bspline.GetParameters()) // 3
    bspline.SetParameters([0.0] * (2 * n) + [-3.0] * n)  # every fixed point inside maps 3 mm lower in z
    transform = sitk.CompositeTransform([sitk.TranslationTransform(3, (1.0, -2.0, 0.5)), bspline])
    with pytest.raises(InversionError):  # the gap just below the slab's top in moving space: no preimage
        invert_point(transform, (64.0, 64.0, 57.5))
    lesion = sphere(slab, (64.0, 62.0, 51.5), 5.0)  # up to z 56.5 in moving space: its crop reaches the gap
    result = propagate_prompt(Prompt(1, "mask", mask=lesion), transform, slab, slab, min_fraction_inside=0.25)
    assert isinstance(result, Propagated), getattr(result, "reason", "")
    expected = np.array([63.0, 64.0, 54.0])  # inside the domain: moving minus (1, -2, 0.5) minus (0, 0, -3)
    assert np.allclose(centroid_world(result.prompt.mask, slab), expected, atol=2.0)
