"""Longitudinal tracking: autoregressive prompt propagation and the lesion lifecycle.

For each follow-up session ``t`` (in time order) and each lesion prompted at baseline:

1. the lesion's *source* mask is chosen: its mask at ``t-1`` (``prompt_source: previous_mask``,
   the method's autoregressive scheme) or its baseline mask (``baseline_prompt``). A lesion that
   was not observed at ``t-1`` (vanished, out of the field of view, or failed) is propagated from
   the last session where it was present, so a lesion that comes back into view is found again;
2. the source mask is warped onto the follow-up grid at full resolution through the chain of saved
   registration transforms (each maps world points of a session to the previous one), and a lesion
   that lands mostly outside the follow-up is reported ``out_of_fov``;
3. every propagated mask prompts the segmenter (built once per job) on the follow-up scan;
4. the lifecycle is read off the prediction: ``present``, ``vanished`` (below ``min_volume_ml``),
   ``out_of_fov``, ``merged`` (its mask now touches another lesion's that it did not touch
   before) and ``split`` (its second-largest connected part holds at least ``split_min_fraction``);
5. new-lesion candidates: compact blobs that appeared since the registered previous scan, found
   by :mod:`lesionlocator.track.candidates` away from tracked lesions (``candidate_exclusion_mm``),
   reported with their own IDs and scores and flagged for review (they are written to their own
   label map and not tracked further).

All decisions are deterministic: no random choices, ties broken by lesion ID.

Files are read at the edge: :func:`read_followup_inputs` reads a follow-up's scans, label maps,
transforms and tracking rows; :func:`track_followup` composes the steps above on what was read
(:func:`propagate_lesions`, :func:`segment_lesions`, :func:`followup_statuses`,
:func:`followup_candidates`), each a function of arrays, images and geometry.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Collection, Sequence

import cc3d
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import SimpleITK as sitk
from scipy import ndimage

from lesionlocator.core.config import TrackConfig
from lesionlocator.core.io import Geometry, image_from_array, read_image, write_image, write_parquet
from lesionlocator.core.prompts import read_prompts
from lesionlocator.core.regions import shell_around
from lesionlocator.register.base import load_transform
from lesionlocator.segment.api import Prompt, SegmentationResult, Segmenter
from lesionlocator.segment.prompting import prompts_from_file, prompts_from_mask
from lesionlocator.track.candidates import find_candidates
from lesionlocator.track.propagate import OutOfFov, PropagationResult, propagate_prompt

log = logging.getLogger(__name__)

CANDIDATE_ID_BASE = 1_000_000  # candidate IDs: session_index * CANDIDATE_ID_BASE + k

STATUSES = ("present", "vanished", "out_of_fov", "merged", "split", "new_candidate", "not_found")

TRACKING_SCHEMA = pa.schema(
    [
        ("patient", pa.string()),
        ("session", pa.string()),
        ("session_index", pa.int32()),
        ("lesion_id", pa.int64()),
        ("status", pa.string()),
        ("is_candidate", pa.bool_()),
        ("voxel_count", pa.int64()),
        ("volume_ml", pa.float64()),
        ("centroid_x", pa.float64()),
        ("centroid_y", pa.float64()),
        ("centroid_z", pa.float64()),
        ("score", pa.float64()),
        ("fraction_in_fov", pa.float64()),
        ("prompt_session", pa.string()),
        ("by_fallback", pa.bool_()),
    ]
)


@dataclass(frozen=True)
class SessionScan:
    """One session of a patient: label, position in time and image path."""

    session: str
    index: int
    image: Path


# -- baseline ------------------------------------------------------------------------------------


def baseline_prompts(
    image: sitk.Image, prompts_json: Path | None, prompt_mask: Path | None, preference: str = "auto"
) -> list[Prompt]:
    """The baseline prompts of a patient, one per lesion, in the image's voxel frame.

    ``preference`` auto takes a lesion's mask (from ``prompt_mask``), else its box, else its point.
    """
    geometry = Geometry.of(image)
    by_id: dict[int, Prompt] = {}
    if prompts_json is not None and preference != "mask":
        kinds = ("point", "box") if preference == "point" else ("box", "point")
        for prompt in prompts_from_file(read_prompts(prompts_json), geometry, kinds=kinds):
            by_id[int(prompt.lesion_id)] = prompt
    if prompt_mask is not None and preference in ("auto", "mask"):
        for prompt in prompts_from_mask(prompt_mask, geometry, kind="mask"):
            by_id[int(prompt.lesion_id)] = prompt
    if prompts_json is not None and preference == "mask":
        for prompt in prompts_from_file(read_prompts(prompts_json), geometry, kinds=("box", "point")):
            by_id.setdefault(int(prompt.lesion_id), prompt)
    return [by_id[i] for i in sorted(by_id)]


# -- lifecycle -----------------------------------------------------------------------------------


def touching_pairs(labels: np.ndarray) -> set[tuple[int, int]]:
    """Pairs of lesion IDs whose masks touch (26-connectivity), as sorted tuples."""
    if not labels.any():
        return set()
    components = cc3d.connected_components(labels > 0, connectivity=26)
    pairs = set()
    ids_by_component: dict[int, set[int]] = {}
    for component, lesion in zip(components[labels > 0].ravel(), labels[labels > 0].ravel()):
        ids_by_component.setdefault(int(component), set()).add(int(lesion))
    for ids in ids_by_component.values():
        ordered = sorted(ids)
        pairs |= {(a, b) for i, a in enumerate(ordered) for b in ordered[i + 1 :]}
    return pairs


def is_split(mask: np.ndarray, min_fraction: float) -> bool:
    """True when the mask's second-largest connected part holds at least ``min_fraction`` of it."""
    if not mask.any():
        return False
    components = cc3d.connected_components(mask, connectivity=26)
    sizes = np.sort(np.bincount(components.ravel())[1:])[::-1]
    return len(sizes) > 1 and sizes[1] >= min_fraction * sizes.sum()


