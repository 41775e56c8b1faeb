"""Comparing two segmenter paths on the suite's lesion case: the prompts, and "the same masks"."""

from __future__ import annotations

from lesionlocator.core.regions import dice
from lesionlocator.segment.api import Prompt, SegmentationResult


def mixed_prompts(case) -> tuple[list[int], list[Prompt]]:
    """The case's lesion IDs, and a box prompt for the first three and a point prompt for the rest."""
    ids = list(case.boxes)
    prompts = [Prompt(i, "box", box=case.boxes[i]) for i in ids[:3]] + [Prompt(i, "point", point=case.points[i]) for i in ids[3:]]
    return ids, prompts


def assert_same_masks(fast: SegmentationResult, reference: SegmentationResult, ids: list[int]) -> None:
    """Every lesion found by ``reference`` (over 10 voxels), with Dice >= 0.999 and scores within 1e-3 in ``fast``."""
    assert all((reference.labels == i).sum() > 10 for i in ids)
    for i in ids:
        assert dice(fast.labels == i, reference.labels == i) >= 0.999, i
        assert abs(fast.scores[i] - reference.scores[i]) <= 1e-3
