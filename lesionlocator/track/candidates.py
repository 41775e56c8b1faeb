"""New-lesion candidates at a follow-up: compact blobs that appeared since the registered previous scan.

A new lesion is a *compact blob* that differs from its surroundings *now* and did *not* before. Three
things look like that on a plain difference image and are suppressed here:

* **noise**: the difference is analysed at lesion scales only (Gaussian scale space, radii from
  ``candidate_diameter_mm``) and in units of its own robust spread at each scale;
* **residual misregistration and spacing changes** at organ edges and the body surface: a shift of
  ``r`` mm of the previous scan changes the scale-normalised Laplacian by about ``r`` times its
  gradient, so the blob response is divided by ``sqrt(noise^2 + (r |grad L_prev|)^2)``
  (``candidate_misregistration_mm``); voxels within ``SURFACE_MARGIN_MM`` of the body surface and
  of the previous scan's field of view are skipped;
* **edges and tubes**: the blob response is the Hessian eigenvalue of *smallest* magnitude, and all
  three must share the sign of the blob (a sheet-like edge difference has one large eigenvalue
  only), and the current scan itself must show a blob of that sign there (contrast *now*);
* **air**: a candidate must be tissue now (its median above the scan's Otsu threshold), not a change
  of lung air or of the background at a field of view's edge; a dark candidate below that level counts
  as tissue when it was above it before and its shell is above it now (a hypo-intense lesion, e.g. on
  MR, where Otsu's level parts two kinds of tissue) (:func:`in_tissue`);
* **what was already there**: the grown blob must stand out from its 2-6 mm shell now with the sign
  of its change, while the intensity-matched previous scan showed less than ``NOVELTY_RATIO`` of that
  contrast there (or less than ``NOVELTY_NOISE`` of its shell's noise), and no blob of that sign and
  scale within ``candidate_misregistration_mm`` of the peak with ``SHIFTED_RATIO`` of its strength now
  (:func:`shifted_before`). A vessel, bone edge or known lesion shifted by residual misregistration, or an
  existing structure that got brighter or darker, changes like a new lesion but was visible before.
  On the follow-ups of ``config/synth_longitudinal.yaml`` this removed 94 of 121 false candidates and
  none of the 8 true ones.

Peaks of the response above ``candidate_threshold`` are grown into a mask (the connected voxels
whose smoothed change keeps at least half the peak's), filtered by equivalent diameter, ranked by
score and capped at ``candidate_max`` per follow-up. Analysis runs on a grid no finer than
``DETECTION_SPACING_MM`` so a 512x512 scan costs what a 3 mm scan costs. Deterministic: no random
choices; ties broken by voxel order.

Candidates are flagged for review, not tracked: they come with their own IDs in their own label map.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy import ndimage
from skimage.filters import threshold_otsu

from lesionlocator.core.config import TrackConfig
from lesionlocator.core.io import Geometry, same_geometry
from lesionlocator.core.regions import label_components, nonzero_index
from lesionlocator.track.evidence import lesion_levels

log = logging.getLogger(__name__)

DETECTION_SPACING_MM = 2.5  # analysis grid: no axis finer than this
SURFACE_MARGIN_MM = 4.0  # skip the body surface (breathing, skin folds, couch)
FOV_MARGIN_MM = 4.0  # skip the border of the previous scan's field of view
MIN_EIGEN_RATIO = 0.2  # a blob: the weakest curvature of the change is at least this fraction of the strongest
GROW_FRACTION = 0.5  # a candidate's mask: connected voxels keeping this fraction of the peak change
MAX_SCALES = 4
NOVELTY_RATIO = 0.2  # a new blob: the previous scan showed less than this fraction of its contrast now
NOVELTY_NOISE = 0.5  # ... or less than this fraction of its shell's robust SD there (nothing to see before)
SHIFTED_RATIO = 0.5  # ... and no blob of half its strength within the residual misregistration


@dataclass(frozen=True)
class Candidate:
    """One new-lesion candidate: centre (continuous voxel index z, y, x of the follow-up) and score."""

    centre_zyx: tuple[float, float, float]
    score: float  # blob response in robust SDs, after the misregistration normalisation
    radius_mm: float  # the scale that responded most
    sign: int  # +1 brighter than before, -1 darker


@dataclass
class CandidateResult:
    """Label map (uint32, 1..n in score order, follow-up grid) and the candidates in the same order."""

    labels: np.ndarray
    candidates: list[Candidate]


def _detection_grid(image: sitk.Image) -> sitk.Image | None:
    """A reference grid with the image's extent, origin and direction, no axis finer than the detection
    spacing; None when the image is already coarse enough."""
    spacing = np.asarray(image.GetSpacing(), float)
    coarse = np.maximum(spacing, DETECTION_SPACING_MM)
    if np.allclose(coarse, spacing):
        return None
    size = np.maximum(np.floor(np.asarray(image.GetSize()) * spacing / coarse).astype(int), 1)
    grid = sitk.Image([int(s) for s in size], sitk.sitkUInt8)
    grid.SetDirection(image.GetDirection())
    grid.SetSpacing([float(s) for s in coarse])
    # keep the first voxel's *outer* corner where the image's is
    shift = (coarse - spacing) / 2
    origin = np.asarray(image.GetOrigin()) + np.asarray(image.GetDirection()).reshape(3, 3) @ shift
    grid.SetOrigin([float(v) for v in origin])
    return grid


def detection_reference(image: sitk.Image) -> sitk.Image:
    """The grid the search runs on: the follow-up's own, or one no finer than ``DETECTION_SPACING_MM``
    with its extent, origin and direction. Resampling a previous scan straight onto it costs what a
    3 mm scan costs, whatever the follow-up's resolution."""
    grid = _detection_grid(image)
    return image if grid is None else grid


