"""A second opinion for the lesions a network returns empty.

The bundled network is trained at 3 mm on lesions of a few millilitres. A follow-up lesion of a
handful of voxels (a shrinking responder on a coarse scan) can fall below its 0.5 threshold
everywhere, and tracking would then call it vanished: a false complete response. Whenever the
primary segmenter returns nothing for a non-empty prompt, :class:`WithFallback` asks the fallback
(the classical segmenter, which works on the scan's own grid) for that lesion alone, and puts its
voxels where no other lesion already is. Whether a lesion is really gone is decided downstream
(tracking's contrast test), not by the emptiness of one segmenter's output.
"""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import SimpleITK as sitk

from lesionlocator.segment.api import Prompt, SegmentationResult, Segmenter

log = logging.getLogger(__name__)


def _has_content(prompt: Prompt) -> bool:
    return prompt.kind != "mask" or bool(prompt.mask.any())


class WithFallback:
    """``primary``'s segmentation, with ``fallback``'s for each lesion ``primary`` left empty."""

    def __init__(self, primary: Segmenter, fallback: Segmenter):
        self.primary = primary
        self.fallback = fallback

    def segment(self, image: sitk.Image, prompts: Sequence[Prompt]) -> SegmentationResult:
        result = self.primary.segment(image, prompts)
        volumes = result.volumes_voxels()
        empty = [p for p in prompts if _has_content(p) and volumes.get(int(p.lesion_id), 0) == 0]
        if not empty:
            return result
        second = self.fallback.segment(image, empty)
        labels = result.labels.copy()
        scores = dict(result.scores)
        found = set(result.by_fallback)
        for prompt in empty:
            lesion_id = np.uint32(prompt.lesion_id)
            take = (second.labels == lesion_id) & (labels == 0)
            if take.any():
                labels[take] = lesion_id
                scores[int(lesion_id)] = second.scores[int(lesion_id)]
                found.add(int(lesion_id))
                log.info("lesion %d: the network's mask is empty; the fallback segmenter found %d voxel(s)",
                         int(lesion_id), int(take.sum()))
        return SegmentationResult(labels=labels, scores=scores, by_fallback=frozenset(found))
