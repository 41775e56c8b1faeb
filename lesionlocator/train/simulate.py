"""Prompts simulated from ground truth, as the method trains them.

Everything here works on one training patch, in the voxel frame ``(z, y, x)`` of the preprocessed
(resampled, cropped) array that the network sees. A patch may hold several lesions: one is picked
(a connected component of the foreground, 26-connected), it becomes the target, and a prompt of
one kind is drawn for it:

* ``point``: one voxel inside the lesion, drawn with probability proportional to the squared
  distance to the lesion border (clicks land near the middle, but not always at the centre);
* ``box``: the lesion's bounding box with each face moved by a random whole number of voxels, up to
  a ``box_noise`` fraction of the lesion's extent outwards (at least one voxel) and up to a
  ``box_shrink`` fraction inwards (0, the default: the box always contains the lesion). Inward
  noise keeps the tight box the middle of what the network sees, so that it learns to follow a
  box's faces instead of expecting the lesion a voxel or two inside them;
* ``mask``: the lesion dilated or eroded by 0-2 voxels, warped by a smooth random displacement of up
  to ``mask_warp`` voxels and shifted by up to ``mask_shift`` voxels, as a previous time point's mask
  propagated by an imperfect registration would be.

The prompt is then turned into the network's extra input channel by the segmentation engine's own
encoder (:func:`encode_prompt`), so that training and inference see the same channel.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Mapping

import cc3d
import numpy as np
from scipy import ndimage

from lesionlocator.core.config import PromptNoise

PromptKind = Literal["point", "box", "mask"]
PROMPT_KINDS: tuple[PromptKind, ...] = ("point", "box", "mask")


#: Components smaller than this are chosen only when the patch holds no larger lesion.
MIN_LESION_VOXELS = 3


@dataclass(frozen=True)
class SimulatedPrompt:
    """One simulated prompt and its target, both in the patch's voxel frame (z, y, x)."""

    kind: PromptKind
    target: np.ndarray = field(repr=False)
    point: tuple[int, int, int] | None = None
    box: tuple[tuple[int, int, int], tuple[int, int, int]] | None = None
    mask: np.ndarray | None = field(default=None, repr=False)


def sample_kind(mix: Mapping[str, float], rng: np.random.Generator) -> PromptKind:
    """Draw a prompt kind with the probabilities of ``mix`` (weights, normalised here)."""
    kinds = [k for k in PROMPT_KINDS if mix.get(k, 0.0) > 0]
    if not kinds:
        raise ValueError(f"prompt mix {dict(mix)} gives no prompt kind a positive weight")
    weights = np.asarray([mix[k] for k in kinds], dtype=float)
    return kinds[int(rng.choice(len(kinds), p=weights / weights.sum()))]


def choose_lesion(seg: np.ndarray, rng: np.random.Generator, min_voxels: int = 1) -> np.ndarray | None:
    """One lesion of ``seg`` (any label > 0) as a boolean mask, or None when there is none.

    Lesions are 26-connected components of equal label; components under ``min_voxels`` are only
    chosen when no larger one exists (a lesion cut by the patch border is still a lesion).
    """
    labels = cc3d.connected_components(np.ascontiguousarray(seg).astype(np.uint32, copy=False), connectivity=26)
    counts = np.bincount(labels.ravel())[1:]
    if counts.size == 0:
        return None
    ids = np.flatnonzero(counts >= min_voxels) + 1
    if ids.size == 0:
        ids = np.flatnonzero(counts > 0) + 1
    return labels == int(rng.choice(ids))


