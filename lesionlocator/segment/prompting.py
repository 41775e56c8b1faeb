"""Prompts for the segmenter from a ``prompts.json`` (world or voxel frame) or an instance mask image."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from lesionlocator.core.errors import InputError
from lesionlocator.core.io import Geometry, geometry_difference, read_image
from lesionlocator.core.prompts import PromptFile
from lesionlocator.segment.api import MAX_LESION_ID, Prompt, PromptKind


def prompts_from_file(
    prompt_file: PromptFile, geometry: Geometry, kinds: Sequence[PromptKind] = ("box", "point")
) -> list[Prompt]:
    """Segmenter prompts (voxel frame of ``geometry``) from a prompt file.

    A lesion that has both a point and a box gets the first kind of ``kinds`` it has; a lesion
    with none of ``kinds`` is an error. A world box becomes the voxel bounding box of its corners.
    An entry that only reviews a candidate (``review`` without point or box) gives no prompt.
    """
    voxel = prompt_file.in_voxel_frame(geometry)
    prompts = []
    for lesion in voxel.lesions:
        if not lesion.has_prompt:
            continue
        for kind in kinds:
            if kind == "box" and lesion.box is not None:
                prompts.append(Prompt(lesion.id, "box", box=(tuple(lesion.box.min), tuple(lesion.box.max))))
                break
            if kind == "point" and lesion.point is not None:
                prompts.append(Prompt(lesion.id, "point", point=tuple(lesion.point)))
                break
        else:
            raise ValueError(f"lesion {lesion.id} has none of the prompt kinds {list(kinds)}")
    return prompts


def interior_point(mask: np.ndarray) -> tuple[float, float, float]:
    """A voxel inside ``mask``: its centroid when that lies inside, else the most interior voxel."""
    idx = np.argwhere(mask)
    centroid = np.round(idx.mean(0)).astype(int)
    if mask[tuple(centroid)]:
        return tuple(float(c) for c in centroid)
    lo, hi = idx.min(0), idx.max(0) + 1
    sub = mask[tuple(slice(a, b) for a, b in zip(lo, hi))]
    depth = ndimage.distance_transform_edt(np.pad(sub, 1))[1:-1, 1:-1, 1:-1]
    best = np.unravel_index(int(np.argmax(depth)), sub.shape)
    return tuple(float(b + a) for a, b in zip(lo, best))


def prompts_from_label_array(labels: np.ndarray, kind: PromptKind = "mask", source: str = "mask") -> list[Prompt]:
    """One prompt per non-zero label of an instance map (z, y, x); the label value is the lesion ID.

    ``kind`` "mask" gives the lesion's voxels, "box" their inclusive bounding box, "point" an
    interior point. IDs need not be consecutive and may exceed 255.
    """
    if labels.dtype.kind not in "iub":
        if not np.all(np.mod(labels, 1) == 0):
            raise InputError(source, f"instance mask holds non-integer values (dtype {labels.dtype})")
        labels = labels.astype(np.int64)
    if labels.min(initial=0) < 0 or labels.max(initial=0) > MAX_LESION_ID:
        raise InputError(source, f"instance mask labels must lie in 0..{MAX_LESION_ID}")
    ids = np.unique(labels)
    ids = ids[ids != 0]
    objects = ndimage.find_objects(labels.astype(np.int64) if labels.dtype == bool else labels) if len(ids) and ids.max() < 10**6 else None
    prompts = []
    for lesion_id in ids:
        lesion_id = int(lesion_id)
        if objects is not None:
            slices = objects[lesion_id - 1]
            local = labels[slices] == lesion_id
        else:
            full = labels == lesion_id
            where = np.argwhere(full)
            slices = tuple(slice(a, b + 1) for a, b in zip(where.min(0), where.max(0)))
            local = full[slices]
        offset = np.array([s.start for s in slices])
        if kind == "mask":
            mask = np.zeros(labels.shape, dtype=bool)
            mask[slices] = local
            prompts.append(Prompt(lesion_id, "mask", mask=mask))
        elif kind == "box":
            where = np.argwhere(local)
            lo, hi = where.min(0) + offset, where.max(0) + offset
            prompts.append(Prompt(lesion_id, "box", box=(tuple(map(float, lo)), tuple(map(float, hi)))))
        elif kind == "point":
            p = np.asarray(interior_point(local)) + offset
            prompts.append(Prompt(lesion_id, "point", point=tuple(map(float, p))))
        else:
            raise ValueError(f"unknown prompt kind {kind!r}")
    return prompts


def prompts_from_mask(
    mask: str | Path | sitk.Image, geometry: Geometry, kind: PromptKind = "mask", source: str | Path | None = None
) -> list[Prompt]:
    """Prompts from an instance mask image whose geometry must equal ``geometry`` (the image's)."""
    if not isinstance(mask, sitk.Image):
        source = source or mask
        mask = read_image(mask)
    source = str(source or "prompt mask")
    difference = geometry_difference(Geometry.of(mask), geometry, tolerance=1e-3)
    if difference is not None:
        raise InputError(source, f"prompt mask geometry differs from the image: {difference}")
    return prompts_from_label_array(sitk.GetArrayFromImage(mask), kind=kind, source=source)
