"""Anchored prompts: a follow-up is segmented from the lesion's anchor, checked against its last mask.

Feeding a lesion's predicted mask back as the next session's prompt (LesionLocator's autoregressive
scheme) compounds the segmenter's bias: on the same scan repeated, a mask that is 5 % too large
becomes the prompt of a mask that is 5 % larger again, and a lesion's volume walks. Here every
follow-up is first prompted from the lesion's **anchor**: the last prompt a reader gave for it (the
baseline's box, point or mask, or a correction at a later session), or, for a new lesion that the
detector found, a box around its mask at its first sighting. The anchor is carried to the follow-up
through the chain of registration transforms, so on an unchanged scan the prompt, and hence the
mask, is the baseline's.

The anchor's mask is then checked against the lesion's **last mask** (propagated from the last
session where the lesion was observed). It is rejected, and the lesion re-prompted from the last
mask (:func:`reprompt`), when it is

* empty where the lesion was seen before,
* far from the last mask: its centroid further than ``max_jump_mm`` plus half the last mask's
  equivalent diameter (a lesion that moved more than registration explains, or an anchor point that
  now falls outside it),
* cut by the anchor box: beyond one of its faces the image now looks like the lesion, where at the
  anchor's session it looked like the surroundings (:func:`outgrown_faces`: it has outgrown the box).

Coordinates: masks and boxes are voxel indices (z, y, x) of the image they belong to; distances are
world mm (LPS), through :class:`lesionlocator.core.io.Geometry`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lesionlocator.core.io import Geometry
from lesionlocator.core.regions import nonzero_index
from lesionlocator.segment.api import Prompt
from lesionlocator.segment.prompting import interior_point


@dataclass(frozen=True, eq=False)
class Anchor:
    """A lesion's anchor: ``prompt`` in the voxel frame (z, y, x) of session ``session_index``."""

    lesion_id: int
    session_index: int
    prompt: Prompt


def box_around(mask: np.ndarray, geometry: Geometry, margin_mm: float, lesion_id: int) -> Prompt | None:
    """A box prompt around ``mask`` (bool, z y x of ``geometry``) grown by ``margin_mm`` on every side and
    clipped to the image; None for an empty mask."""
    where = nonzero_index(mask)
    if where.size == 0:
        return None
    margin = margin_mm / np.asarray(geometry.spacing, float)[::-1]
    upper = np.asarray(mask.shape, float) - 1
    lo = np.clip(where.min(0) - margin, 0, upper)
    hi = np.clip(where.max(0) + margin, 0, upper)
    return Prompt(int(lesion_id), "box", box=(tuple(float(v) for v in lo), tuple(float(v) for v in hi)))


def union_box(a: Prompt, b: Prompt, lesion_id: int) -> Prompt:
    """The box prompt covering the extents of prompts ``a`` and ``b`` (same voxel frame)."""
    (a_lo, a_hi), (b_lo, b_hi) = a.extent(), b.extent()
    lo, hi = np.minimum(a_lo, b_lo), np.maximum(a_hi, b_hi)
    return Prompt(int(lesion_id), "box", box=(tuple(float(v) for v in lo), tuple(float(v) for v in hi)))


def beyond_faces(array: np.ndarray, mask: np.ndarray, box: tuple, depth_voxels: int = 2) -> np.ndarray:
    """The median intensity just outside each face of the box (z-, z+, y-, y+, x-, x+) where the lesion
    reaches that face: the ``depth_voxels`` layers beyond the box's outermost voxel layer, under the
    mask's footprint on that face (its voxels on or beyond that layer, projected). NaN for a face the
    mask does not reach or whose outside lies off the image. ``array``, ``mask``: z y x of one grid."""
    out = np.full(6, np.nan)
    where = nonzero_index(mask)
    if where.size == 0:
        return out
    lo = np.ceil(np.asarray(box[0], float) - 1e-6).astype(int)
    hi = np.floor(np.asarray(box[1], float) + 1e-6).astype(int)
    for axis in range(3):
        others = [a for a in range(3) if a != axis]
        for side, (layer, step) in enumerate(((lo[axis], -1), (hi[axis], 1))):
            at_face = where[(where[:, axis] <= layer) if step < 0 else (where[:, axis] >= layer)]
            if at_face.size == 0:
                continue
            footprint = np.unique(at_face[:, others], axis=0)
            layers = [layer + step * k for k in range(1, depth_voxels + 1) if 0 <= layer + step * k < array.shape[axis]]
            if not layers:
                continue
            values = []
            for index in layers:
                position = [None, None, None]
                position[axis] = np.full(len(footprint), index)
                position[others[0]], position[others[1]] = footprint[:, 0], footprint[:, 1]
                values.append(array[tuple(position)])
            out[2 * axis + side] = float(np.median(np.concatenate(values)))
    return out


