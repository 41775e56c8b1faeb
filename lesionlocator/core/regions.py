"""Small region helpers shared by the segmenter and the tracker."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def shell_around(
    mask: np.ndarray, spacing_zyx: np.ndarray, inner_mm: float = 2.0, outer_mm: float = 6.0
) -> tuple[tuple[slice, ...], np.ndarray, np.ndarray] | None:
    """A box around ``mask`` (voxel frame z, y, x), the mask cropped to it, and the shell of voxels
    between ``inner_mm`` and ``outer_mm`` (physical distance) outside the mask; None if it is empty."""
    where = np.argwhere(mask)
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