def lesion_rows(
    labels: np.ndarray,
    geometry: Geometry,
    lesion_ids: Sequence[int],
    statuses: dict[int, str],
    scores: dict[int, float],
    fractions: dict[int, float],
    prompt_sessions: dict[int, str],
    patient: str,
    scan: SessionScan,
    is_candidate: bool = False,
    by_fallback: Collection[int] = (),
) -> list[dict]:
    """One tracking-table row per lesion: status, size and centroid (world mm, LPS).

    ``by_fallback``: the lesions whose mask the fallback segmenter made (the network's was empty).
    """
    rows = []
    voxel_ml = geometry.voxel_volume_ml()
    for lesion_id in lesion_ids:
        mask = labels == np.uint32(lesion_id)
        count = int(mask.sum())
        centroid = geometry.index_to_world(np.argwhere(mask).mean(0)) if count else np.full(3, np.nan)
        rows.append(
            {
                "patient": patient,
                "session": scan.session,
                "session_index": scan.index,
                "lesion_id": int(lesion_id),
                "status": statuses[lesion_id],
                "is_candidate": is_candidate,
                "voxel_count": count,
                "volume_ml": count * voxel_ml,
                "centroid_x": float(centroid[0]),
                "centroid_y": float(centroid[1]),
                "centroid_z": float(centroid[2]),
                "score": float(scores.get(lesion_id, 0.0)),
                "fraction_in_fov": float(fractions.get(lesion_id, 1.0)),
                "prompt_session": prompt_sessions.get(lesion_id),
                "by_fallback": int(lesion_id) in by_fallback,
            }
        )
    return rows


def assign_statuses(
    labels: np.ndarray,
    lesion_ids: Sequence[int],
    out_of_fov: set[int],
    previous_pairs: set[tuple[int, int]],
    min_voxels: int,
    split_min_fraction: float,
) -> dict[int, str]:
    """The lifecycle status of each lesion; clears vanished lesions' voxels from ``labels`` in place."""
    statuses: dict[int, str] = {}
    for lesion_id in lesion_ids:
        if lesion_id in out_of_fov:
            statuses[lesion_id] = "out_of_fov"
            continue
        mask = labels == np.uint32(lesion_id)
        if int(mask.sum()) < max(min_voxels, 1):
            labels[mask] = 0
            statuses[lesion_id] = "vanished"
        elif is_split(mask, split_min_fraction):
            statuses[lesion_id] = "split"
        else:
            statuses[lesion_id] = "present"
    for a, b in sorted(touching_pairs(labels) - previous_pairs):
        for lesion_id in (a, b):
            if statuses.get(lesion_id) in ("present", "split"):
                statuses[lesion_id] = "merged"
    return statuses


