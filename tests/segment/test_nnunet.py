"""nnU-Net inference: prompt-focused patches, stitching, back-mapping, folds, TTA, overlaps."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from lesionlocator.core.config import SegmentConfig
from lesionlocator.core.io import Geometry, same_geometry
from lesionlocator.core.regions import dice
from lesionlocator.segment.api import Prompt
from lesionlocator.segment.nnunet import NnUNetSegmenter, patch_starts


class EchoPrompt(torch.nn.Module):
    """A stand-in network whose foreground logit is the prompt channel: tests the geometry exactly."""

    def forward(self, x):
        fg = (x[:, 1:2] - 0.5) * 20
        return torch.cat([-fg, fg], dim=1)


@pytest.fixture
def echo_segmenter(toy_model):
    segmenter = NnUNetSegmenter(SegmentConfig(checkpoint=toy_model, device="cpu", mirroring=True))
    model = segmenter._model_for("box")
    model.networks = [EchoPrompt(), EchoPrompt()]
    return segmenter


def test_box_prompt_comes_back_where_it_was(echo_segmenter, small_ct):
    box = ((10.0, 12.0, 15.0), (16.0, 20.0, 22.0))
    result = echo_segmenter.segment(small_ct, [Prompt(5, "box", box=box)])
    assert result.labels.dtype == np.uint32 and result.labels.shape == sitk.GetArrayFromImage(small_ct).shape
    mask = result.labels == 5
    lo, hi = np.array(box[0], int), np.array(box[1], int)
    inside = mask[lo[0]:hi[0] + 1, lo[1]:hi[1] + 1, lo[2]:hi[2] + 1]
    assert inside.all()  # the whole box is foreground
    where = np.argwhere(mask)
    # ... and nothing beyond the box dilated by one network voxel (<= 2.5 mm, i.e. <= 2 input voxels).
    assert np.all(where.min(0) >= lo - 2) and np.all(where.max(0) <= hi + 2)
    assert result.scores[5] > 0.8
    assert same_geometry(Geometry.of(result.to_image(small_ct)), Geometry.of(small_ct))


class Everywhere(torch.nn.Module):
    """A stand-in network that calls every voxel of its patch foreground: a mask spilling past any box."""

    def forward(self, x):
        fg = torch.full_like(x[:, :1], 10.0)
        return torch.cat([-fg, fg], dim=1)


@pytest.mark.parametrize("margin_mm", [0.0, 5.0, None])
def test_box_prompt_bounds_the_mask_by_its_margin(toy_model, small_ct, margin_mm):
    config = SegmentConfig(checkpoint=toy_model, folds=[0], device="cpu", mirroring=False, box_margin_mm=margin_mm)
    segmenter = NnUNetSegmenter(config)
    segmenter._model_for("box").networks = [Everywhere()]
    box = ((10.0, 12.0, 15.0), (16.0, 20.0, 22.0))
    mask = segmenter.segment(small_ct, [Prompt(5, "box", box=box)]).labels == 5
    lo, hi = np.array(box[0], int), np.array(box[1], int)
    where = np.argwhere(mask)
    if margin_mm is None:  # the network's mask as it is: the whole patch, far past the box
        assert np.all(where.min(0) < lo - 1) and np.all(where.max(0) > hi + 1)
        return
    spacing_zyx = np.array(small_ct.GetSpacing()[::-1])  # 3.1, 2.2, 1.7 mm
    grown = np.floor(0.5 + margin_mm / spacing_zyx).astype(int)  # 0 voxels; for 5 mm: 2, 2, 3
    assert where.min(0).tolist() == (lo - grown).tolist() and where.max(0).tolist() == (hi + grown).tolist()
    assert mask.sum() == np.prod(hi - lo + 1 + 2 * grown)  # every voxel of the grown box, nothing else


def test_mask_prompt_round_trip(echo_segmenter, small_ct):
    shape = sitk.GetArrayFromImage(small_ct).shape
    grid = np.indices(shape)
    centre = np.array([20, 24, 22])[:, None, None, None]
    mask = (((grid - centre) * np.array([3.1, 2.2, 1.7])[:, None, None, None]) ** 2).sum(0) <= 12.0**2
    result = echo_segmenter.segment(small_ct, [Prompt(9, "mask", mask=mask)])
    assert dice(result.labels == 9, mask) > 0.85


def test_large_box_uses_several_patches_and_covers_it(echo_segmenter, small_ct):
    echo_segmenter.stats.patches = 0
    box = ((2.0, 3.0, 3.0), (37.0, 44.0, 40.0))  # far larger than a 16^3 patch of 2-2.5 mm voxels
    result = echo_segmenter.segment(small_ct, [Prompt(1, "box", box=box)])
    assert echo_segmenter.stats.patches > 4
    lo, hi = np.array(box[0], int), np.array(box[1], int)
    assert (result.labels[lo[0]:hi[0] + 1, lo[1]:hi[1] + 1, lo[2]:hi[2] + 1] == 1).all()


def test_small_prompt_uses_one_patch_and_leaves_the_rest_background(toy_model, small_ct):
    segmenter = NnUNetSegmenter(SegmentConfig(checkpoint=toy_model, folds=[0], device="cpu", mirroring=False))
    result = segmenter.segment(small_ct, [Prompt(3, "point", point=(20.0, 24.0, 22.0))])
    assert segmenter.stats.patches == 1 and segmenter.stats.forwards == 1
    # A 16^3 patch at 2-2.5 mm covers at most ~40 mm around the point: voxels far away are background.
    assert not result.labels[:, :, :5].any() and not result.labels[:, :, -5:].any()


@pytest.mark.slow
def test_random_network_is_deterministic_and_uses_folds_and_mirroring(toy_model, small_ct):
    prompts = [Prompt(3, "point", point=(20.0, 24.0, 22.0)), Prompt(300, "box", box=((5.0, 5.0, 5.0), (12.0, 12.0, 12.0)))]
    segmenter = NnUNetSegmenter(SegmentConfig(checkpoint=toy_model, device="cpu", mirroring=True))
    first = segmenter.segment(small_ct, prompts)
    assert segmenter.stats.forwards == 2 * 2 * 8  # 2 lesions x 2 folds x 8 mirrorings
    second = segmenter.segment(small_ct, prompts)
    assert np.array_equal(first.labels, second.labels) and first.scores == second.scores
    assert set(first.scores) == {3, 300}


def test_image_smaller_than_a_patch(toy_model):
    image = sitk.GetImageFromArray(np.full((6, 7, 8), 50, np.int16))
    image.SetSpacing((2.0, 2.0, 2.5))
    segmenter = NnUNetSegmenter(SegmentConfig(checkpoint=toy_model, folds=[0], device="cpu", mirroring=False))
    model = segmenter._model_for("box")
    model.networks = [EchoPrompt()]
    result = segmenter.segment(image, [Prompt(2, "point", point=(3.0, 3.0, 4.0))])
    assert result.labels.shape == (6, 7, 8) and result.labels[3, 3, 4] == 2


def test_patch_starts_cover_extent_only():
    starts = patch_starts(np.array([10, 0, 0]), np.array([50, 8, 8]), np.array([100, 60, 60]), np.array([16, 16, 16]), 0.5)
    zs = sorted({int(s[0]) for s in starts})
    assert zs[0] == 10 and zs[-1] + 16 == 50 and all(b - a <= 8 for a, b in zip(zs, zs[1:]))
    assert {int(s[1]) for s in starts} == {0}
