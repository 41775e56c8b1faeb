"""Evidence-based statuses (issue 24, item 2): vanished only with evidence, a shrunk lesion stays present,
conflicting evidence is uncertain, a jump is lost, and a lesion that never stood out is not called gone."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from lesionlocator.core.config import TrackConfig
from lesionlocator.core.io import Geometry
from lesionlocator.segment.api import Prompt, SegmentationResult
from lesionlocator.track.evidence import is_reliable, lesion_levels, novelty
from lesionlocator.track.followup import References, judge_lesions
from tests.helpers import OBLIQUE_DIRECTION

SHAPE = (20, 48, 48)
SPACING_XYZ = (1.2, 1.2, 2.5)


def _ball(centre, radius_mm) -> np.ndarray:
    z, y, x = np.indices(SHAPE)
    dz, dy, dx = (z - centre[0]) * SPACING_XYZ[2], (y - centre[1]) * SPACING_XYZ[1], (x - centre[2]) * SPACING_XYZ[0]
    return dz**2 + dy**2 + dx**2 <= radius_mm**2


def _scan(seed: int, lesions: list[tuple[np.ndarray, float]], body: float = 100.0) -> sitk.Image:
    """Air (0) around a cylindrical body (``body``), lesions at their levels, noise of SD 4."""
    _, y, x = np.indices(SHAPE)
    inside = (y - 24) ** 2 + (x - 24) ** 2 <= 22**2
    array = np.random.default_rng(seed).normal(0.0, 4.0, SHAPE).astype(np.float32) + np.where(inside, body, 0.0).astype(np.float32)
    for mask, level in lesions:
        array[mask] = np.random.default_rng(seed + 1).normal(level, 4.0, int(mask.sum()))
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(SPACING_XYZ)
    image.SetDirection(OBLIQUE_DIRECTION)
    image.SetOrigin((5.0, -3.0, 11.0))
    return image


class Fixed:
    """A second segmenter that returns one given mask for any prompt."""

    def __init__(self, mask: np.ndarray | None):
        self.mask = mask

    def segment(self, image, prompts):
        labels = np.zeros(SHAPE, np.uint32)
        if self.mask is not None:
            labels[self.mask] = prompts[0].lesion_id
        return SegmentationResult(labels)


LESION = _ball((10, 24, 24), 8.0)
TRACK = TrackConfig()


def _judge(current: sitk.Image, mask: np.ndarray, *, baseline_level=160.0, second=None, previous=None, volume_before=None):
    baseline = _scan(0, [(LESION, baseline_level)])
    labels = np.where(mask, 1, 0).astype(np.uint32)
    refs = References({0: baseline}, {0: (LESION.astype(np.uint32), Geometry.of(baseline))}, {1: 0}, sitk.GetArrayViewFromImage(current))
    prompt = Prompt(1, "mask", mask=LESION)
    judged = judge_lesions(labels, current, [1], {1: prompt}, {1: LESION if previous is None else previous},
                           {1: volume_before} if volume_before else {}, refs, Fixed(second), TRACK)
    return judged[1], labels


def test_a_lesion_that_is_gone_is_vanished_when_both_segmenters_agree():
    judgement, labels = _judge(_scan(5, []), LESION, second=None)
    assert judgement.status == "vanished" and not labels.any()


def test_segmenters_disagree_is_uncertain_and_keeps_the_mask():
    # the network's mask lies where the lesion was (faded); the classical one finds the lesion beside it
    moved = _ball((10, 24, 33), 6.0)
    judgement, labels = _judge(_scan(5, [(moved, 160.0)]), LESION & ~_ball((10, 24, 33), 9.0), second=moved)
    assert judgement.status == "uncertain" and "disagree" in judgement.reason
    assert labels.any()


def test_shrunk_to_40_percent_stays_present():
    small = _ball((10, 24, 24), 8.0 * 0.4 ** (1 / 3))
    judgement, _ = _judge(_scan(5, [(small, 160.0)]), small)
    assert judgement.status == "present"


def test_a_lesion_that_never_stood_out_is_not_called_gone():
    # the reference mask barely differs from its shell (a baseline mask that spilled into other tissue)
    judgement, labels = _judge(_scan(5, []), LESION, baseline_level=101.0)
    baseline = _scan(0, [(LESION, 101.0)])
    levels = lesion_levels(sitk.GetArrayViewFromImage(baseline), LESION, np.array(SPACING_XYZ[::-1]))
    assert not is_reliable(levels, TRACK.reliable_contrast_sd)
    assert judgement.status == "present" and labels.any()


def test_a_mask_far_from_its_last_mask_is_lost_and_cleared():
    elsewhere = _ball((10, 8, 8), 5.0)
    judgement, labels = _judge(_scan(5, [(LESION, 160.0), (elsewhere, 160.0)]), elsewhere)
    assert judgement.status == "lost" and "mm from its propagated last mask" in judgement.reason
    assert not labels.any()


@pytest.mark.parametrize("factor", [0.05, 20.0])
def test_an_implausible_volume_change_is_uncertain(factor):
    geometry = Geometry.of(_scan(5, []))
    volume = LESION.sum() * geometry.voxel_volume_ml()
    judgement, labels = _judge(_scan(5, [(LESION, 160.0)]), LESION, volume_before=volume * factor)
    assert judgement.status == "uncertain" and "volume x" in judgement.reason and labels.any()


def test_novelty_tells_a_lesion_that_appeared_from_anatomy_that_was_there():
    before = _scan(0, [])
    after = _scan(5, [(LESION, 160.0)])
    reference = lesion_levels(sitk.GetArrayViewFromImage(after), LESION, np.array(SPACING_XYZ[::-1]))
    identity = sitk.Transform(3, sitk.sitkIdentity)
    assert novelty(after, LESION, before, identity, reference, 1.0, 0.0) == pytest.approx(1.0, abs=0.15)
    assert abs(novelty(after, LESION, after, identity, reference, 1.0, 0.0)) < 0.1  # the same anatomy: no news