# -- one follow-up: helpers -----------------------------------------------------------------------


def _chain_transform(transforms: Sequence[sitk.Transform]) -> sitk.Transform:
    """The composition mapping session t to session s, from [T_t, T_{t-1}, ..., T_{s+1}]."""
    if len(transforms) == 1:
        return transforms[0]
    # SimpleITK applies a composite's last transform first: T_{s+1}(...(T_t(x)))
    return sitk.CompositeTransform(list(reversed(transforms)))


def _dilate_mm(mask: np.ndarray, geometry: Geometry, margin_mm: float) -> np.ndarray:
    """Voxels within ``margin_mm`` (physical distance, anisotropic spacing) of ``mask``."""
    if margin_mm <= 0 or not mask.any():
        return mask
    spacing = np.asarray(geometry.spacing, float)[::-1]
    return ndimage.distance_transform_edt(~mask, sampling=spacing) <= margin_mm


def lesion_levels(array: np.ndarray, mask: np.ndarray, spacing_zyx: np.ndarray) -> tuple[float, float] | None:
    """Median intensity inside ``mask`` and of a shell 2-6 mm outside it (image units); None if empty."""
    region = shell_around(mask, spacing_zyx)
    if region is None or not region[2].any():
        return None
    box, local, shell = region
    values = array[box]
    return float(np.median(values[local])), float(np.median(values[shell]))


