"""Small lesions on a finer grid (``segment.fine_zoom``): the window's geometry, and what it buys."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from lesionlocator.core.config import BUNDLED_MODEL, REPO_ROOT, SegmentConfig
from lesionlocator.core.regions import dice
from lesionlocator.segment.api import Prompt
from lesionlocator.segment.nnunet import NnUNetSegmenter, fine_window, preprocess
from tests.segment.simulate import insert_lesions


def _oblique_ct() -> sitk.Image:
    """The real CT on an anisotropic grid (1.5 x 1.5 x 2.5 mm) with a tilted direction."""
    image = sitk.ReadImage(str(REPO_ROOT / "data" / "real" / "example_ct.nii.gz"), sitk.sitkFloat32)
    rotation = sitk.VersorTransform((0.0, 0.0, 1.0), np.deg2rad(12.0))
    rotation.SetCenter(image.TransformContinuousIndexToPhysicalPoint([s / 2 for s in image.GetSize()]))
    direction = np.asarray(rotation.GetMatrix()).reshape(3, 3) @ np.asarray(image.GetDirection()).reshape(3, 3)
    spacing = (1.5, 1.5, 2.5)
    size = [int(round(n * s / t)) for n, s, t in zip(image.GetSize(), image.GetSpacing(), spacing)]
    return sitk.Resample(image, size, sitk.Transform(), sitk.sitkLinear, image.GetOrigin(), spacing, direction.ravel().tolist(), -1000.0)


@pytest.fixture(scope="module")
def segmenters():
    return {zoom: NnUNetSegmenter(SegmentConfig(checkpoint=BUNDLED_MODEL, device="cpu", mirroring=False, fine_zoom=zoom))
            for zoom in (1.0, 2.0)}  # fmt: skip


def test_the_fine_window_covers_the_lesion_and_a_fine_patch_around_it_on_the_finer_grid(segmenters):
    image = _oblique_ct()
    array = sitk.GetArrayFromImage(image)
    spacing_zyx = tuple(image.GetSpacing())[::-1]
    model = segmenters[2.0]._model_for("box")
    pre = preprocess(model, array, spacing_zyx, keep_normalised=True)
    assert pre.normalised is not None and pre.normalised.shape == pre.grid.crop_shape
    lo, hi = np.array([10, 30, 40]), np.array([14, 36, 47])
    fine = fine_window(model, pre, lo, hi, 2.0)
    target = np.asarray(model.configuration_manager.spacing) / 2.0
    # the window's own resampling is twice as fine as the coarse grid's
    np.testing.assert_allclose(np.asarray(fine.grid.scale), 2.0 * np.asarray(pre.grid.scale), rtol=0.05)
    # the lesion's box, mapped to the fine grid, lies inside it with a fine patch's margin where the scan allows
    corners = fine.grid.to_net(np.stack([lo, hi]).astype(float))
    patch = np.asarray(model.patch_size)
    assert np.all(corners >= -0.5) and np.all(corners <= np.asarray(fine.grid.net_shape) - 0.5)
    inside = np.asarray(fine.grid.crop_start) > np.asarray(pre.grid.crop_start)
    assert np.all(corners.min(0)[inside] >= patch[inside] - 1)
    # the fine data are the normalised scan's voxels: same level as the coarse grid's over the window
    assert abs(float(fine.data.mean()) - float(pre.data.mean())) < 1.0
    assert np.all(target > 0)


def test_a_small_lesion_is_segmented_on_the_fine_grid_and_better_a_large_one_is_not(segmenters):
    image = _oblique_ct()
    small = insert_lesions(image, n_lesions=3, seed=11, radius_mm=(3.0, 4.5), contrast_hu=(50.0, 70.0))
    scores = {}
    for zoom, segmenter in segmenters.items():
        before = segmenter.stats.fine
        result = segmenter.segment(small.image, [Prompt(i, "box", box=b) for i, b in small.boxes.items()])
        scores[zoom] = [dice(result.labels == i, small.labels == i) for i in small.boxes]
        assert segmenter.stats.fine - before == (3 if zoom > 1 else 0)
    assert np.mean(scores[2.0]) > np.mean(scores[1.0]) + 0.03, scores
    large = insert_lesions(image, n_lesions=1, seed=12, radius_mm=(14.0, 16.0))
    fine = segmenters[2.0]
    before = fine.stats.fine
    result = fine.segment(large.image, [Prompt(i, "box", box=b) for i, b in large.boxes.items()])
    assert fine.stats.fine == before and dice(result.labels == 1, large.labels == 1) > 0.8


def test_a_point_goes_to_the_fine_grid_when_its_first_mask_is_small(segmenters):
    image = _oblique_ct()
    small = insert_lesions(image, n_lesions=2, seed=13, radius_mm=(3.0, 4.5), contrast_hu=(50.0, 70.0))
    prompts = [Prompt(i, "point", point=p) for i, p in small.points.items()]
    fine = segmenters[2.0]
    before = fine.stats.fine
    again = [fine.segment(small.image, prompts).labels for _ in range(2)]
    assert fine.stats.fine - before == 4
    np.testing.assert_array_equal(again[0], again[1])  # deterministic
    coarse = segmenters[1.0].segment(small.image, prompts).labels
    fine_dice = np.mean([dice(again[0] == i, small.labels == i) for i in small.points])
    coarse_dice = np.mean([dice(coarse == i, small.labels == i) for i in small.points])
    assert fine_dice >= coarse_dice, (fine_dice, coarse_dice)


def test_a_scan_already_on_the_networks_grid_gets_no_fine_pass(segmenters):
    """Interpolating a 3 mm scan to 1.5 mm adds nothing (on the synthetic held-out MR, 3 mm, it cost 0.05
    Dice): the fine grid is never finer than the scan's own voxels; a 2 mm scan gets a zoom of 1.5."""
    image = sitk.ReadImage(str(REPO_ROOT / "data" / "real" / "example_ct.nii.gz"), sitk.sitkFloat32)  # 3 mm
    small = insert_lesions(image, n_lesions=1, seed=14, radius_mm=(4.0, 5.0), contrast_hu=(60.0, 70.0))
    fine = segmenters[2.0]
    before = fine.stats.fine
    fine.segment(small.image, [Prompt(i, "box", box=b) for i, b in small.boxes.items()])
    assert fine.stats.fine == before
    model = fine._model_for("box")
    assert fine._fine_zoom(model, (3.0, 3.0, 3.0)) == 1.0 and fine._fine_zoom(model, (2.0, 2.0, 3.0)) == 1.5
    assert fine._fine_zoom(model, (7.0, 0.86, 0.86)) == 2.0 and fine._fine_zoom(model, (2.7, 2.7, 2.7)) == 1.0
