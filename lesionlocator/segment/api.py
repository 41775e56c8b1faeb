"""The promptable segmentation interface: prompts in, one instance label map out.

Every coordinate here is a **voxel index (z, y, x)** of the array that ``sitk.GetArrayFromImage``
returns for the image being segmented (continuous: ``(2.0, 3.5, 4.0)`` lies between voxel
centres). Conversion from world mm happens before (see :mod:`lesionlocator.segment.prompting`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal, Protocol, Sequence

import numpy as np
import SimpleITK as sitk

from lesionlocator.core.errors import InputError
from lesionlocator.core.io import image_from_array
from lesionlocator.core.regions import nonzero_box

log = logging.getLogger(__name__)

MAX_LESION_ID = 2**31 - 1
PromptKind = Literal["point", "box", "mask"]
Vec3 = tuple[float, float, float]


@dataclass(frozen=True, eq=False)
class Prompt:
    """The prompt of one lesion, in the voxel index frame (z, y, x) of the image being segmented.

    ``point`` is a continuous index; ``box`` is ``(min_zyx, max_zyx)`` inclusive of both corners
    (a box whose min equals its max on an axis is one voxel thick there); ``mask`` is a boolean
    array of the image's shape.
    """

    lesion_id: int
    kind: PromptKind
    point: Vec3 | None = None
    box: tuple[Vec3, Vec3] | None = None
    mask: np.ndarray | None = None

    def __post_init__(self) -> None:
        if isinstance(self.lesion_id, bool) or not isinstance(self.lesion_id, (int, np.integer)):
            raise ValueError(f"lesion_id must be an int, got {self.lesion_id!r}")
        if not 1 <= int(self.lesion_id) <= MAX_LESION_ID:
            raise ValueError(f"lesion_id {self.lesion_id} outside 1..{MAX_LESION_ID}")
        given = {"point": self.point is not None, "box": self.box is not None, "mask": self.mask is not None}
        if self.kind not in given:
            raise ValueError(f"lesion {self.lesion_id}: unknown prompt kind {self.kind!r}")
        if not given[self.kind] or sum(given.values()) != 1:
            raise ValueError(f"lesion {self.lesion_id}: a {self.kind} prompt needs exactly the field {self.kind!r}")
        if self.point is not None and (len(self.point) != 3 or not np.all(np.isfinite(self.point))):
            raise ValueError(f"lesion {self.lesion_id}: point must be 3 finite numbers, got {self.point}")
        if self.box is not None:
            lo, hi = np.asarray(self.box[0], float), np.asarray(self.box[1], float)
            if lo.shape != (3,) or hi.shape != (3,) or not (np.isfinite(lo).all() and np.isfinite(hi).all()):
                raise ValueError(f"lesion {self.lesion_id}: box must be two corners of 3 finite numbers")
            if np.any(lo > hi):
                raise ValueError(f"lesion {self.lesion_id}: box min {lo.tolist()} exceeds max {hi.tolist()}")
        if self.mask is not None and (self.mask.ndim != 3 or self.mask.dtype != bool):
            raise ValueError(f"lesion {self.lesion_id}: mask must be a 3D bool array, got {self.mask.dtype} {self.mask.shape}")

    def extent(self) -> tuple[np.ndarray, np.ndarray]:
        """The prompt's bounding box (min, max) in continuous voxel indices (z, y, x), inclusive."""
        if self.kind == "point":
            p = np.asarray(self.point, float)
            return p, p
        if self.kind == "box":
            return np.asarray(self.box[0], float), np.asarray(self.box[1], float)
        box = nonzero_box(self.mask)  # from projections: a scan-sized mask is not searched voxel by voxel
        if box is None:
            raise ValueError(f"lesion {self.lesion_id}: empty mask")
        return np.asarray([b.start for b in box], float), np.asarray([b.stop - 1 for b in box], float)


@dataclass
class SegmentationResult:
    """One scan's lesions: an instance map (lesion ID = prompt ID, 0 = background) and a score per lesion.

    ``scores[id]`` is the mean foreground probability inside the lesion's final mask (0 when the
    mask is empty, e.g. a lesion that lost every voxel to a neighbour with a higher probability).
    ``by_fallback`` holds the IDs whose mask a fallback segmenter made (see
    :mod:`lesionlocator.segment.fallback`).
    """

    labels: np.ndarray
    scores: dict[int, float] = field(default_factory=dict)
    by_fallback: frozenset[int] = frozenset()

    def to_image(self, reference: sitk.Image) -> sitk.Image:
        """The label map as a uint32 image with exactly the geometry of ``reference``."""
        return image_from_array(self.labels.astype(np.uint32, copy=False), reference)

    def lesion_mask(self, lesion_id: int) -> np.ndarray:
        return self.labels == np.uint32(lesion_id)

    def volumes_voxels(self) -> dict[int, int]:
        ids, counts = np.unique(self.labels, return_counts=True)
        found = {int(i): int(c) for i, c in zip(ids, counts) if i != 0}
        return {lesion_id: found.get(lesion_id, 0) for lesion_id in self.scores}