def _to_grid(image: sitk.Image, grid: sitk.Image | None, interpolator=sitk.sitkLinear) -> np.ndarray:
    if grid is not None:
        image = sitk.Resample(image, grid, sitk.Transform(), interpolator, 0.0, image.GetPixelID())
    return sitk.GetArrayFromImage(image)


def _robust_sd(values: np.ndarray) -> float:
    if values.size == 0:
        return 1e-6
    return max(1.4826 * float(np.median(np.abs(values - np.median(values)))), 1e-6)


def _hessian(array: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """Second derivatives (..., 3, 3) per mm^2 by central differences."""
    gradients = [np.gradient(array, axis=a) / spacing[a] for a in range(3)]
    hessian = np.empty(array.shape + (3, 3), np.float32)
    for a in range(3):
        for b in range(a, 3):
            value = np.gradient(gradients[a], axis=b) / spacing[b]
            hessian[..., a, b] = value
            hessian[..., b, a] = value
    return hessian


def _gradient_magnitude(array: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    return np.sqrt(sum(np.square(np.gradient(array, axis=a) / spacing[a]) for a in range(3)))


def _scales_mm(config: TrackConfig) -> list[float]:
    """Blob radii (mm) analysed: from half the minimum to half the maximum diameter, factor 2 apart."""
    d_min, d_max = config.candidate_diameter_mm
    radii = [d_min / 2]
    while radii[-1] * 2 <= d_max / 2 and len(radii) < MAX_SCALES:
        radii.append(radii[-1] * 2)
    return radii


def _dog(array: np.ndarray, radius_mm: float, spacing: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(Gaussian-smoothed array, difference of Gaussians) for blobs of ``radius_mm``: centre sigma
    ``R/sqrt(3)`` (at least 0.7 voxel; below ~1 voxel it is noise), surround twice that."""
    sigma = np.maximum(radius_mm / np.sqrt(3.0) / spacing, 0.7)
    centre = ndimage.gaussian_filter(array, sigma, mode="nearest")
    return centre, centre - ndimage.gaussian_filter(array, 2 * sigma, mode="nearest")


def blob_response(
    current: np.ndarray,
    previous: np.ndarray,
    region: np.ndarray,
    spacing: np.ndarray,
    config: TrackConfig,
    edge_depth: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per voxel the best signed blob score over scales, its radius (mm) and the smoothed change there.

    ``current``/``previous``: intensity-matched arrays on one grid (z, y, x) of ``spacing`` mm;
    ``region``: where the analysis is valid; ``edge_depth``: distance (mm) to the border of the
    image or of the previous scan's field of view, where a scale is analysed only at least its radius
    inside (the filters see replicated border voxels there). At each radius ``R`` the change is filtered by a
    difference of Gaussians (centre ``R/sqrt(3)``, surround twice that) and divided by the robust
    spread of that response and by the response a shift of ``candidate_misregistration_mm`` of the
    previous scan would cause; voxels above ``candidate_threshold`` must also pass the shape gates
    (a blob, not a sheet, in the change; a blob of the same sign in the current scan).
    """
    best = np.zeros(current.shape, np.float32)
    best_radius = np.zeros(current.shape, np.float32)
    best_change = np.zeros(current.shape, np.float32)
    change = current - previous
    for radius in _scales_mm(config):
        smooth_change, dog_change = _dog(change, radius, spacing)
        _, dog_previous = _dog(previous, radius, spacing)
        noise = _robust_sd(dog_change[region])
        misregistration = config.candidate_misregistration_mm * _gradient_magnitude(dog_previous, spacing)
        score = dog_change / np.sqrt(noise**2 + misregistration**2)
        score[~region] = 0.0
        if edge_depth is not None:
            score[edge_depth < radius] = 0.0
        strong = np.abs(score) >= config.candidate_threshold
        if strong.any():
            # shape gates, only where the score is high enough to matter
            hessian = _hessian(smooth_change, spacing)[strong]
            eig = np.linalg.eigvalsh(hessian)  # ascending
            sign = np.sign(score[strong])
            curvature = -sign[:, None] * eig  # positive for a blob of the score's sign
            blob = (curvature.min(1) > 0) & (curvature.min(1) >= MIN_EIGEN_RATIO * curvature.max(1))
            _, dog_current = _dog(current, radius, spacing)
            now = sign * dog_current[strong] >= 0.5 * np.abs(dog_change[strong])
            gated = score[strong]
            gated[~(blob & now)] = 0.0
            score[strong] = gated
        better = np.abs(score) > np.abs(best)
        best[better] = score[better]
        best_radius[better] = radius
        best_change[better] = smooth_change[better]
    return best, best_radius, best_change


def _body(array: np.ndarray, threshold: float) -> np.ndarray:
    """The body: foreground above ``threshold`` (Otsu), holes filled slice by slice (dark organs, lungs),
    largest component."""
    foreground = array > threshold
    foreground = ndimage.binary_closing(foreground, iterations=1)
    for k in range(foreground.shape[0]):
        foreground[k] = ndimage.binary_fill_holes(foreground[k])
    labelled, n = label_components(foreground, connectivity=6)
    if n == 0:
        return foreground
    sizes = np.bincount(labelled.ravel())
    sizes[0] = 0
    return labelled == int(np.argmax(sizes))


def search_depths(current: np.ndarray, valid: np.ndarray, spacing: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """What the search's region is cut from, on the detection grid (z y x, ``spacing`` mm): the tissue level
    (Otsu), each voxel's depth (mm) inside the body and inside ``valid`` (the previous scan's field of view;
    the grid's border counts as its edge)."""
    tissue = float(threshold_otsu(current[::2, ::2, ::2].ravel()))
    body_depth = ndimage.distance_transform_edt(_body(current, tissue), sampling=spacing)
    valid_depth = ndimage.distance_transform_edt(np.pad(valid, 1), sampling=spacing)[1:-1, 1:-1, 1:-1]
    return tissue, body_depth, valid_depth


def _ball(radius_vox: np.ndarray) -> np.ndarray:
    half = np.ceil(radius_vox).astype(int)
    grids = np.ogrid[tuple(slice(-h, h + 1) for h in half)]
    return sum((g / r) ** 2 for g, r in zip(grids, radius_vox)) <= 1.0


def _grow(change: np.ndarray, peak: tuple[int, ...], radius_vox: np.ndarray, taken: np.ndarray) -> np.ndarray | None:
    """The connected voxels around ``peak`` whose change keeps GROW_FRACTION of the peak's, within 2 radii."""
    half = np.ceil(2 * radius_vox).astype(int)
    lo = np.maximum(np.asarray(peak) - half, 0)
    hi = np.minimum(np.asarray(peak) + half + 1, change.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    value = change[peak]
    inside = (change[box] * np.sign(value) >= GROW_FRACTION * abs(value)) & ~taken[box]
    local_peak = tuple(np.asarray(peak) - lo)
    if not inside[local_peak]:
        return None
    labelled, _ = label_components(inside, connectivity=6)
    mask = np.zeros(change.shape, bool)
    mask[box] = labelled == labelled[local_peak]
    return mask


def in_tissue(current: np.ndarray, previous: np.ndarray, mask: np.ndarray, spacing: np.ndarray, tissue: float) -> bool:
    """True when a candidate ``mask`` (bool, z y x) lies in tissue: its median is above ``tissue`` (the
    Otsu level) now, or it is a dark blob inside tissue, its median above that level before and the
    median of its 2-6 mm shell above it now (a hypo-intense lesion, e.g. on MR, darker than the level
    the body is told from). A lung or background that changed has air around it or before it."""
    if float(np.median(current[mask])) > tissue:
        return True
    if float(np.median(previous[mask])) <= tissue:
        return False
    levels = lesion_levels(current, mask, spacing)
    return levels is not None and levels.shell > tissue


def appeared(current: np.ndarray, previous: np.ndarray, mask: np.ndarray, spacing: np.ndarray, sign: int) -> bool:
    """True when ``mask`` (bool, z y x) stands out from its shell in ``current`` with ``sign`` (+1 brighter,
    -1 darker) and ``previous`` (intensity-matched, same grid of ``spacing`` mm) showed less than
    ``NOVELTY_RATIO`` of that contrast there, or less than ``NOVELTY_NOISE`` of its shell's robust SD (a
    faint trace within the noise of its surroundings before is no evidence the lesion was there)."""
    now, before = lesion_levels(current, mask, spacing), lesion_levels(previous, mask, spacing)
    if now is None or before is None:
        return False
    return sign * now.contrast > 0 and sign * before.contrast < max(NOVELTY_RATIO * abs(now.contrast), NOVELTY_NOISE * before.noise)


def shifted_before(
    current: np.ndarray, previous: np.ndarray, peak: tuple[int, ...], radius_mm: float, sign: int, spacing: np.ndarray,
    shift_mm: float, cache: dict,
) -> float:
    """The previous scan's strongest blob response of ``sign`` at the candidate's scale within ``shift_mm``
    of its peak, as a fraction of the current scan's at the peak (1 or more: the blob was there, shifted by
    residual misregistration; 0 or less: nothing like it nearby). ``cache``: difference-of-Gaussian
    arrays by radius, shared by the candidates of one search."""
    if radius_mm not in cache:
        cache[radius_mm] = (_dog(current, radius_mm, spacing)[1], _dog(previous, radius_mm, spacing)[1])
    dog_current, dog_previous = cache[radius_mm]
    now = sign * float(dog_current[peak])
    if now <= 0:
        return np.inf
    reach = np.maximum(shift_mm / spacing, 1.0)
    half = np.ceil(reach).astype(int)
    lo = np.maximum(np.asarray(peak) - half, 0)
    hi = np.minimum(np.asarray(peak) + half + 1, current.shape)
    ball = _ball(reach)[tuple(slice(a - (p - h), b - (p - h)) for a, b, p, h in zip(lo, hi, peak, half))]
    nearby = sign * dog_previous[tuple(slice(a, b) for a, b in zip(lo, hi))][ball]
    return float(nearby.max()) / now


def find_candidates(
    image: sitk.Image,
    previous_warped: sitk.Image,
    valid: np.ndarray,
    exclude: np.ndarray,
    config: TrackConfig,
) -> CandidateResult:
    """New-lesion candidates of a follow-up (see the module docstring).

    ``image``: the follow-up; ``previous_warped``: the earlier scan resampled onto the follow-up's grid
    or onto :func:`detection_reference` (cheaper); ``valid``: voxels (z y x, of the grid
    ``previous_warped`` is on) where the earlier scan exists after warping; ``exclude``: voxels (of
    that grid too) near tracked lesions (now or before): a candidate whose centre falls there is not
    reported.
    """
    shape = image.GetSize()[::-1]
    empty = CandidateResult(np.zeros(shape, np.uint32), [])
    grid = _detection_grid(image)
    reference = image if grid is None else grid
    spacing = np.asarray(reference.GetSpacing(), float)[::-1]

    def mask_to_grid(mask: np.ndarray) -> np.ndarray:
        if grid is None:
            return mask.astype(bool)
        mask_image = sitk.GetImageFromArray(mask.astype(np.uint8))
        mask_image.CopyInformation(image)
        return _to_grid(mask_image, grid, sitk.sitkNearestNeighbor).astype(bool)

    current = _to_grid(sitk.Cast(image, sitk.sitkFloat32), grid).astype(np.float32)
    on_reference = same_geometry(Geometry.of(previous_warped), Geometry.of(reference))
    previous = _to_grid(sitk.Cast(previous_warped, sitk.sitkFloat32), None if on_reference else grid).astype(np.float32)
    valid_grid = valid.astype(bool) if on_reference else mask_to_grid(valid)
    exclude_grid = exclude.astype(bool) if on_reference else mask_to_grid(exclude)
    tissue, body_depth, valid_depth = search_depths(current, valid_grid, spacing)
    region = (body_depth > SURFACE_MARGIN_MM) & (valid_depth > FOV_MARGIN_MM)
    if region.sum() < 100:
        return empty

    # robust linear intensity match of the previous scan onto the current one, over the body
    def robust(values: np.ndarray) -> tuple[float, float]:
        q25, q50, q75 = np.percentile(values, [25, 50, 75])
        return float(q50), float(max(q75 - q25, 1e-6))

    c_med, c_iqr = robust(current[region])
    p_med, p_iqr = robust(previous[region])
    previous = (previous - p_med) * (c_iqr / p_iqr) + c_med
    previous = np.where(valid_grid, previous, current).astype(np.float32)  # no change outside the old FOV

    score, radius, change = blob_response(current, previous, region, spacing, config, edge_depth=valid_depth)
    magnitude = np.abs(score)
    footprint = _ball(np.maximum(config.candidate_diameter_mm[0] / 2 / spacing, 1.0))
    peaks = (magnitude >= config.candidate_threshold) & (magnitude == ndimage.maximum_filter(magnitude, footprint=footprint))
    peaks &= region & ~exclude_grid
    order = np.flatnonzero(peaks)
    order = order[np.argsort(-magnitude.reshape(-1)[order], kind="stable")]

    d_min, d_max = config.candidate_diameter_mm
    voxel_mm3 = float(np.prod(spacing))
    taken = np.zeros(current.shape, bool)
    dogs: dict = {}
    masks: list[np.ndarray] = []
    found: list[Candidate] = []
    for flat in order:
        if len(found) >= config.candidate_max:
            break
        peak = np.unravel_index(flat, current.shape)
        if taken[peak]:
            continue
        r_mm = float(radius[peak])
        mask = _grow(change, peak, r_mm / spacing, taken)
        if mask is None:
            continue
        diameter = (6 * mask.sum() * voxel_mm3 / np.pi) ** (1 / 3)
        if not d_min <= diameter <= d_max:
            continue
        if not in_tissue(current, previous, mask, spacing, tissue):
            continue  # air or background (a lung that changed, the edge of a field of view), not tissue
        taken |= ndimage.binary_dilation(mask, iterations=1)
        sign = int(np.sign(score[peak]))
        if not appeared(current, previous, mask, spacing, sign):
            continue  # visible before: misregistered or changed, not new
        if shifted_before(current, previous, peak, r_mm, sign, spacing, config.candidate_misregistration_mm, dogs) >= SHIFTED_RATIO:
            continue  # a blob like it a few mm away before: moved by residual misregistration, not new
        centre = nonzero_index(mask).mean(0)
        masks.append(mask)
        found.append(Candidate(tuple(float(v) for v in centre), float(magnitude[peak]), r_mm, sign))

    labels = np.zeros(current.shape, np.uint32)
    for number, mask in enumerate(masks, start=1):
        labels[mask & (labels == 0)] = number
    if grid is not None:  # back onto the follow-up grid; centres from the coarse grid's world frame
        coarse = sitk.GetImageFromArray(labels)
        coarse.CopyInformation(grid)
        labels = sitk.GetArrayFromImage(sitk.Resample(coarse, image, sitk.Transform(), sitk.sitkNearestNeighbor, 0))
        found = [
            Candidate(
                tuple(float(v) for v in image.TransformPhysicalPointToContinuousIndex(
                    grid.TransformContinuousIndexToPhysicalPoint([float(v) for v in c.centre_zyx[::-1]]))[::-1]),
                c.score, c.radius_mm, c.sign,
            )
            for c in found
        ]
    log.debug("candidates: %d peak(s) above %.1f, %d kept", len(order), config.candidate_threshold, len(found))
    return CandidateResult(labels.astype(np.uint32, copy=False), found)