def _bbox(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    coords = np.argwhere(mask)
    return coords.min(axis=0), coords.max(axis=0)


def simulate_point(lesion: np.ndarray, rng: np.random.Generator) -> tuple[int, int, int]:
    """A voxel inside ``lesion``, weighted by squared distance to its border (z, y, x)."""
    lo, hi = _bbox(lesion)
    crop = np.pad(lesion[tuple(slice(a, b + 1) for a, b in zip(lo, hi))], 1)
    depth = ndimage.distance_transform_edt(crop)[1:-1, 1:-1, 1:-1]
    inside = np.argwhere(depth > 0)
    weights = depth[tuple(inside.T)] ** 2
    pick = inside[int(rng.choice(len(inside), p=weights / weights.sum()))]
    return tuple(int(v) for v in pick + lo)


def simulate_box(
    lesion: np.ndarray, rng: np.random.Generator, noise: float = 0.15, shrink: float = 0.0
) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """The bounding box of ``lesion`` with each face moved at random (inclusive corners).

    Each face moves outwards by up to ``max(1, ceil(noise * extent))`` voxels and, when ``shrink``
    > 0, inwards by up to ``ceil(shrink * extent)`` voxels, never past the middle of the extent.
    """
    lo, hi = _bbox(lesion)
    extent = hi - lo + 1
    grow = np.maximum(1, np.ceil(noise * extent)).astype(int)
    inward = np.ceil(shrink * extent).astype(int)
    return move_box_faces(lo, hi, rng.integers(-inward, grow + 1), rng.integers(-inward, grow + 1), lesion.shape)


def move_box_faces(lo, hi, out_lo, out_hi, shape) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """The inclusive box ``lo``..``hi`` (z, y, x) with its lower faces moved ``out_lo`` and its upper
    faces ``out_hi`` voxels outwards (negative: inwards), clipped to an image of ``shape``.

    A face moving inwards stops at the middle of the box's extent, so the box keeps its middle.
    """
    lo, hi = np.asarray(lo), np.asarray(hi)
    new_lo = np.clip(lo - out_lo, 0, (lo + hi) // 2)
    new_hi = np.clip(hi + out_hi, (lo + hi + 1) // 2, np.asarray(shape) - 1)
    return tuple(int(v) for v in new_lo), tuple(int(v) for v in new_hi)


def _warp(mask: np.ndarray, rng: np.random.Generator, amplitude: float) -> np.ndarray:
    """``mask`` resampled through a smooth random displacement of at most ``amplitude`` voxels."""
    if amplitude <= 0 or not mask.any():
        return mask
    lo, hi = _bbox(mask)
    margin = int(np.ceil(amplitude)) + 1
    lo = np.maximum(0, lo - margin)
    hi = np.minimum(np.asarray(mask.shape) - 1, hi + margin)
    region = tuple(slice(a, b + 1) for a, b in zip(lo, hi))
    crop = mask[region].astype(np.float32)
    grid = np.indices(crop.shape, dtype=np.float32)
    sigma = max(2.0, min(crop.shape) / 4)
    for axis in range(3):
        noise = ndimage.gaussian_filter(rng.standard_normal(crop.shape).astype(np.float32), sigma)
        peak = float(np.abs(noise).max()) or 1.0
        grid[axis] += noise * (amplitude / peak)
    warped = ndimage.map_coordinates(crop, grid, order=1, mode="constant") >= 0.5
    out = mask.copy()
    out[region] = warped
    return out


def simulate_mask(
    lesion: np.ndarray, rng: np.random.Generator, morph: int = 2, warp: float = 1.5, shift: int = 2
) -> np.ndarray:
    """``lesion`` dilated/eroded, warped and shifted; always overlaps ``lesion``."""
    ball = ndimage.generate_binary_structure(3, 1)
    steps = int(rng.integers(-morph, morph + 1)) if morph > 0 else 0
    mask = lesion
    if steps > 0:
        mask = ndimage.binary_dilation(lesion, ball, iterations=steps)
    elif steps < 0:
        eroded = ndimage.binary_erosion(lesion, ball, iterations=-steps)
        mask = eroded if eroded.any() else lesion
    warped = _warp(mask, rng, warp)
    mask = warped if (warped & lesion).any() else (mask if (mask & lesion).any() else lesion)
    offset = rng.integers(-shift, shift + 1, size=3) if shift > 0 else np.zeros(3, int)
    moved = _shift(mask, offset)
    return moved if (moved & lesion).any() else mask


def _shift(mask: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """Integer shift with zero fill (no wrap-around)."""
    out = np.zeros_like(mask)
    src, dst = [], []
    for o, n in zip(offset, mask.shape):
        o = int(o)
        src.append(slice(max(0, -o), n - max(0, o)))
        dst.append(slice(max(0, o), n - max(0, -o)))
    out[tuple(dst)] = mask[tuple(src)]
    return out


def simulate_prompt(
    seg: np.ndarray,
    kind: PromptKind,
    rng: np.random.Generator,
    params: PromptNoise = PromptNoise(),
) -> SimulatedPrompt | None:
    """Pick one lesion of ``seg`` and simulate a ``kind`` prompt for it; None when ``seg`` is empty."""
    lesion = choose_lesion(seg, rng, MIN_LESION_VOXELS)
    if lesion is None:
        return None
    if kind == "point":
        return SimulatedPrompt(kind, lesion, point=simulate_point(lesion, rng))
    if kind == "box":
        return SimulatedPrompt(kind, lesion, box=simulate_box(lesion, rng, params.box_noise, params.box_shrink))
    if kind == "mask":
        mask = simulate_mask(lesion, rng, params.mask_morph, params.mask_warp, params.mask_shift)
        return SimulatedPrompt(kind, lesion, mask=mask)
    raise ValueError(f"unknown prompt kind {kind!r} (use one of {', '.join(PROMPT_KINDS)})")


def encode_prompt(prompt: SimulatedPrompt, shape: tuple[int, int, int], point_radius: float = 5.0) -> np.ndarray:
    """The prompt channel (float32, ``shape``) exactly as the segmentation engine encodes it.

    The patch is already in the network's grid, so the engine's grid map is the identity here;
    ``point_radius`` must equal the engine's ``segment.point_radius`` (5 network voxels).
    """
    from lesionlocator.segment.api import Prompt
    from lesionlocator.segment.encode import GridMap
    from lesionlocator.segment.encode import encode_prompt as engine_encode_prompt

    shape = tuple(int(s) for s in shape)
    grid = GridMap(transpose=(0, 1, 2), crop_start=(0, 0, 0), crop_shape=shape, net_shape=shape)
    if prompt.kind == "point":
        engine_prompt = Prompt(1, "point", point=tuple(float(v) for v in prompt.point))
    elif prompt.kind == "box":
        engine_prompt = Prompt(1, "box", box=tuple(tuple(float(v) for v in c) for c in prompt.box))
    else:
        engine_prompt = Prompt(1, "mask", mask=np.asarray(prompt.mask, dtype=bool))
    encoded = engine_encode_prompt(engine_prompt, grid, point_radius=point_radius)
    return encoded.crop(np.zeros(3, dtype=int), np.asarray(shape))
