"""WithFallback: the classical segmenter re-segments only the lesions the network left empty."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from lesionlocator.core.config import SegmentConfig
from lesionlocator.core.regions import dice
from lesionlocator.segment.api import Prompt, SegmentationResult
from lesionlocator.segment.classical import ClassicalSegmenter
from lesionlocator.segment.fallback import WithFallback

CLASSICAL = SegmentConfig(segmenter="classical")


class Drops:
    """A primary segmenter that returns the truth for some lesions and nothing for the others."""

    def __init__(self, truth: np.ndarray, dropped: set[int]):
        self.truth, self.dropped, self.calls = truth, dropped, []

    def segment(self, image: sitk.Image, prompts) -> SegmentationResult:
        self.calls.append([p.lesion_id for p in prompts])
        keep = [p.lesion_id for p in prompts if p.lesion_id not in self.dropped]
        labels = np.where(np.isin(self.truth, keep), self.truth, 0).astype(np.uint32)
        return SegmentationResult(labels, {p.lesion_id: (0.9 if p.lesion_id in keep else 0.0) for p in prompts})


class Recording(ClassicalSegmenter):
    def __init__(self):
        super().__init__(CLASSICAL)
        self.calls = []

    def segment(self, image, prompts):
        self.calls.append([p.lesion_id for p in prompts])
        return super().segment(image, prompts)


def test_only_the_empty_lesions_go_to_the_fallback(lesion_case):
    ids = sorted(lesion_case.boxes)
    dropped = {ids[0], ids[2]}
    primary, fallback = Drops(lesion_case.labels, dropped), Recording()
    prompts = [Prompt(i, "box", box=b) for i, b in lesion_case.boxes.items()]
    result = WithFallback(primary, fallback).segment(lesion_case.image, prompts)

    assert fallback.calls == [[p.lesion_id for p in prompts if p.lesion_id in dropped]]
    assert result.by_fallback == dropped
    for i in ids:
        found = result.labels == np.uint32(i)
        if i in dropped:
            assert dice(found, lesion_case.labels == i) > 0.7 and 0 < result.scores[i] < 1
        else:  # the primary's lesions are kept voxel for voxel
            assert np.array_equal(found, lesion_case.labels == i) and result.scores[i] == 0.9


def test_nothing_reaches_the_fallback_when_every_lesion_is_found(lesion_case):
    primary, fallback = Drops(lesion_case.labels, set()), Recording()
    prompts = [Prompt(i, "box", box=b) for i, b in lesion_case.boxes.items()]
    result = WithFallback(primary, fallback).segment(lesion_case.image, prompts)
    assert fallback.calls == [] and np.array_equal(result.labels, lesion_case.labels.astype(np.uint32))
    assert result.by_fallback == frozenset()


def test_an_empty_mask_prompt_stays_empty(lesion_case):
    primary, fallback = Drops(lesion_case.labels, {7}), Recording()
    empty = Prompt(7, "mask", mask=np.zeros(lesion_case.labels.shape, bool))
    result = WithFallback(primary, fallback).segment(lesion_case.image, [empty])
    assert fallback.calls == [] and not result.labels.any() and result.scores == {7: 0.0}


def test_fallback_voxels_never_take_another_lesions_voxels(lesion_case):
    ids = sorted(lesion_case.boxes)
    kept, lost = ids[0], ids[1]
    # The lost lesion's prompt is a box over the kept lesion: the classical mask lands on its voxels.
    box = lesion_case.boxes[kept]
    prompts = [Prompt(kept, "box", box=box), Prompt(lost, "box", box=box)]
    result = WithFallback(Drops(lesion_case.labels, {lost}), ClassicalSegmenter(CLASSICAL)).segment(lesion_case.image, prompts)
    assert np.array_equal(result.labels == np.uint32(kept), lesion_case.labels == kept)