class Segmenter(Protocol):
    """Built once per job (weights loaded once), then called for every scan."""

    def segment(self, image: sitk.Image, prompts: Sequence[Prompt]) -> SegmentationResult: ...


@dataclass
class LesionPrediction:
    """A lesion's probability of being foreground inside a box of the input array (z, y, x)."""

    lesion_id: int
    slices: tuple[slice, slice, slice]
    probability: np.ndarray  # float32, shape of the box
    threshold: float = 0.5

    @property
    def mask(self) -> np.ndarray:
        return self.probability > self.threshold


def check_prompts(prompts: Sequence[Prompt], shape_zyx: tuple[int, int, int], source: str = "prompts") -> list[Prompt]:
    """Validate prompts against the image shape; returns them with boxes clipped to the image.

    Raises :class:`InputError` (naming ``source``) for a repeated lesion ID, a point outside the
    image (beyond half a voxel), a box that misses the image, or a mask of the wrong shape.
    A box partly outside is clipped (with a warning); an empty mask is kept (its lesion comes out
    empty, score 0), since a lesion that vanished at one follow-up legitimately has one.
    """
    seen: set[int] = set()
    shape = np.asarray(shape_zyx)
    checked = []
    for prompt in prompts:
        lesion_id = int(prompt.lesion_id)
        if lesion_id in seen:
            raise InputError(source, f"lesion id {lesion_id} repeated (each lesion needs one prompt)")
        seen.add(lesion_id)
        if prompt.kind == "point":
            p = np.asarray(prompt.point, float)
            if np.any(p < -0.5) or np.any(p > shape - 0.5):
                raise InputError(
                    source, f"lesion {lesion_id}: point (z,y,x) {np.round(p, 2).tolist()} lies outside the image {shape.tolist()}"
                )
        elif prompt.kind == "box":
            lo, hi = (np.asarray(c, float) for c in prompt.box)
            if np.any(hi < -0.5) or np.any(lo > shape - 0.5):
                raise InputError(
                    source, f"lesion {lesion_id}: box (z,y,x) {lo.tolist()}..{hi.tolist()} lies outside the image {shape.tolist()}"
                )
            clo, chi = np.clip(lo, 0, shape - 1), np.clip(hi, 0, shape - 1)
            if not (np.allclose(clo, lo, atol=0.5) and np.allclose(chi, hi, atol=0.5)):
                log.warning("lesion %d: box %s..%s reaches outside the image; clipped", lesion_id, lo.tolist(), hi.tolist())
            prompt = Prompt(lesion_id, "box", box=(tuple(clo.tolist()), tuple(chi.tolist())))
        else:
            if tuple(prompt.mask.shape) != tuple(shape_zyx):
                raise InputError(
                    source, f"lesion {lesion_id}: mask shape {list(prompt.mask.shape)} differs from the image {list(shape_zyx)}"
                )
            if not prompt.mask.any():
                log.warning("lesion %d: empty mask prompt; the lesion comes out empty", lesion_id)
        checked.append(prompt)
    return checked


def combine_predictions(
    shape_zyx: tuple[int, int, int], predictions: Sequence[LesionPrediction], lesion_ids: Sequence[int]
) -> SegmentationResult:
    """One uint32 instance map: each voxel goes to the lesion with the highest probability there.

    Ties go to the prompt listed first. ``scores`` has an entry for every ID in ``lesion_ids``.
    """
    labels = np.zeros(shape_zyx, dtype=np.uint32)
    best = np.zeros(shape_zyx, dtype=np.float32)
    for pred in predictions:
        region_best = best[pred.slices]
        take = pred.mask & (pred.probability > region_best)
        labels[pred.slices][take] = np.uint32(pred.lesion_id)
        region_best[take] = pred.probability[take]
    scores = {int(i): 0.0 for i in lesion_ids}
    for pred in predictions:
        inside = labels[pred.slices] == np.uint32(pred.lesion_id)
        if inside.any():
            # 3 decimals: torch's CPU convolutions sum in an order that depends on the thread count (1e-7
            # apart); at 6 decimals one job's table differed between 1 and 2 threads
            scores[int(pred.lesion_id)] = round(float(pred.probability[inside].mean()), 3)
    return SegmentationResult(labels=labels, scores=scores)
