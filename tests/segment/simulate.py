"""Simulated lesions in a real scan, for tests and benchmarks of the segmenters (not a data generator).

Inserts textured, irregular ellipsoid lesions (hypo- or hyper-dense) into soft tissue of a CT, with
partial-volume edges, and returns the new image, the instance label map and box/point prompts.
The full longitudinal generator lives in ``synthetic/``; this is a small, self-contained helper.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy import ndimage
from scipy.spatial.transform import Rotation

from lesionlocator.core.io import image_from_array


@dataclass
class SimulatedCase:
    image: sitk.Image
    labels: np.ndarray  # uint32 (z, y, x), lesion IDs as given
    boxes: dict[int, tuple[tuple[float, float, float], tuple[float, float, float]]]  # inclusive voxel boxes
    points: dict[int, tuple[float, float, float]]  # an interior voxel of each lesion


def _lesion_shape(rng: np.random.Generator, radii_vox: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A soft (0..1) irregular ellipsoid and its binary mask, in a box just large enough."""
    half = np.ceil(radii_vox.max() * 1.4).astype(int) + 2
    grid = np.mgrid[-half:half + 1, -half:half + 1, -half:half + 1].reshape(3, -1).T.astype(float)
    rotated = grid @ Rotation.random(random_state=int(rng.integers(2**31))).as_matrix().T
    radius = np.sqrt(np.sum((rotated / radii_vox) ** 2, axis=1)).reshape((2 * half + 1,) * 3)
    # Low-frequency boundary irregularity: up to ~15 % of the radius.
    bumps = ndimage.gaussian_filter(rng.standard_normal(radius.shape), sigma=max(radii_vox.min() / 2, 1.0))
    bumps *= 0.15 / (np.abs(bumps).max() + 1e-9)
    level = radius * (1 + bumps)
    soft = np.clip((1.0 - level) * radii_vox.mean() + 0.5, 0, 1)  # ~1 voxel wide partial-volume edge
    return soft, level <= 1.0


def insert_lesions(
    image: sitk.Image,
    n_lesions: int = 4,
    seed: int = 0,
    radius_mm: tuple[float, float] = (9.0, 25.0),
    contrast_hu: tuple[float, float] = (40.0, 90.0),
    ids: list[int] | None = None,
    tissue_hu: tuple[float, float] = (-30.0, 150.0),
) -> SimulatedCase:
    """Insert ``n_lesions`` non-overlapping lesions into soft tissue of ``image`` (HU)."""
    rng = np.random.default_rng(seed)
    array = sitk.GetArrayFromImage(image).astype(np.float32)
    spacing_zyx = np.asarray(image.GetSpacing(), float)[::-1]
    tissue = (array > tissue_hu[0]) & (array < tissue_hu[1])
    tissue = ndimage.binary_opening(tissue, iterations=2)
    labels = np.zeros(array.shape, dtype=np.uint32)
    ids = list(ids) if ids is not None else list(range(1, n_lesions + 1))
    boxes, points = {}, {}
    noise = ndimage.gaussian_filter(rng.standard_normal(array.shape).astype(np.float32), 1.0)
    noise /= noise.std() + 1e-9
    for lesion_id in ids:
        for _attempt in range(400):
            radii = rng.uniform(*radius_mm, size=3) / spacing_zyx
            radii = np.clip(radii, 2.5, None)
            soft, mask = _lesion_shape(rng, radii)
            half = soft.shape[0] // 2
            centre = np.array([rng.integers(half, s - half) for s in array.shape]) if np.all(np.array(array.shape) > 2 * half + 1) else None
            if centre is None:
                break
            sl = tuple(slice(int(c - half), int(c + half + 1)) for c in centre)
            around = ndimage.binary_dilation(mask, iterations=2)
            if tissue[sl][around].mean() < 0.97 or labels[sl][around].any():
                continue
            sign = rng.choice([-1.0, 1.0])
            contrast = sign * rng.uniform(*contrast_hu)
            texture = 12.0 * noise[sl]
            region = array[sl]
            region += soft * (contrast + texture)
            labels[sl][mask] = np.uint32(lesion_id)
            where = np.argwhere(labels == lesion_id)
            boxes[lesion_id] = (tuple(map(float, where.min(0))), tuple(map(float, where.max(0))))
            inside = np.argwhere(labels[sl] == lesion_id)
            nearest = inside[np.argmin(np.sum((inside - half) ** 2, axis=1))] + np.array([s.start for s in sl])
            points[lesion_id] = tuple(map(float, nearest))
            break
    out = image_from_array(np.round(array).astype(sitk.GetArrayViewFromImage(image).dtype), image)
    return SimulatedCase(image=out, labels=labels, boxes=boxes, points=points)