OUTGROWN_LEVEL = 0.6  # beyond a face the image looks at least this much like the lesion (0: its surroundings, 1: it)
OUTGROWN_MARGIN = 0.3  # ... and this much more than beyond the same face at the anchor's session


def outgrown_faces(now: np.ndarray, before: np.ndarray | None) -> np.ndarray:
    """Faces (bool, 6) beyond which the lesion now continues and did not before: ``now`` and ``before``
    are the positions of :func:`beyond_faces` between the lesion's surroundings (0) and the lesion (1)
    at the follow-up and at the anchor's session (NaN: not reached; None: unknown, nothing outgrown)."""
    if before is None:
        return np.zeros(6, bool)
    before = np.nan_to_num(before, nan=0.0)
    return np.nan_to_num(now, nan=0.0) >= np.maximum(OUTGROWN_LEVEL, before + OUTGROWN_MARGIN)


def centroid_world(mask: np.ndarray, geometry: Geometry) -> np.ndarray | None:
    """The centroid (world mm, LPS) of a bool mask (z y x of ``geometry``); None when empty."""
    where = nonzero_index(mask)
    return None if where.size == 0 else geometry.index_to_world(where.mean(0))


def equivalent_diameter_mm(voxels: int, geometry: Geometry) -> float:
    """Diameter (mm) of the sphere of the volume of ``voxels`` voxels of ``geometry``."""
    return float((6.0 * voxels * geometry.voxel_volume_ml() * 1000.0 / np.pi) ** (1.0 / 3.0))


def jump_limit_mm(previous: np.ndarray, geometry: Geometry, max_jump_mm: float) -> float:
    """How far (mm) a lesion's centroid may lie from its propagated last mask: ``max_jump_mm`` plus half
    that mask's equivalent diameter (a lesion growing on one side moves its centroid by up to its radius)."""
    return max_jump_mm + 0.5 * equivalent_diameter_mm(int(previous.sum()), geometry)


def jump_mm(mask: np.ndarray, previous: np.ndarray, geometry: Geometry) -> float | None:
    """World distance (mm) between the centroids of two masks on one grid; None when either is empty."""
    a, b = centroid_world(mask, geometry), centroid_world(previous, geometry)
    return None if a is None or b is None else float(np.linalg.norm(a - b))


def inconsistency(mask: np.ndarray, previous: np.ndarray | None, geometry: Geometry, max_jump_mm: float, min_voxels: int) -> str | None:
    """Why the anchor's ``mask`` (bool, z y x) disagrees with the lesion's propagated last mask
    ``previous`` (None: never observed, nothing to check): empty, or too far; None when it is
    consistent. (Outgrowing a box needs the image: :func:`outgrown_faces`.)"""
    if previous is None or not previous.any():
        return None
    if int(mask.sum()) < max(min_voxels, 1):
        return "the anchor's mask is empty where the lesion was last seen"
    distance = jump_mm(mask, previous, geometry)
    limit = jump_limit_mm(previous, geometry, max_jump_mm)
    if distance is not None and distance > limit:
        return f"the anchor's mask lies {distance:.0f} mm from the lesion's last mask (limit {limit:.0f} mm)"
    return None


def reprompt(
    lesion_id: int, anchor_prompt: Prompt | None, previous: np.ndarray, geometry: Geometry, margin_mm: float, outgrown: bool
) -> Prompt:
    """A prompt of the anchor's kind derived from the lesion's propagated last mask ``previous`` (bool,
    z y x, non-empty): a box around it grown by ``margin_mm`` (``outgrown``: together with the anchor box
    grown by the margin, so a lesion that outgrew its box gets room on every side); a point inside it; or
    the mask itself (a mask anchor, or none)."""
    kind = anchor_prompt.kind if anchor_prompt is not None else "mask"
    if kind == "point":
        return Prompt(lesion_id, "point", point=interior_point(previous))
    if kind == "box":
        around = box_around(previous, geometry, margin_mm, lesion_id)
        if not outgrown:
            return around
        margin = margin_mm / np.asarray(geometry.spacing, float)[::-1]
        lo, hi = anchor_prompt.extent()
        upper = np.asarray(previous.shape, float) - 1
        grown = Prompt(
            lesion_id, "box",
            box=(tuple(float(v) for v in np.clip(lo - margin, 0, upper)), tuple(float(v) for v in np.clip(hi + margin, 0, upper))),
        )
        return union_box(around, grown, lesion_id)
    return Prompt(lesion_id, "mask", mask=previous)
