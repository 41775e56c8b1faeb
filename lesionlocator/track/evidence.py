"""The image's evidence about a tracked lesion at a follow-up: does it still stand out as it did?

A promptable segmenter given a propagated prompt outlines *something* even where the lesion is gone,
and an empty mask can mean a lesion that shrank below the network's threshold. So a lesion's status
is decided from evidence, never from one segmenter's output alone (see
:func:`lesionlocator.track.followup.evidence_statuses`). The evidence here:

* :func:`lesion_levels`: the median intensity inside a mask, the median of a 2-6 mm shell around it
  and the shell's robust spread (image units);
* :func:`is_reliable`: the reference contrast (inside minus shell, at baseline or at a new lesion's
  first sighting) is at least ``min_sd`` robust SDs of the shell. A lesion that never stood out (a
  baseline mask that spilled into darker tissue has a contrast near zero, or of the wrong sign)
  cannot be called gone by its contrast;
* :func:`has_faded`: both tests agree that the lesion no longer stands out: its *contrast* now is
  below ``fraction`` of the reference's (or of the other sign), and its *level* (median inside, matched
  to the reference scan's intensity scale by :func:`intensity_match`) lies less than ``fraction`` of
  the way from the reference surroundings to the reference lesion. The first alone mistakes a lesion
  that outgrew its mask (its shell is lesion too) for gone; the second alone suffers from imperfect
  intensity matching;
* :func:`lesion_like_parts`: where a lesion that fell apart may lie now (groups of voxels that look
  like it near where it was), for the segmenter to be asked about each;
* :func:`novelty`: for a new lesion, how far its region now differs from a scan before it appeared
  (a candidate confirmed by segmentation alone would be any structure the segmenter can outline).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from lesionlocator.core.regions import label_components, nonzero_box, nonzero_index, shell_around


@dataclass(frozen=True)
class Levels:
    """Median inside a mask, median of its 2-6 mm shell, and the shell's robust SD (image units)."""

    inside: float
    shell: float
    noise: float

    @property
    def contrast(self) -> float:
        return self.inside - self.shell


def lesion_levels(array: np.ndarray, mask: np.ndarray, spacing_zyx: np.ndarray) -> Levels | None:
    """The :class:`Levels` of ``mask`` (bool, z y x) in ``array``; None when the mask or its shell is empty."""
    if not mask.any():
        return None
    region = shell_around(mask, spacing_zyx)
    if region is None or not region[2].any():
        return None
    box, local, shell = region
    values = array[box]
    shell_values = values[shell].astype(np.float64)
    shell_median = float(np.median(shell_values))
    noise = 1.4826 * float(np.median(np.abs(shell_values - shell_median)))
    return Levels(float(np.median(values[local])), shell_median, noise)


def is_reliable(reference: Levels, min_sd: float) -> bool:
    """True when the reference contrast is at least ``min_sd`` robust SDs of its shell (and not zero)."""
    return reference.contrast != 0 and abs(reference.contrast) >= min_sd * reference.noise


