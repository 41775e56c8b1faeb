"""Small region helpers shared by the stages: overlap (Dice), connected components, the shell around a mask."""

from __future__ import annotations

import cc3d
import numpy as np
from scipy import ndimage

#: Half the side (mm) of a lesion's view: the tracker's QC figures and the report's thumbnails crop the
#: axial slice through the lesion's centroid to this distance around it.
VIEW_HALF_WIDTH_MM = 40.0


def nonzero_box(mask: np.ndarray) -> tuple[slice, slice, slice] | None:
    """The smallest box (slices, z y x) holding every nonzero voxel of a 3D ``mask``; None when empty.
    Found from the mask's projections, a few milliseconds for a 512 x 512 x 168 scan."""
    planes = np.flatnonzero(mask.reshape(mask.shape[0], -1).any(axis=1))
    if planes.size == 0:
        return None
    slab = mask[planes[0] : planes[-1] + 1]
    rows, cols = np.flatnonzero(slab.any(axis=(0, 2))), np.flatnonzero(slab.any(axis=(0, 1)))
    return slice(int(planes[0]), int(planes[-1]) + 1), slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1)


def nonzero_index(mask: np.ndarray) -> np.ndarray:
    """``np.argwhere(mask)`` (same rows, same order) found within :func:`nonzero_box`: a lesion in a
    512 x 512 x 168 scan costs milliseconds instead of half a second."""
    if mask.ndim != 3 or mask.size == 0:
        return np.argwhere(mask)
    box = nonzero_box(mask)
    if box is None:
        return np.empty((0, 3), np.intp)
    return np.argwhere(mask[box]) + np.array([b.start for b in box], np.intp)


def shell_around(
    mask: np.ndarray, spacing_zyx: np.ndarray, inner_mm: float = 2.0, outer_mm: float = 6.0
) -> tuple[tuple[slice, ...], np.ndarray, np.ndarray] | None:
    """A box around ``mask`` (voxel frame z, y, x), the mask cropped to it, and the shell of voxels
    between ``inner_mm`` and ``outer_mm`` (physical distance) outside the mask; None if it is empty."""
    where = nonzero_index(mask)
    if len(where) == 0:
        return None
    spacing_zyx = np.asarray(spacing_zyx, float)
    pad = np.ceil(outer_mm / spacing_zyx).astype(int) + 1
    lo = np.maximum(where.min(0) - pad, 0)
    hi = np.minimum(where.max(0) + pad + 1, mask.shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    local = mask[box]
    distance = ndimage.distance_transform_edt(~local, sampling=spacing_zyx)
    return box, local, (distance > inner_mm) & (distance <= outer_mm)


def dice_of_counts(intersection: int, size_a: int, size_b: int) -> float:
    """Dice overlap from voxel counts: 2 |A n B| / (|A| + |B|), 1 when both regions are empty."""
    total = size_a + size_b
    return 1.0 if total == 0 else 2.0 * intersection / total


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice overlap of two boolean arrays of one shape (1 when both are empty)."""
    return dice_of_counts(int(np.logical_and(a, b).sum()), int(a.sum()), int(b.sum()))


def label_components(mask: np.ndarray, connectivity: int) -> tuple[np.ndarray, int]:
    """Connected components of a boolean mask (voxel frame z, y, x) and their number.

    ``connectivity`` is 6 (faces; ``scipy.ndimage.label``'s default in 3D), 18 or 26. Components are
    numbered 1..n in raster order of their first voxel (x fastest), as ``scipy.ndimage.label`` numbers
    them: cc3d follows the memory order, so the mask is made C-contiguous first.
    """
    labels, n = cc3d.connected_components(np.ascontiguousarray(mask, dtype=bool), connectivity=connectivity, return_N=True)
    return labels, int(n)