def _intensity_match(source: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    """(scale, offset) mapping ``source`` intensities onto ``target``'s: robust quartiles of the body
    (voxels above each image's Otsu threshold), which absorbs CT shifts and MR gain changes."""
    from skimage.filters import threshold_otsu

    def quartiles(array: np.ndarray) -> np.ndarray:
        sample = array[::2, ::2, ::2].astype(np.float32)
        return np.percentile(sample[sample > threshold_otsu(sample)], [25, 50, 75])

    s, t = quartiles(source), quartiles(target)
    scale = float((t[2] - t[0]) / max(s[2] - s[0], 1e-6))
    return scale, float(t[1] - scale * s[1])


def _clear_faded(
    labels: np.ndarray, image: sitk.Image, baseline: tuple[sitk.Image, np.ndarray], lesion_ids: Sequence[int], fraction: float
) -> list[int]:
    """Clear (in place) the lesions that no longer stand out as they did at baseline; their IDs.

    A promptable segmenter given a propagated mask outlines *something* even where the lesion is
    gone. Two tests must agree before a lesion is called vanished:

    * *contrast*: its contrast to its surroundings now (median inside the predicted mask minus the
      median of a 2-6 mm shell) is below ``fraction`` of its baseline contrast, or of the other sign;
    * *level*: its median intensity now, matched to the baseline's intensity scale, lies less than
      ``fraction`` of the way from the baseline surroundings to the baseline lesion.

    The first alone mistakes a lesion that outgrew its propagated mask (the shell is lesion too) for
    gone; the second alone suffers from imperfect intensity matching between sessions.
    """
    current = sitk.GetArrayFromImage(image)
    spacing = np.asarray(image.GetSpacing(), float)[::-1]
    baseline_image, baseline_labels = baseline
    baseline_array = sitk.GetArrayFromImage(baseline_image)
    baseline_spacing = np.asarray(baseline_image.GetSpacing(), float)[::-1]
    scale, offset = None, 0.0
    cleared = []
    for lesion_id in lesion_ids:
        mask = labels == np.uint32(lesion_id)
        before = lesion_levels(baseline_array, baseline_labels == np.uint32(lesion_id), baseline_spacing)
        now = lesion_levels(current, mask, spacing)
        if before is None or now is None or before[0] == before[1]:
            continue
        contrast_before = before[0] - before[1]
        contrast_ratio = (now[0] - now[1]) / contrast_before
        if contrast_ratio >= fraction:
            continue
        if scale is None:
            scale, offset = _intensity_match(current, baseline_array)
        position = (scale * now[0] + offset - before[1]) / contrast_before
        if position < fraction:
            log.info("lesion %d: contrast %.2f and level %.2f of baseline: vanished", lesion_id, contrast_ratio, position)
            labels[mask] = 0
            cleared.append(lesion_id)
    return cleared


# -- one follow-up: the steps --------------------------------------------------------------------


def baseline_lesion_ids(previous_rows: Sequence[dict]) -> list[int]:
    """The tracked lesions: IDs of the baseline's (session index 0) non-candidate rows, ascending."""
    return sorted({r["lesion_id"] for r in previous_rows if r["session_index"] == 0 and not r["is_candidate"]})


def last_observed(previous_rows: Sequence[dict]) -> dict[int, int]:
    """Per lesion ID, the latest session index where it was observed (present, merged or split)."""
    last: dict[int, int] = {}
    for row in previous_rows:
        if not row["is_candidate"] and row["status"] in ("present", "merged", "split"):
            last[row["lesion_id"]] = max(last.get(row["lesion_id"], -1), row["session_index"])
    return last


def prompt_sources(previous_rows: Sequence[dict], prompt_source: str) -> dict[int, int]:
    """Per baseline lesion to propagate (ascending ID), the session index whose mask prompts it.

    ``baseline_prompt``: session 0; ``previous_mask``: the last session where the lesion was
    observed. A lesion never observed (its baseline prompt gave an empty mask) has no source.
    """
    last = last_observed(previous_rows)
    return {i: 0 if prompt_source == "baseline_prompt" else last[i] for i in baseline_lesion_ids(previous_rows) if i in last}


def propagate_lesions(
    sources: dict[int, int],
    labels: dict[int, tuple[np.ndarray, Geometry]],
    transforms: dict[int, sitk.Transform],
    t: int,
    fixed: Geometry,
    min_fraction_inside: float,
) -> dict[int, PropagationResult]:
    """Each lesion's source mask warped onto follow-up ``t`` as a mask prompt, or :class:`OutOfFov`.

    ``sources``: lesion ID -> session index (:func:`prompt_sources`); ``labels``: label maps (uint32,
    z y x) and geometries by session index; ``transforms[s]``: world (mm, LPS) of session ``s`` to
    ``s-1``, chained from ``t`` back to the source; ``fixed``: the follow-up's geometry, whose voxel
    frame (z y x) the prompts are in. A lesion with less than ``min_fraction_inside`` of its warped
    volume inside the follow-up is out of the field of view. Keyed by lesion ID in ``sources`` order.
    """
    results: dict[int, PropagationResult] = {}
    for lesion_id, source in sources.items():
        source_labels, source_geometry = labels[source]
        chain = _chain_transform([transforms[s] for s in range(t, source, -1)])
        mask_prompt = Prompt(lesion_id, "mask", mask=source_labels == np.uint32(lesion_id))
        results[lesion_id] = propagate_prompt(mask_prompt, chain, source_geometry, fixed, min_fraction_inside=min_fraction_inside)
    return results


def segment_lesions(segmenter: Segmenter, image: sitk.Image, prompts: Sequence[Prompt]) -> SegmentationResult:
    """The follow-up's lesion map: a fresh uint32 array on ``image``'s grid (z y x), lesion ID =
    prompt ID, with scores; all background (no segmenter call) when there is no prompt."""
    if not prompts:
        return SegmentationResult(np.zeros(Geometry.of(image).shape_zyx, np.uint32))
    result = segmenter.segment(image, prompts)
    return SegmentationResult(result.labels.astype(np.uint32, copy=True), dict(result.scores), result.by_fallback)


def followup_statuses(
    labels: np.ndarray,
    geometry: Geometry,
    lesion_ids: Sequence[int],
    sources: dict[int, int],
    out_of_fov: set[int],
    previous_labels: np.ndarray,
    min_volume_ml: float,
    split_min_fraction: float,
) -> dict[int, str]:
    """The lifecycle status of each tracked lesion at a follow-up (:func:`assign_statuses`).

    ``labels``: the follow-up's lesion map (z y x, ``geometry``), from which vanished lesions
    (fewer voxels than ``min_volume_ml``, in mL) are cleared in place; ``previous_labels``: the
    previous session's map (its own grid), whose touching pairs are not merges; a lesion without
    a prompt source was never observed: ``not_found``.
    """
    min_voxels = int(np.ceil(min_volume_ml / geometry.voxel_volume_ml()))
    statuses = assign_statuses(labels, lesion_ids, out_of_fov, touching_pairs(previous_labels), min_voxels, split_min_fraction)
    for lesion_id in lesion_ids:
        if lesion_id not in sources:
            statuses[lesion_id] = "not_found"  # the baseline prompt gave an empty mask
    return statuses


def previous_on_followup(previous_image: sitk.Image, image: sitk.Image, transform: sitk.Transform) -> tuple[sitk.Image, np.ndarray]:
    """The previous scan resampled (linear, float32) onto the follow-up's grid through ``transform``
    (follow-up world to previous world, mm LPS), and the follow-up voxels (bool, z y x) it covers."""
    warped = sitk.Resample(previous_image, image, transform, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    ones = sitk.Image(previous_image.GetSize(), sitk.sitkFloat32) + 1.0
    ones.CopyInformation(previous_image)
    valid = sitk.GetArrayFromImage(sitk.Resample(ones, image, transform, sitk.sitkLinear, 0.0)) > 0.99
    return warped, valid


def near_tracked_lesions(
    labels: np.ndarray,
    previous_labels: np.ndarray,
    previous_geometry: Geometry,
    image: sitk.Image,
    transform: sitk.Transform,
    margin_mm: float,
) -> np.ndarray:
    """Follow-up voxels (bool, z y x of ``image``) within ``margin_mm`` (physical distance) of a
    tracked lesion now (``labels``) or at the previous session (``previous_labels`` on
    ``previous_geometry``, warped through ``transform``: follow-up world to previous world)."""
    near = labels > 0
    previous = image_from_array(previous_labels, previous_geometry)
    near |= sitk.GetArrayFromImage(sitk.Resample(previous, image, transform, sitk.sitkNearestNeighbor, 0)) > 0
    return _dilate_mm(near, Geometry.of(image), margin_mm)


def followup_candidates(
    image: sitk.Image,
    previous_image: sitk.Image,
    transform: sitk.Transform,
    labels: np.ndarray,
    previous_labels: tuple[np.ndarray, Geometry],
    t: int,
    track: TrackConfig,
) -> tuple[np.ndarray, dict[int, float]]:
    """New-lesion candidates of follow-up ``t`` away from tracked lesions (``candidate_exclusion_mm``).

    ``transform``: follow-up world to previous world (mm, LPS); ``labels``: the follow-up's tracked
    lesions (z y x); ``previous_labels``: the previous session's map and geometry. Returns the
    candidates' label map (uint32, z y x of ``image``; IDs ``t * CANDIDATE_ID_BASE + k``, ``k = 1..``
    in score order) and each ID's score (robust SDs).
    """
    warped, valid = previous_on_followup(previous_image, image, transform)
    near = near_tracked_lesions(labels, *previous_labels, image, transform, track.candidate_exclusion_mm)
    found = find_candidates(image, warped, valid, near, track)
    if not found.candidates:
        return np.zeros(Geometry.of(image).shape_zyx, dtype=np.uint32), {}
    base = t * CANDIDATE_ID_BASE
    candidates = np.where(found.labels > 0, found.labels + np.uint32(base), 0).astype(np.uint32)
    return candidates, {base + k: c.score for k, c in enumerate(found.candidates, start=1)}


# -- one follow-up: the composition --------------------------------------------------------------


@dataclass
class FollowupResult:
    """A follow-up's tracked lesions and candidates (uint32 label maps, z y x) and its tracking rows."""

    labels: np.ndarray
    candidates: np.ndarray
    rows: list[dict]


def track_followup(
    patient: str,
    scans: Sequence[SessionScan],
    t: int,
    inputs: FollowupInputs,
    segmenter: Segmenter,
    track: TrackConfig,
    min_fraction_inside: float,
) -> FollowupResult:
    """Segment every tracked lesion at follow-up ``t`` (``t >= 1``) from already-read ``inputs``.

    Propagate the prompts, segment, clear faded lesions, assign statuses, find candidates.
    ``min_fraction_inside``: ``register.min_fraction_inside`` (a propagated mask with less of its
    volume inside the follow-up's field of view is ``out_of_fov``).
    """
    scan, image = scans[t], inputs.image
    geometry = Geometry.of(image)
    lesion_ids = baseline_lesion_ids(inputs.previous_rows)
    sources = prompt_sources(inputs.previous_rows, track.prompt_source)

    propagated = propagate_lesions(sources, inputs.labels, inputs.transforms, t, geometry, min_fraction_inside)
    out_of_fov = {i for i, result in propagated.items() if isinstance(result, OutOfFov)}
    prompts = [result.prompt for result in propagated.values() if not isinstance(result, OutOfFov)]
    for lesion_id, result in propagated.items():
        if isinstance(result, OutOfFov):
            log.info("%s ses-%s lesion %d: out of the field of view (%s)", patient, scan.session, lesion_id, result.reason)
        else:
            log.debug("%s ses-%s lesion %d: prompt propagated from ses-%s (%.0f%% inside)", patient, scan.session,
                      lesion_id, scans[sources[lesion_id]].session, 100 * result.fraction_inside)

    started = time.perf_counter()
    segmented = segment_lesions(segmenter, image, prompts)
    segment_s = time.perf_counter() - started
    labels, scores = segmented.labels, segmented.scores

    if track.vanish_contrast_fraction > 0 and prompts:
        if inputs.baseline_image is None:
            raise ValueError("the vanish test (track.vanish_contrast_fraction) needs the baseline image")
        baseline = (inputs.baseline_image, inputs.labels[0][0])
        for lesion_id in _clear_faded(labels, image, baseline, lesion_ids, track.vanish_contrast_fraction):
            scores[lesion_id] = 0.0

    previous_labels = inputs.labels[t - 1]
    statuses = followup_statuses(
        labels, geometry, lesion_ids, sources, out_of_fov, previous_labels[0], track.min_volume_ml, track.split_min_fraction
    )
    fractions = {i: result.fraction_inside for i, result in propagated.items()}
    prompt_sessions = {i: scans[s].session for i, s in sources.items()}
    rows = lesion_rows(
        labels, geometry, lesion_ids, statuses, scores, fractions, prompt_sessions, patient, scan, by_fallback=segmented.by_fallback
    )
    for lesion_id in lesion_ids:
        log.debug("%s ses-%s lesion %d: %s", patient, scan.session, lesion_id, statuses[lesion_id])
    tally = Counter(statuses[i] for i in lesion_ids)
    log.info("%s ses-%s: %d lesion(s) segmented in %.1f s (%s)", patient, scan.session, len(prompts), segment_s,
             ", ".join(f"{status} {n}" for status, n in sorted(tally.items())) or "no lesions")

    candidates = np.zeros(geometry.shape_zyx, dtype=np.uint32)
    if track.candidates:
        if inputs.previous_image is None:
            raise ValueError("new-lesion candidates (track.candidates) need the previous image")
        candidates, candidate_scores = followup_candidates(
            image, inputs.previous_image, inputs.transforms[t], labels, previous_labels, t, track
        )
        if candidate_scores:
            ids = list(candidate_scores)
            rows += lesion_rows(
                candidates, geometry, ids, {i: "new_candidate" for i in ids}, candidate_scores, {}, {}, patient, scan,
                is_candidate=True,
            )
            log.info("%s ses-%s: %d new-lesion candidate(s) for review", patient, scan.session, len(ids))
    return FollowupResult(labels=labels, candidates=candidates, rows=rows)


def baseline_rows(
    patient: str, scan: SessionScan, labels: np.ndarray, geometry: Geometry, lesion_ids: Sequence[int],
    scores: dict[int, float], by_fallback: Collection[int] = (),
) -> list[dict]:
    """Tracking rows of the baseline: present, or not_found when the prompt gave an empty mask."""
    statuses = {i: ("present" if (labels == np.uint32(i)).any() else "not_found") for i in lesion_ids}
    sessions = {i: scan.session for i in lesion_ids}
    return lesion_rows(labels, geometry, lesion_ids, statuses, scores, {}, sessions, patient, scan, by_fallback=by_fallback)


# -- files ---------------------------------------------------------------------------------------


def read_labels(path: Path) -> tuple[np.ndarray, Geometry]:
    """A label map (uint32, z y x) and its geometry."""
    image = read_image(path)
    return sitk.GetArrayFromImage(image).astype(np.uint32, copy=False), Geometry.of(image)


def read_tracking(path: Path) -> list[dict]:
    """One session's tracking table (:data:`TRACKING_SCHEMA`) as plain dicts."""
    return pq.read_table(path).to_pylist()


@dataclass
class FollowupInputs:
    """What tracking into follow-up ``t`` reads, already read (:func:`read_followup_inputs`).

    ``image``: the follow-up scan; ``previous_rows``: the tracking rows of sessions ``0..t-1``;
    ``labels``: label maps (uint32, z y x, each with its session's geometry) by session index, at
    least of every prompt source (:func:`prompt_sources`), of ``t-1`` and (vanish test) of the
    baseline; ``transforms[s]`` maps world points (mm, LPS) of session ``s`` to session ``s-1``, for
    ``s = 1..t``; ``previous_image``: session ``t-1`` (needed for candidates); ``baseline_image``:
    session 0 (needed for the vanish test).
    """

    image: sitk.Image
    previous_rows: list[dict]
    labels: dict[int, tuple[np.ndarray, Geometry]]
    transforms: dict[int, sitk.Transform]
    previous_image: sitk.Image | None = None
    baseline_image: sitk.Image | None = None


def read_followup_inputs(
    scans: Sequence[SessionScan],
    t: int,
    labels_paths: Sequence[Path],
    transform_paths: Sequence[Path | None],
    tracking_paths: Sequence[Path],
    track: TrackConfig,
) -> FollowupInputs:
    """Read the files tracking into follow-up ``t`` (``t >= 1``) needs.

    ``labels_paths[s]`` and ``tracking_paths[s]``: the label maps and tracking tables of sessions
    ``0..t-1``; ``transform_paths[s]``: the transform of session ``s`` to ``s-1`` (``None`` for the
    baseline), for ``s = 0..t``. Only the label maps that are used are read; the previous scan only
    when ``track.candidates``, the baseline scan only when the vanish test can run.
    """
    previous_rows = [row for path in tracking_paths for row in read_tracking(path)]
    sources = prompt_sources(previous_rows, track.prompt_source)
    vanish_test = track.vanish_contrast_fraction > 0 and bool(sources)
    needed = set(sources.values()) | {t - 1} | ({0} if vanish_test else set())
    return FollowupInputs(
        image=read_image(scans[t].image),
        previous_rows=previous_rows,
        labels={s: read_labels(labels_paths[s]) for s in sorted(needed)},
        transforms={s: load_transform(transform_paths[s]) for s in range(1, t + 1)},
        previous_image=read_image(scans[t - 1].image) if track.candidates else None,
        baseline_image=read_image(scans[0].image) if vanish_test else None,
    )


def write_tracking(rows: list[dict], path: Path) -> Path:
    """The per-session tracking table, with the explicit schema (an empty session keeps it)."""
    return write_parquet(pa.Table.from_pylist(rows, schema=TRACKING_SCHEMA), path)


def write_labels(labels: np.ndarray, reference: sitk.Image | Geometry, path: Path) -> Path:
    return write_image(image_from_array(labels.astype(np.uint32, copy=False), reference), path)