def intensity_match(source: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    """(scale, offset) mapping ``source`` intensities onto ``target``'s: robust quartiles of the body
    (voxels above each image's Otsu threshold), which absorbs CT shifts and MR gain changes."""
    from skimage.filters import threshold_otsu

    def quartiles(array: np.ndarray) -> np.ndarray:
        sample = array[::2, ::2, ::2].astype(np.float32)
        return np.percentile(sample[sample > threshold_otsu(sample)], [25, 50, 75])

    s, t = quartiles(source), quartiles(target)
    scale = float((t[2] - t[0]) / max(s[2] - s[0], 1e-6))
    return scale, float(t[1] - scale * s[1])


def faded_by(now: Levels, reference: Levels, scale: float, offset: float) -> tuple[float, float]:
    """(contrast ratio, level position) of ``now`` against ``reference``: 1 and 1 for a lesion that stands
    out as it did, 0 and 0 for one that looks like its surroundings did. ``scale``, ``offset`` map the
    current scan's intensities onto the reference scan's (:func:`intensity_match`)."""
    contrast_ratio = now.contrast / reference.contrast
    position = (scale * now.inside + offset - reference.shell) / reference.contrast
    return float(contrast_ratio), float(position)


def has_faded(now: Levels, reference: Levels, scale: float, offset: float, fraction: float) -> bool:
    """True when both the contrast and the level of ``now`` fall below ``fraction`` of the reference's."""
    contrast_ratio, position = faded_by(now, reference, scale, offset)
    return contrast_ratio < fraction and position < fraction


def novelty(
    image: sitk.Image, mask: np.ndarray, before: sitk.Image, transform: sitk.Transform, reference: Levels, scale: float, offset: float
) -> float | None:
    """How far the region of a new lesion now differs from a scan taken before the lesion appeared, in
    units of the lesion's reference contrast (1: as much as the lesion stood out from its surroundings
    when it was first seen, 0: no difference). A new lesion that is really there keeps differing; a
    candidate that was noise, a resampling edge or an organ's part does not.

    ``mask``: the lesion now (bool, z y x of ``image``); ``before``: the earlier scan; ``transform``: world
    points (mm, LPS) of ``image`` to ``before``; ``scale``, ``offset``: map ``image``'s intensities onto
    ``before``'s (:func:`intensity_match`). Only the lesion's bounding box is resampled. None when the
    mask is empty or lies outside the earlier scan.
    """
    where = nonzero_index(mask)
    if where.size == 0 or reference.contrast == 0:
        return None
    lo = np.maximum(where.min(0) - 1, 0)
    hi = np.minimum(where.max(0) + 2, np.asarray(mask.shape))
    crop = image[int(lo[2]):int(hi[2]), int(lo[1]):int(hi[1]), int(lo[0]):int(hi[0])]  # SimpleITK slices x, y, z
    earlier = sitk.GetArrayFromImage(sitk.Resample(before, crop, transform, sitk.sitkLinear, float("nan"), sitk.sitkFloat32))
    inside = mask[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    now_values = sitk.GetArrayViewFromImage(crop)[inside].astype(np.float64)
    before_values = earlier[inside]
    kept = np.isfinite(before_values)
    if kept.sum() < max(1, inside.sum() // 2):
        return None
    change = scale * float(np.median(now_values[kept])) + offset - float(np.median(before_values[kept]))
    return change / reference.contrast


def lesion_like_excess(
    array: np.ndarray, region: np.ndarray, reference: Levels, scale: float, offset: float, background_rate: float
) -> float:
    """Voxels of ``region`` (bool, z y x) whose intensity, matched to the reference scan (``scale``,
    ``offset``), lies at least half way from the reference surroundings to the reference lesion, in
    excess of ``background_rate`` (the share of such voxels in the reference shell: noise), as a count.
    A lesion that fell apart or moved within its region still leaves this many lesion-like voxels; a
    lesion that is gone leaves about none."""
    if not region.any() or reference.contrast == 0:
        return 0.0
    values = scale * array[region].astype(np.float64) + offset
    like = np.count_nonzero((values - reference.shell) / reference.contrast >= 0.5)
    return float(like - background_rate * values.size)


def background_rate(array: np.ndarray, mask: np.ndarray, spacing_zyx: np.ndarray, reference: Levels) -> float:
    """The share of a lesion's 2-6 mm shell voxels (in its reference scan ``array``) that look at least half
    way like the lesion: what noise alone gives in :func:`lesion_like_excess`."""
    region = shell_around(mask, spacing_zyx)
    if region is None or not region[2].any() or reference.contrast == 0:
        return 0.0
    box, _, shell = region
    values = array[box][shell].astype(np.float64)
    return float(np.mean((values - reference.shell) / reference.contrast >= 0.5))


def lesion_like_parts(
    array: np.ndarray, region: np.ndarray, reference: Levels, scale: float, offset: float, min_voxels: int, max_parts: int
) -> list[np.ndarray]:
    """The parts a lesion may have fallen into: face-connected (6-connectivity) groups of voxels of
    ``region`` (bool, z y x of ``array``) whose intensity, matched to the reference scan (``scale``,
    ``offset``: :func:`intensity_match`), lies within half the reference contrast of the reference
    lesion's level (0.5 to 1.5 of the way from its surroundings to it), each of at least ``min_voxels``
    voxels; at most ``max_parts``, largest first (ties in raster order), as bool masks (z y x).

    The band is two-sided so that tissue far beyond the lesion (air or fat beside a hypodense liver
    lesion) is not taken for it; face connectivity keeps noise from chaining into parts (single voxels
    pass the band by chance where the lesion's contrast is a few noise SDs). None of this calls a part a
    lesion: it only says where a segmenter should look."""
    box = nonzero_box(region)
    if box is None or reference.contrast == 0 or max_parts <= 0:
        return []
    position = (scale * array[box].astype(np.float64) + offset - reference.shell) / reference.contrast
    like = region[box] & (np.abs(position - 1.0) <= 0.5)
    components, _ = label_components(like, connectivity=6)
    sizes = np.bincount(components.ravel())[1:]
    order = [int(k) + 1 for k in np.argsort(-sizes, kind="stable") if sizes[k] >= max(min_voxels, 1)][:max_parts]
    parts = []
    for k in order:
        part = np.zeros(region.shape, bool)
        part[box] = components == k
        parts.append(part)
    return parts
