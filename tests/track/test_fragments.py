"""A lesion that fell apart is looked for before it is called gone (issue 24): its parts, lesion-like groups
of voxels near where it was, are re-prompted one by one; a lesion that is gone stays vanished.

The scans are small, oblique (rotated and flipped direction) and anisotropic (1.2 x 1.2 x 2.5 mm), with a
lesion whose contrast is about two noise SDs (2.7 on the 3 mm CT of the split-merge cohort)."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from lesionlocator.core.config import TrackConfig
from lesionlocator.core.io import Geometry
from lesionlocator.segment.api import Prompt, SegmentationResult
from lesionlocator.track.evidence import lesion_levels, lesion_like_parts
from lesionlocator.track.followup import Judgement, References, _dilate_mm, judge_lesions, lifecycle, refind_fragments
from tests.helpers import OBLIQUE_DIRECTION

SHAPE = (20, 48, 48)  # z y x
SPACING_XYZ = (1.2, 1.2, 2.5)
BODY, LEVEL, NOISE = 100.0, 115.0, 7.0  # a lesion 15 units above its surroundings: about 2 noise SDs


def _ball(centre_zyx, radius_mm) -> np.ndarray:
    z, y, x = np.indices(SHAPE)
    dz, dy, dx = (z - centre_zyx[0]) * SPACING_XYZ[2], (y - centre_zyx[1]) * SPACING_XYZ[1], (x - centre_zyx[2]) * SPACING_XYZ[0]
    return dz**2 + dy**2 + dx**2 <= radius_mm**2


def _scan(seed: int, lesions: list[np.ndarray]) -> sitk.Image:
    """Air (0) around a cylindrical body, the given masks at the lesion's level, noise everywhere."""
    _, y, x = np.indices(SHAPE)
    body = (y - 24) ** 2 + (x - 24) ** 2 <= 22**2
    array = np.where(body, BODY, 0.0) + np.random.default_rng(seed).normal(0.0, NOISE, SHAPE)
    for mask in lesions:
        array[mask] += LEVEL - BODY
    image = sitk.GetImageFromArray(array.astype(np.float32))
    image.SetSpacing(SPACING_XYZ)
    image.SetDirection(OBLIQUE_DIRECTION)
    image.SetOrigin((5.0, -3.0, 11.0))
    return image


LESION = _ball((10, 24, 24), 8.0)  # at baseline
LOBES = [_ball((9, 24, 19), 5.0), _ball((11, 24, 29), 5.0)]  # its two parts now, 13 mm apart, about where it was
FAR = _ball((10, 24, 42), 3.0)  # lesion-like tissue 10 mm beyond the lesion's edge (more than its 8 mm margin)
TRACK = TrackConfig()


class PartSegmenter:
    """A segmenter that outlines the part holding a point prompt, and ``whole`` (one blob over both parts
    and the tissue between them, as the network did) for any other prompt."""

    def __init__(self, parts: list[np.ndarray], whole: np.ndarray):
        self.parts, self.whole = parts, whole
        self.prompts: list[Prompt] = []

    def segment(self, image, prompts):
        self.prompts += list(prompts)
        labels = np.zeros(SHAPE, np.uint32)
        for prompt in prompts:
            if prompt.kind != "point":
                labels[self.whole] = prompt.lesion_id
                continue
            at = tuple(int(round(v)) for v in prompt.point)
            for part in self.parts:
                if part[at]:
                    labels[part] = prompt.lesion_id
        return SegmentationResult(labels)


def _refs(current: sitk.Image) -> References:
    baseline = _scan(0, [LESION])
    refs = References({0: baseline}, {0: (LESION.astype(np.uint32), Geometry.of(baseline))}, {1: 0}, sitk.GetArrayViewFromImage(current))
    refs.spacing_xyz = current.GetSpacing()
    return refs


def _region(current: sitk.Image) -> np.ndarray:
    return _dilate_mm(LESION, Geometry.of(current), 8.0)  # what judge_lesions searches: half the lesion's 16 mm diameter


