"""New-lesion candidates at a follow-up: blobs of intensity change against the registered previous scan.

Candidates are flagged for review, not tracked: they come with their own IDs in their own label map.
"""

from __future__ import annotations

import cc3d
import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from lesionlocator.config import TrackConfig


def find_candidates(
    image: sitk.Image,
    previous_warped: sitk.Image,
    valid: np.ndarray,
    exclude: np.ndarray,
    config: TrackConfig,
) -> np.ndarray:
    """Label map (uint32, 1..n) of blobs that changed between the registered previous scan and now.

    ``valid``: voxels where the previous scan exists after warping; ``exclude``: voxels near tracked
    lesions (now or before). The change is measured after a robust linear intensity match (median
    and interquartile range over the body) and Gaussian smoothing, in units of the robust spread of
    the change itself, so the threshold adapts to noise and residual misregistration.
    """
    from lesionlocator.register.sitk_backend import body_mask

    spacing = np.asarray(image.GetSpacing())[::-1]
    current = sitk.GetArrayFromImage(image).astype(np.float32)
    previous = sitk.GetArrayFromImage(previous_warped).astype(np.float32)
    body = sitk.GetArrayFromImage(body_mask(sitk.Cast(image, sitk.sitkFloat32))).astype(bool)
    # stay a few mm inside the body surface, where misregistration of the skin dominates
    body = ndimage.binary_erosion(body, iterations=max(1, int(round(6.0 / spacing.min()))))
    region = body & valid
    if region.sum() < 100:
        return np.zeros(current.shape, dtype=np.uint32)

    def robust(values: np.ndarray) -> tuple[float, float]:
        q25, q50, q75 = np.percentile(values, [25, 50, 75])
        return float(q50), float(max(q75 - q25, 1e-6))

    c_med, c_iqr = robust(current[region])
    p_med, p_iqr = robust(previous[region])
    matched = (previous - p_med) * (c_iqr / p_iqr) + c_med
    sigma_vox = 1.5 / spacing  # ~1.5 mm smoothing
    change = ndimage.gaussian_filter(np.where(region, current - matched, 0.0), sigma=sigma_vox)
    values = change[region]
    spread = 1.4826 * float(np.median(np.abs(values - np.median(values)))) or 1e-6
    blobs = (np.abs(change) > config.candidate_threshold * spread) & region & ~exclude
    blobs = ndimage.binary_opening(blobs, iterations=1)
    components = cc3d.connected_components(blobs, connectivity=6)
    voxel_mm3 = float(np.prod(spacing))
    d_min, d_max = config.candidate_diameter_mm
    v_min, v_max = np.pi / 6 * d_min**3, np.pi / 6 * d_max**3
    out = np.zeros(current.shape, dtype=np.uint32)
    counts = np.bincount(components.ravel())
    kept = [c for c in range(1, len(counts)) if v_min <= counts[c] * voxel_mm3 <= v_max]
    # deterministic numbering: largest first, ties by the component's first voxel
    kept.sort(key=lambda c: (-counts[c], c))
    for number, component in enumerate(kept, start=1):
        out[components == component] = number
    return out