def test_lesion_like_parts_are_the_lobes_near_the_lesion_not_noise_nor_tissue_beyond_its_margin():
    current = _scan(5, LOBES + [FAR])
    baseline = _scan(0, [LESION])
    reference = lesion_levels(sitk.GetArrayViewFromImage(baseline), LESION, np.array(SPACING_XYZ[::-1]))
    region = _region(current)
    assert not (region & FAR).any()  # 10 mm from the lesion along x: outside its 8 mm margin (in mm, not voxels)
    parts = lesion_like_parts(sitk.GetArrayViewFromImage(current), region, reference, 1.0, 0.0, min_voxels=20, max_parts=4)
    assert len(parts) == 2
    for part in parts:  # each part lies mostly in one lobe (noise voxels beside it join), and covers most of it
        lobe = max(LOBES, key=lambda lobe: int((lobe & part).sum()))
        assert (part & lobe).sum() >= 0.6 * part.sum() and (part & lobe).sum() >= 0.5 * lobe.sum()
    gone = lesion_like_parts(sitk.GetArrayViewFromImage(_scan(5, [])), region, reference, 1.0, 0.0, min_voxels=20, max_parts=4)
    assert gone == []  # noise alone does not chain into parts


def test_refind_fragments_prompts_a_point_inside_each_part_and_returns_their_union():
    current = _scan(5, LOBES)
    segmenter = PartSegmenter(LOBES, LESION)
    union = refind_fragments(1, _region(current), current, segmenter, _refs(current), TRACK, min_voxels=1)
    assert union is not None and (union == (LOBES[0] | LOBES[1])).all()
    assert [p.kind for p in segmenter.prompts] == ["point", "point"]
    assert all(any(lobe[tuple(int(v) for v in p.point)] for lobe in LOBES) for p in segmenter.prompts)


def _judge(current: sitk.Image, segmenter, refind=None) -> tuple[Judgement, np.ndarray]:
    labels = np.where(LESION, 1, 0).astype(np.uint32)  # the network's mask: over both lobes and the gap between them
    judged = judge_lesions(labels, current, [1], {1: Prompt(1, "mask", mask=LESION)}, {1: LESION}, {}, _refs(current), None, TRACK,
                           segmenter=segmenter, refind=refind)
    lifecycle(labels, judged, np.zeros(SHAPE, np.uint32), TRACK.split_min_fraction)
    return judged[1], labels


def test_a_lesion_that_fell_apart_is_split_not_vanished():
    current = _scan(5, LOBES)
    judgement, labels = _judge(current, PartSegmenter(LOBES, LESION))
    assert judgement.status == "split", judgement
    assert judgement.reason is not None and "re-found" in judgement.reason  # flagged for a reader
    assert ((labels == 1) == (LOBES[0] | LOBES[1])).all()
    # without the search (no segmenter to re-prompt) the faded mask over both lobes is all there is: at best
    # the lesion-like tissue left makes it uncertain (on the cohort's CT, where the reference shell held more
    # lesion-like voxels than noise gives, it was vanished)
    assert _judge(current, None)[0].status in ("uncertain", "vanished")


def test_a_lesion_that_is_gone_stays_vanished_with_the_search():
    current = _scan(5, [])
    segmenter = PartSegmenter([], LESION)
    judgement, labels = _judge(current, segmenter)
    assert judgement.status == "vanished" and not labels.any()
    assert not any(p.kind == "point" for p in segmenter.prompts)  # nothing lesion-like to prompt


def test_parts_are_looked_for_only_for_a_lesion_seen_at_the_previous_session():
    """A lesion already gone (not observed at the previous session) must come back by its own prompt:
    lesion-like tissue near its old mask is no evidence that it reappeared (on the cohort a vanished lesion
    was "re-found" 23 mm from the truth that way)."""
    current = _scan(5, LOBES)
    assert _judge(current, PartSegmenter(LOBES, LESION), refind={1})[0].status == "split"
    assert _judge(current, PartSegmenter(LOBES, LESION), refind=set())[0].status in ("uncertain", "vanished")
