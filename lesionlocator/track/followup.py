"""Longitudinal tracking: anchored prompts, evidence-based statuses and new lesions that are tracked on.

For each follow-up session ``t`` (in time order) and each tracked lesion (the lesions prompted at
baseline, the new lesions found at earlier follow-ups, and the lesions a reader added):

1. **prompts** (``track.prompt_source``): *anchored* (default, :mod:`lesionlocator.track.anchors`):
   the lesion's anchor (the reader's last prompt for it, or a box around a new lesion at its first
   sighting) is carried to the follow-up through the chain of registration transforms (each maps world
   points of a session to the previous one) and segmented; where that mask disagrees with the lesion's
   last mask (empty, far away, or outgrowing the box) the lesion is re-prompted from its last mask.
   *previous_mask* propagates the last mask as the prompt (LesionLocator's autoregressive scheme);
   *baseline_prompt* the baseline mask. A lesion that was not observed at ``t-1`` is propagated from the
   last session where it was, so a lesion that comes back into view is found again; a propagated mask
   that lands mostly outside the follow-up makes the lesion ``out_of_fov``;
2. the segmenter (built once per job) segments every prompt on the follow-up scan;
3. **evidence** (:func:`judge_lesions`, :mod:`lesionlocator.track.evidence`): ``vanished`` only when
   the segmenters and the image agree that the lesion is gone (an empty mask whose expected region no
   longer stands out; or a mask that has faded, by contrast and level against the lesion's reference
   session, and that the second opinion, the classical segmenter, does not contradict, and no parts of
   it are found: :func:`refind_fragments` re-prompts lesion-like groups of voxels near where it was,
   whose union, when it stands out, becomes its mask). When they
   disagree the lesion is ``uncertain`` (mask kept, flagged); a mask further from the lesion's last
   mask than registration explains is ``lost`` (voxels cleared, flagged); a volume change beyond
   ``max_volume_ratio`` is ``uncertain``. Then ``split`` (its second-largest connected part holds at
   least ``split_min_fraction``) and ``merged`` (its mask now touches another lesion's that it did not
   touch before);
4. **new lesions**: compact blobs that appeared since the registered previous scan, away from
   tracked lesions (:mod:`lesionlocator.track.candidates`), are segmented from a box around them and
   reported as ``new_candidate`` with IDs ``t * 1_000_000 + k`` in the lesion map; from the next
   follow-up on they are tracked like every lesion (same ID), so a candidate seen again is confirmed
   (the measurement stage reads that off the rows) and one that is not stays equivocal;
5. **a reader's follow-up prompts** (``prompts.json`` / ``prompt_mask`` of session ``t``, the
   baseline's format) override propagation: a tracked lesion's prompt is replaced from ``t`` on
   (``reader = corrected``), a new ID adds a lesion (``added``), and ``{"id": .., "review":
   "confirmed" | "rejected"}`` reviews a new-lesion candidate.

Every row says why it needs review (``review_reason``) when it does. All decisions are deterministic:
no random choices, ties broken by lesion ID.

Files are read at the edge: :func:`read_followup_inputs` reads a follow-up's scans, label maps,
transforms, prompts and tracking rows; :func:`track_followup` composes the steps above on what was read.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Collection, Sequence

import cc3d
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import SimpleITK as sitk
from scipy import ndimage

from lesionlocator.core.config import TrackConfig
from lesionlocator.core.io import Geometry, image_from_array, read_geometry, read_image, write_image, write_parquet
from lesionlocator.core.prompts import read_prompts
from lesionlocator.core.regions import dice, nonzero_box, nonzero_index
from lesionlocator.register.base import load_transform
from lesionlocator.segment.api import Prompt, SegmentationResult, Segmenter
from lesionlocator.segment.prompting import interior_point, prompts_from_file, prompts_from_mask
from lesionlocator.track import anchors as anchoring
from lesionlocator.track.anchors import Anchor
from lesionlocator.track.candidates import detection_reference, find_candidates
from lesionlocator.track.evidence import (
    Levels,
    background_rate,
    faded_by,
    intensity_match,
    is_reliable,
    lesion_levels,
    lesion_like_excess,
    lesion_like_parts,
    novelty,
)
from lesionlocator.track.propagate import OutOfFov, Propagated, PropagationResult, propagate_prompt

log = logging.getLogger(__name__)

CANDIDATE_ID_BASE = 1_000_000  # candidate IDs: session_index * CANDIDATE_ID_BASE + k

STATUSES = (
    "present", "vanished", "out_of_fov", "merged", "split", "not_found", "uncertain", "lost", "new_candidate", "rejected",
)
#: Statuses of a lesion whose mask at that session can prompt a later one.
OBSERVED = ("present", "merged", "split", "new_candidate")
NEW_LESION_NOVELTY = 0.5  # a new lesion is seen again when its region still differs this much (x its contrast) from before it appeared
NEW_LESION_BOX_MARGIN_MM = 5.0
RESIDUAL_FRACTION = 0.2  # a lesion is not gone while a fifth of its volume in lesion-like voxels remains near where it was
RESIDUAL_MARGIN_MM = 5.0  # ... within this distance of its last mask (at least; see _residual_margin)
FRAGMENT_MIN_FRACTION = 0.1  # a part of a lesion that fell apart holds at least this fraction of its reference volume ...
FRAGMENT_MIN_VOXELS = 4  # ... and this many voxels (fewer cannot be told from noise)
FRAGMENT_MAX = 4  # at most this many parts are re-prompted, largest first
REFOUND_REASON = "re-found from its parts near where it was, after the mask from its prompt had faded"  # flagged: a reader checks
CANDIDATE_MIN_DICE = 0.3  # the segmenter's mask of a candidate must outline its blob at least this well  # a new lesion's anchor (and its first segmentation): a box this much around its blob

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
        ("is_new", pa.bool_()),
        ("first_session_index", pa.int32()),
        ("review_reason", pa.string()),
        ("reader", pa.string()),
    ]
)


@dataclass(frozen=True)
class SessionScan:
    """One session of a patient: label, position in time, image path and the reader's prompt files
    (the baseline's lesions to track; at a follow-up, corrections, additions and reviews)."""

    session: str
    index: int
    image: Path
    prompts: Path | None = None
    prompt_mask: Path | None = None


# -- baseline ------------------------------------------------------------------------------------


def baseline_prompts(
    image: sitk.Image | Geometry, prompts_json: Path | None, prompt_mask: Path | None, preference: str = "auto"
) -> list[Prompt]:
    """A session's prompts (the baseline's, or a reader's at a follow-up), one per lesion, in the image's
    voxel frame; entries of ``prompts_json`` that only review a candidate give none.

    ``preference`` auto takes a lesion's mask (from ``prompt_mask``), else its box, else its point.
    """
    geometry = image if isinstance(image, Geometry) else Geometry.of(image)
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
    box = nonzero_box(mask)
    if box is None:
        return False
    components = cc3d.connected_components(mask[box], connectivity=26)
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
    details: dict[int, dict] | None = None,
) -> list[dict]:
    """One tracking-table row per lesion: status, size and centroid (world mm, LPS).

    ``by_fallback``: the lesions whose mask the fallback segmenter made (the network's was empty);
    ``details``: per lesion ID, any of is_new, first_session_index, review_reason and reader (defaults:
    a baseline lesion, first seen at the baseline, nothing to review, no reader action).
    """
    details = details or {}
    rows = []
    voxel_ml = geometry.voxel_volume_ml()
    for lesion_id in lesion_ids:
        mask = labels == np.uint32(lesion_id)
        count = int(mask.sum())
        centroid = geometry.index_to_world(nonzero_index(mask).mean(0)) if count else np.full(3, np.nan)
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
                "is_new": bool(details.get(lesion_id, {}).get("is_new", False)),
                "first_session_index": int(details.get(lesion_id, {}).get("first_session_index", 0)),
                "review_reason": details.get(lesion_id, {}).get("review_reason"),
                "reader": details.get(lesion_id, {}).get("reader"),
            }
        )
        rows[-1]["is_candidate"] = bool(is_candidate or rows[-1]["status"] == "new_candidate")
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


def _chain(transforms: dict[int, sitk.Transform], t: int, s: int) -> sitk.Transform:
    """Follow-up ``t`` world to session ``s`` world (mm, LPS), ``s < t``."""
    return _chain_transform([transforms[k] for k in range(t, s, -1)])


def _dilate_mm(mask: np.ndarray, geometry: Geometry, margin_mm: float) -> np.ndarray:
    """Voxels within ``margin_mm`` (physical distance, anisotropic spacing) of ``mask``; the distance
    transform runs on the mask's bounding box grown by the margin, not on the whole scan."""
    where = nonzero_index(mask)
    if margin_mm <= 0 or where.size == 0:
        return mask
    spacing = np.asarray(geometry.spacing, float)[::-1]
    pad = np.ceil(margin_mm / spacing).astype(int) + 1
    lo, hi = np.maximum(where.min(0) - pad, 0), np.minimum(where.max(0) + pad + 1, mask.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    out = np.zeros(mask.shape, bool)
    out[box] = ndimage.distance_transform_edt(~mask[box], sampling=spacing) <= margin_mm
    return out


# -- the tracked lesions ---------------------------------------------------------------------------


def baseline_lesion_ids(previous_rows: Sequence[dict]) -> list[int]:
    """The lesions prompted at baseline: IDs of the baseline's (session index 0) rows, ascending."""
    return sorted({r["lesion_id"] for r in previous_rows if r["session_index"] == 0 and not r.get("is_new", False)
                   and not r["is_candidate"]})


def first_sessions(previous_rows: Sequence[dict]) -> dict[int, int]:
    """Per lesion ID, the session index where it was first seen (its first row)."""
    first: dict[int, int] = {}
    for row in previous_rows:
        first[row["lesion_id"]] = min(first.get(row["lesion_id"], row["session_index"]), row["session_index"])
    return first


def new_lesion_ids(previous_rows: Sequence[dict]) -> list[int]:
    """New lesions to track on: first seen after baseline (a candidate, or added by a reader) and never
    rejected; ascending. Rows of an older table without ``is_new`` count candidates as new lesions."""
    new = {r["lesion_id"] for r in previous_rows if r.get("is_new", r["is_candidate"])}
    rejected = {r["lesion_id"] for r in previous_rows if r["status"] == "rejected"}
    return sorted(new - rejected)


def awaiting_confirmation(previous_rows: Sequence[dict]) -> dict[int, int]:
    """New lesions the detector found that no later session has shown yet and no reader has confirmed or
    added: lesion ID -> the session index where they were first seen."""
    first = first_sessions(previous_rows)
    last = last_observed(previous_rows)
    vouched = {r["lesion_id"] for r in previous_rows if r.get("reader") in ("added", "confirmed")}
    return {i: first[i] for i in new_lesion_ids(previous_rows) if last.get(i) == first[i] and i not in vouched and first[i] > 0}


def tracked_lesion_ids(previous_rows: Sequence[dict]) -> list[int]:
    """Every lesion tracked into the next follow-up: the baseline's, then the new ones, ascending each."""
    return baseline_lesion_ids(previous_rows) + new_lesion_ids(previous_rows)


def last_observed(previous_rows: Sequence[dict]) -> dict[int, int]:
    """Per lesion ID, the latest session index where it was observed (:data:`OBSERVED` with voxels)."""
    last: dict[int, int] = {}
    for row in previous_rows:
        if row["status"] in OBSERVED and row["voxel_count"] > 0:
            last[row["lesion_id"]] = max(last.get(row["lesion_id"], -1), row["session_index"])
    return last


def last_volumes(previous_rows: Sequence[dict]) -> dict[int, float]:
    """Per lesion ID, its volume (mL) at the last session where it was observed."""
    last = last_observed(previous_rows)
    return {r["lesion_id"]: r["volume_ml"] for r in previous_rows if last.get(r["lesion_id"]) == r["session_index"]}


def prompt_sources(previous_rows: Sequence[dict], prompt_source: str) -> dict[int, int]:
    """Per tracked lesion with a mask to propagate (ascending ID, baseline lesions first), the session
    index whose mask is propagated.

    ``baseline_prompt``: the lesion's first session; otherwise the last session where the lesion was
    observed. A lesion never observed (its baseline prompt gave an empty mask) has no source.
    """
    last = last_observed(previous_rows)
    first = first_sessions(previous_rows)
    ids = tracked_lesion_ids(previous_rows)
    return {i: first[i] if prompt_source == "baseline_prompt" else last[i] for i in ids if i in last}


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
        mask_prompt = Prompt(lesion_id, "mask", mask=source_labels == np.uint32(lesion_id))
        results[lesion_id] = propagate_prompt(mask_prompt, _chain(transforms, t, source), source_geometry, fixed,
                                              min_fraction_inside=min_fraction_inside)
    return results


def propagate_anchors(
    anchors: dict[int, Anchor],
    geometries: dict[int, Geometry],
    transforms: dict[int, sitk.Transform],
    t: int,
    fixed: Geometry,
) -> dict[int, PropagationResult]:
    """Each anchor carried to follow-up ``t`` (a reader's prompt at ``t`` itself as it is), or :class:`OutOfFov`.

    ``geometries``: the geometry of each anchor's session. The anchor of a lesion is never judged out
    of the field of view by its box (a box is larger than its lesion): any part inside will do.
    """
    results: dict[int, PropagationResult] = {}
    for lesion_id, anchor in anchors.items():
        if anchor.session_index == t:
            results[lesion_id] = Propagated(lesion_id, anchor.prompt, 1.0)
            continue
        chain = _chain(transforms, t, anchor.session_index)
        results[lesion_id] = propagate_prompt(anchor.prompt, chain, geometries[anchor.session_index], fixed, min_fraction_inside=1e-9)
    return results


def segment_lesions(segmenter: Segmenter, image: sitk.Image, prompts: Sequence[Prompt]) -> SegmentationResult:
    """The follow-up's lesion map: a fresh uint32 array on ``image``'s grid (z y x), lesion ID =
    prompt ID, with scores; all background (no segmenter call) when there is no prompt."""
    if not prompts:
        return SegmentationResult(np.zeros(Geometry.of(image).shape_zyx, np.uint32))
    result = segmenter.segment(image, prompts)
    return SegmentationResult(result.labels.astype(np.uint32, copy=True), dict(result.scores), set(result.by_fallback))


def replace_lesions(labels: np.ndarray, result: SegmentationResult, lesion_ids: Collection[int]) -> None:
    """Put ``result``'s masks of ``lesion_ids`` into ``labels`` (in place) instead of their old voxels,
    where no other lesion is."""
    ids = np.asarray(sorted(lesion_ids), np.uint32)
    labels[np.isin(labels, ids)] = 0
    new = np.isin(result.labels, ids) & (labels == 0)
    labels[new] = result.labels[new]


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
    """The lifecycle status of each tracked lesion at a follow-up from its mask alone (:func:`assign_statuses`).

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


# -- evidence --------------------------------------------------------------------------------------


@dataclass
class Judgement:
    """A lesion's status at a follow-up and, when it needs a reader, why."""

    status: str
    reason: str | None = None


class References:
    """Each lesion's reference levels (:class:`~lesionlocator.track.evidence.Levels` at its first session:
    the baseline, or a new lesion's first sighting) and the intensity match of the follow-up to each
    reference scan, computed on first use."""

    def __init__(self, images: dict[int, sitk.Image], labels: dict[int, tuple[np.ndarray, Geometry]], first: dict[int, int], current: np.ndarray):
        self.images, self.labels, self.first, self.current = images, labels, first, current
        self._levels: dict[int, Levels | None] = {}
        self._match: dict[int, tuple[float, float]] = {}
        self.before: dict[int, sitk.Image] = {}  # scans before new lesions appeared, by session index
        self.spacing_xyz: tuple[float, float, float] = (1.0, 1.0, 1.0)  # the follow-up's
        self.transforms: dict[int, sitk.Transform] = {}
        self.t = 0

    def novelty(self, lesion_id: int, mask: np.ndarray, image: sitk.Image) -> float | None:
        """:func:`~lesionlocator.track.evidence.novelty` of a new lesion against the scan before its first
        sighting; None when that scan was not read or the reference contrast is unreliable."""
        s = self.first.get(lesion_id, 0) - 1
        reference = self.levels(lesion_id)
        if s < 0 or s not in self.before or reference is None:
            return None
        key = -1 - s  # the match of the follow-up onto an earlier scan, cached apart from the references'
        if key not in self._match:
            self._match[key] = intensity_match(self.current, sitk.GetArrayViewFromImage(self.before[s]))
        return novelty(image, mask, self.before[s], _chain(self.transforms, self.t, s), reference, *self._match[key])

    def levels(self, lesion_id: int) -> Levels | None:
        if lesion_id not in self._levels:
            s = self.first.get(lesion_id)
            levels = None
            if s is not None and s in self.images and s in self.labels:
                image = self.images[s]
                spacing = np.asarray(image.GetSpacing(), float)[::-1]
                levels = lesion_levels(sitk.GetArrayViewFromImage(image), self.labels[s][0] == np.uint32(lesion_id), spacing)
            self._levels[lesion_id] = levels
        return self._levels[lesion_id]

    def remains(self, lesion_id: int, region: np.ndarray, min_fraction: float = RESIDUAL_FRACTION) -> bool:
        """Whether ``region`` (bool, z y x of the follow-up) still holds lesion-like tissue: at least
        ``min_fraction`` of the lesion's reference volume in voxels beyond what noise gives
        (:func:`~lesionlocator.track.evidence.lesion_like_excess`). False when the evidence is missing."""
        reference = self.levels(lesion_id)
        s = self.first.get(lesion_id)
        if reference is None or s not in self.images or s not in self.labels:
            return False
        image = self.images[s]
        reference_mask = self.labels[s][0] == np.uint32(lesion_id)
        spacing = np.asarray(image.GetSpacing(), float)[::-1]
        rate = background_rate(sitk.GetArrayViewFromImage(image), reference_mask, spacing, reference)
        excess = lesion_like_excess(self.current, region, reference, *self.match(lesion_id), rate)
        needed = min_fraction * self.reference_voxels(lesion_id)
        log.debug("lesion %d: %.0f lesion-like voxels in excess of noise near where it was (%.0f needed)", lesion_id, excess, needed)
        return excess >= needed

    def reference_voxels(self, lesion_id: int) -> float:
        """The lesion's reference volume in voxels of the follow-up's grid (0 when unknown)."""
        s = self.first.get(lesion_id)
        if s not in self.images or s not in self.labels:
            return 0.0
        count = int(np.count_nonzero(self.labels[s][0] == np.uint32(lesion_id)))
        return count * float(np.prod(self.images[s].GetSpacing())) / float(np.prod(self.spacing_xyz))

    def match(self, lesion_id: int) -> tuple[float, float]:
        s = self.first[lesion_id]
        if s not in self._match:
            self._match[s] = intensity_match(self.current, sitk.GetArrayViewFromImage(self.images[s]))
        return self._match[s]


def _standing(mask: np.ndarray, lesion_id: int, refs: References, current: np.ndarray, spacing: np.ndarray,
              track: TrackConfig) -> tuple[float, float] | None:
    """(contrast ratio, level position) of ``mask`` against the lesion's reference session
    (:func:`~lesionlocator.track.evidence.faded_by`); None when the evidence cannot say (no reliable
    reference contrast, or no shell)."""
    reference = refs.levels(lesion_id)
    if reference is None or not is_reliable(reference, track.reliable_contrast_sd):
        return None
    now = lesion_levels(current, mask, spacing)
    if now is None:
        return None
    scale, offset = refs.match(lesion_id)
    return faded_by(now, reference, scale, offset)


def _faded(mask: np.ndarray, lesion_id: int, refs: References, current: np.ndarray, spacing: np.ndarray, track: TrackConfig) -> bool | None:
    """Whether ``mask`` no longer stands out as the lesion did at its reference session (contrast and
    level both below ``vanish_contrast_fraction``); None when the evidence cannot say."""
    standing = _standing(mask, lesion_id, refs, current, spacing, track)
    if standing is None:
        return None
    return standing[0] < track.vanish_contrast_fraction and standing[1] < track.vanish_contrast_fraction


def _stands_out(mask: np.ndarray, lesion_id: int, refs: References, current: np.ndarray, spacing: np.ndarray, track: TrackConfig) -> bool:
    """Whether ``mask`` (a second opinion) still stands out from its shell as the lesion did: contrast at
    least ``vanish_contrast_fraction`` of the reference's. The contrast is local, so a scanner's gain or an
    MR bias field does not move it; the level is not asked here: matched by the scan's global quartiles,
    it erred by half a low-contrast lesion's contrast on unchanged MR lesions, and a veto that cannot be
    trusted would turn a shrunken lesion into a complete response. A second opinion that outlines another
    structure of the same contrast only makes the lesion ``uncertain`` (flagged), never ``present``."""
    standing = _standing(mask, lesion_id, refs, current, spacing, track)
    if standing is not None:
        log.debug("lesion %d: second opinion at contrast %.2f, level %.2f of its reference", lesion_id, *standing)
    return standing is not None and standing[0] >= track.vanish_contrast_fraction


def refind_fragments(
    lesion_id: int,
    region: np.ndarray,
    image: sitk.Image,
    segmenter: Segmenter,
    refs: References,
    track: TrackConfig,
    min_voxels: int,
) -> np.ndarray | None:
    """The parts of a lesion that fell apart, re-found, or None: their union (bool, z y x of ``image``).

    A lesion split in two is outlined by a prompt for the whole as one blob over both parts and the
    tissue between them, whose median then looks like the surroundings: by its mask alone it has faded.
    So before such a lesion is called gone, its parts are looked for in ``region`` (bool, z y x; near its
    last mask, :func:`_residual_margin`): groups of voxels that look like the lesion against its reference
    levels (:func:`~lesionlocator.track.evidence.lesion_like_parts`; each at least ``FRAGMENT_MIN_FRACTION``
    of its reference volume, ``FRAGMENT_MIN_VOXELS`` and ``min_voxels``; together at least
    ``RESIDUAL_FRACTION`` of it). The segmenter is prompted with a point inside each (the voxel frame of
    ``image``; a point, not a box, so that a part that touches a vessel is outlined, not the vessel). A
    part is kept when its mask reaches its group, lies mostly in ``region`` and stands out as the lesion
    did (contrast and level both at least ``vanish_contrast_fraction`` of the reference's,
    :func:`~lesionlocator.track.evidence.faded_by`); the union of the kept parts must stand out so too.
    None when the evidence is missing (no reliable reference) or nothing is re-found."""
    reference = refs.levels(lesion_id)
    if reference is None or not is_reliable(reference, track.reliable_contrast_sd) or not region.any():
        return None
    expected = refs.reference_voxels(lesion_id)
    smallest = max(int(np.ceil(FRAGMENT_MIN_FRACTION * expected)), FRAGMENT_MIN_VOXELS, min_voxels)
    parts = lesion_like_parts(refs.current, region, reference, *refs.match(lesion_id), smallest, FRAGMENT_MAX)
    if not parts or sum(int(p.sum()) for p in parts) < RESIDUAL_FRACTION * expected:
        return None
    prompts = [Prompt(k, "point", point=interior_point(part)) for k, part in enumerate(parts, start=1)]  # IDs local to this call
    found = segmenter.segment(image, prompts).labels
    spacing = np.asarray(image.GetSpacing(), float)[::-1]
    union = np.zeros(region.shape, bool)
    for k, part in enumerate(parts, start=1):
        mask = found == np.uint32(k)
        count = int(mask.sum())
        standing = _standing(mask, lesion_id, refs, refs.current, spacing, track) if count >= min_voxels else None
        kept = (standing is not None and min(standing) >= track.vanish_contrast_fraction and bool((mask & part).any())
                and int((mask & region).sum()) * 2 >= count)
        log.debug("lesion %d: part %d (%d lesion-like voxels): %d voxels outlined%s%s", lesion_id, k, int(part.sum()), count,
                  "" if standing is None else f", contrast {standing[0]:.2f}, level {standing[1]:.2f} of its reference",
                  ", kept" if kept else "")
        if kept:
            union |= mask
    if int(union.sum()) < min_voxels:
        return None
    standing = _standing(union, lesion_id, refs, refs.current, spacing, track)
    if standing is None or min(standing) < track.vanish_contrast_fraction:
        return None
    return union


def _retry_margin_mm(last: np.ndarray, geometry: Geometry, track: TrackConfig) -> float:
    """The margin of a box re-prompted after a doubtful answer: ``reprompt_margin_mm``, or a quarter of the
    last mask's equivalent diameter when larger (room for a lesion that kept growing)."""
    return max(track.reprompt_margin_mm, 0.25 * anchoring.equivalent_diameter_mm(int(last.sum()), geometry))


def _outgrown(lesion_id: int, mask: np.ndarray, prompt: Prompt, inputs: "FollowupInputs", refs: References, track: TrackConfig) -> str | None:
    """Why the anchor box cuts the lesion (:func:`~lesionlocator.track.anchors.outgrown_faces`), or None:
    beyond a face the follow-up now looks like the lesion (against its reference levels) where, at the
    anchor's session, it looked like its surroundings. None when the evidence is missing (no reliable
    reference, or the anchor's session image was not read)."""
    anchor = inputs.anchors.get(lesion_id)
    reference = refs.levels(lesion_id)
    if anchor is None or anchor.prompt.kind != "box" or reference is None or not is_reliable(reference, track.reliable_contrast_sd):
        return None
    session = anchor.session_index
    if session not in inputs.reference_images or session not in inputs.labels or refs.first.get(lesion_id) != session:
        return None
    scale, offset = refs.match(lesion_id)
    now = (scale * anchoring.beyond_faces(refs.current, mask, prompt.box) + offset - reference.shell) / reference.contrast
    anchor_mask = inputs.labels[session][0] == np.uint32(lesion_id)
    at_anchor = sitk.GetArrayViewFromImage(inputs.reference_images[session])
    before = (anchoring.beyond_faces(at_anchor, anchor_mask, anchor.prompt.box) - reference.shell) / reference.contrast
    faces = anchoring.outgrown_faces(now, before)
    if not faces.any():
        return None
    names = ("z-", "z+", "y-", "y+", "x-", "x+")
    return "outgrown: beyond its anchor box (" + ", ".join(n for n, f in zip(names, faces) if f) + ") the image now looks like the lesion"


def judge_lesions(
    labels: np.ndarray,
    image: sitk.Image,
    lesion_ids: Sequence[int],
    used_prompts: dict[int, Prompt],
    previous: dict[int, np.ndarray],
    previous_volumes: dict[int, float],
    refs: References | None,
    second_opinion: Segmenter | None,
    track: TrackConfig,
    unconfirmed: Collection[int] = (),
    segmenter: Segmenter | None = None,
    refind: Collection[int] | None = None,
) -> dict[int, Judgement]:
    """The evidence-based status of each segmented lesion (present, vanished, uncertain or lost); clears
    (in place) the voxels of the lesions judged vanished or lost.

    ``used_prompts``: the prompt each lesion was segmented from; ``previous``: its propagated last mask
    (bool, z y x; absent when never observed); ``previous_volumes``: its volume (mL) then; ``refs``: the
    reference levels (None: the vanish test is off); ``second_opinion``: a second segmenter asked about
    a mask that has faded (the classical one; None: the faded test alone decides); ``unconfirmed``: new
    lesions awaiting confirmation (:func:`awaiting_confirmation`), which must still differ from the scan
    before they appeared (:func:`~lesionlocator.track.evidence.novelty` at least ``NEW_LESION_NOVELTY``),
    else they are not there (``vanished``: their first sighting stays an equivocal new lesion);
    ``segmenter``: the one that made ``labels``, re-prompted on the parts of a lesion that would otherwise
    be gone or doubtful (:func:`refind_fragments`; None: not looked for); ``refind``: the lesions whose
    parts may be looked for (None: all): those observed at the previous session, since a lesion falls
    apart between two scans, while one already gone must come back by its own prompt (parts of tissue
    near an old mask are no evidence that it reappeared). A lesion re-found so gets the union of its
    parts as its mask and is judged on it (present, or split by :func:`lifecycle`), flagged for review.
    """
    geometry = Geometry.of(image)
    min_voxels = max(int(np.ceil(track.min_volume_ml / geometry.voxel_volume_ml())), 1)
    current = sitk.GetArrayViewFromImage(image)
    spacing = np.asarray(image.GetSpacing(), float)[::-1]
    judged: dict[int, Judgement] = {}
    for lesion_id in lesion_ids:
        mask = labels == np.uint32(lesion_id)
        count = int(mask.sum())
        last = previous.get(lesion_id)
        refound = None  # the review reason of a lesion re-found from its parts
        if lesion_id in unconfirmed and count >= min_voxels and refs is not None:
            change = refs.novelty(lesion_id, mask, image)
            if change is not None and change < NEW_LESION_NOVELTY:
                log.info("lesion %d: not seen again (its region differs from the scan before it appeared by %.2f of its "
                         "contrast)", lesion_id, change)
                count = 0  # not there: judged below as gone
        if lesion_id in unconfirmed and count < min_voxels:
            labels[mask] = 0
            judged[lesion_id] = Judgement("vanished")
            continue
        if count < min_voxels:
            labels[mask] = 0
            expected = last if last is not None else _prompt_region(used_prompts.get(lesion_id), labels.shape)
            faded = _faded(expected, lesion_id, refs, current, spacing, track) if refs is not None and expected is not None else None
            region = _dilate_mm(expected, geometry, _residual_margin(expected, geometry)) if expected is not None else None
            if faded is False:
                judged[lesion_id] = Judgement(
                    "uncertain", "no segmenter found the lesion, but where it was expected the image still stands out as it did"
                )
                continue
            parts = _parts(lesion_id, region, image, segmenter, refs, track, min_voxels, refind)
            if parts is None:
                if region is not None and refs is not None and refs.remains(lesion_id, region):
                    judged[lesion_id] = Judgement("uncertain", "no segmenter found the lesion, but lesion-like tissue remains where it was")
                else:
                    judged[lesion_id] = Judgement("vanished")
                continue
            mask, count = _take_parts(labels, lesion_id, mask, parts)
            refound = REFOUND_REASON
        if last is not None and last.any():
            distance = anchoring.jump_mm(mask, last, geometry)
            limit = anchoring.jump_limit_mm(last, geometry, track.max_jump_mm)
            if distance is not None and distance > limit:
                labels[mask] = 0
                judged[lesion_id] = Judgement("lost", f"its mask lies {distance:.0f} mm from its propagated last mask (limit {limit:.0f} mm)")
                continue
        if refs is not None and _faded(mask, lesion_id, refs, current, spacing, track):
            opinion = _second_opinion(second_opinion, image, used_prompts.get(lesion_id), min_voxels)
            still_there = opinion is not None and _stands_out(opinion, lesion_id, refs, current, spacing, track)
            around = last if last is not None else mask
            region = _dilate_mm(around, geometry, _residual_margin(around, geometry))
            if still_there:
                judged[lesion_id] = Judgement(
                    "uncertain", "segmenters disagree: the network's mask no longer stands out, the classical segmenter's does"
                )
                continue
            parts = _parts(lesion_id, region, image, segmenter, refs, track, min_voxels, refind)
            if parts is None:
                if refs.remains(lesion_id, region):
                    judged[lesion_id] = Judgement(
                        "uncertain", "its mask no longer stands out, but lesion-like tissue remains where it was (fallen apart, moved?)"
                    )
                else:
                    log.info("lesion %d: its mask no longer stands out as at its reference session: vanished", lesion_id)
                    labels[mask] = 0
                    judged[lesion_id] = Judgement("vanished")
                continue
            mask, count = _take_parts(labels, lesion_id, mask, parts)
            refound = REFOUND_REASON
        volume = count * geometry.voxel_volume_ml()
        before = previous_volumes.get(lesion_id)
        if before and before > 0:
            ratio = volume / before
            if ratio > track.max_volume_ratio or ratio < 1.0 / track.max_volume_ratio:
                judged[lesion_id] = Judgement("uncertain", f"volume x{ratio:.2f} since its last observation (limit x{track.max_volume_ratio:g})")
                continue
        judged[lesion_id] = Judgement("present", refound)
    return judged


def _parts(lesion_id: int, region: np.ndarray | None, image: sitk.Image, segmenter: Segmenter | None, refs: References | None,
           track: TrackConfig, min_voxels: int, refind: Collection[int] | None) -> np.ndarray | None:
    """:func:`refind_fragments` when it can and may run (a segmenter, reference levels and a region; the
    lesion in ``refind``, or ``refind`` None), else None."""
    if segmenter is None or refs is None or region is None or (refind is not None and lesion_id not in refind):
        return None
    parts = refind_fragments(lesion_id, region, image, segmenter, refs, track, min_voxels)
    if parts is not None:
        log.info("lesion %d: no mask of it stands out as it did, but its parts do (%d voxels re-found near where it was)",
                 lesion_id, int(parts.sum()))
    return parts


def _take_parts(labels: np.ndarray, lesion_id: int, mask: np.ndarray, parts: np.ndarray) -> tuple[np.ndarray, int]:
    """Replace a lesion's voxels in ``labels`` (in place) by its re-found ``parts`` where no other lesion
    is; its new mask and voxel count."""
    labels[mask] = 0
    labels[parts & (labels == 0)] = np.uint32(lesion_id)
    mask = labels == np.uint32(lesion_id)
    return mask, int(mask.sum())


def _residual_margin(mask: np.ndarray, geometry: Geometry) -> float:
    """How far from a lesion's last mask its remains are looked for (mm): ``RESIDUAL_MARGIN_MM``, or half the
    mask's equivalent diameter when larger (the parts of a lesion that fell apart drift about that far)."""
    return max(RESIDUAL_MARGIN_MM, 0.5 * anchoring.equivalent_diameter_mm(int(mask.sum()), geometry))


def _prompt_region(prompt: Prompt | None, shape: Sequence[int]) -> np.ndarray | None:
    """The voxels a prompt designates (a mask's, a box's); None for a point or no prompt."""
    from lesionlocator.track.propagate import box_mask

    if prompt is None or prompt.kind == "point":
        return None
    return prompt.mask if prompt.kind == "mask" else box_mask(prompt.box, shape)


def _second_opinion(segmenter: Segmenter | None, image: sitk.Image, prompt: Prompt | None, min_voxels: int) -> np.ndarray | None:
    """The second segmenter's mask (bool, z y x) for one prompt, None when it has none (or there is none)."""
    if segmenter is None or prompt is None:
        return None
    result = segmenter.segment(image, [prompt])
    mask = result.labels == np.uint32(prompt.lesion_id)
    return mask if int(mask.sum()) >= min_voxels else None


def lifecycle(labels: np.ndarray, judged: dict[int, Judgement], previous_labels: np.ndarray, split_min_fraction: float) -> None:
    """Refine present lesions (in place): ``split`` when their mask falls apart, ``merged`` when it now
    touches another lesion's that it did not touch at the previous session (``previous_labels``)."""
    for lesion_id, judgement in judged.items():
        if judgement.status == "present" and is_split(labels == np.uint32(lesion_id), split_min_fraction):
            judgement.status = "split"
    for a, b in sorted(touching_pairs(labels) - touching_pairs(previous_labels)):
        for lesion_id in (a, b):
            if lesion_id in judged and judged[lesion_id].status in ("present", "split"):
                judged[lesion_id].status = "merged"


# -- new lesions -----------------------------------------------------------------------------------


def previous_on_followup(previous_image: sitk.Image, image: sitk.Image, transform: sitk.Transform) -> tuple[sitk.Image, np.ndarray]:
    """An earlier scan resampled (linear, float32) through ``transform`` (follow-up world to that scan's
    world, mm LPS) onto the grid the candidate search runs on (:func:`detection_reference`: the
    follow-up's, or a coarser one for a fine scan), and the voxels of that grid (bool, z y x) it covers.

    One resampling gives both: points the transform maps outside the earlier scan get NaN (the
    interpolator's "outside" value), which marks them invalid, and then 0."""
    reference = detection_reference(image)
    warped = sitk.Resample(previous_image, reference, transform, sitk.sitkLinear, float("nan"), sitk.sitkFloat32)
    array = sitk.GetArrayFromImage(warped)
    valid = ~np.isnan(array)
    array[~valid] = 0.0
    result = sitk.GetImageFromArray(array)
    result.CopyInformation(warped)
    return result, valid


def near_tracked_lesions(
    labels: np.ndarray,
    previous_labels: np.ndarray,
    previous_geometry: Geometry,
    image: sitk.Image,
    transform: sitk.Transform,
    margin_mm: float,
) -> np.ndarray:
    """Voxels of the candidate search's grid (:func:`detection_reference` of ``image``; bool, z y x)
    within ``margin_mm`` (physical distance) of a tracked lesion now (``labels``, z y x of ``image``) or
    at the previous session (``previous_labels`` on ``previous_geometry``, warped through
    ``transform``: follow-up world to previous world). Both maps go onto that grid (nearest
    neighbour) before the margin is added, so a fine scan costs what its coarse grid costs."""
    reference = detection_reference(image)
    now = sitk.Resample(image_from_array((labels > 0).astype(np.uint8), Geometry.of(image)), reference,
                        sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    before = sitk.Resample(image_from_array((previous_labels > 0).astype(np.uint8), previous_geometry), reference,
                           transform, sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    near = (sitk.GetArrayViewFromImage(now) > 0) | (sitk.GetArrayViewFromImage(before) > 0)
    return _dilate_mm(near, Geometry.of(reference), margin_mm)


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


def segment_candidates(segmenter: Segmenter, image: sitk.Image, candidates: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Each candidate blob (uint32 map, z y x) outlined by the segmenter from a box around it; where the
    segmenter's mask does not outline the blob (Dice below ``CANDIDATE_MIN_DICE``: empty, or another
    structure in the box), the blob itself. Voxels of ``labels`` (the tracked lesions) are left to them.
    Returns the candidates' lesion map."""
    geometry = Geometry.of(image)
    ids = [int(i) for i in np.unique(candidates[candidates > 0])]
    prompts = [anchoring.box_around(candidates == np.uint32(i), geometry, NEW_LESION_BOX_MARGIN_MM, i) for i in ids]
    result = segment_lesions(segmenter, image, [p for p in prompts if p is not None])
    out = np.zeros_like(candidates)
    for lesion_id in ids:
        box = _union_box(nonzero_box(candidates == np.uint32(lesion_id)), nonzero_box(result.labels == np.uint32(lesion_id)))
        blob = candidates[box] == np.uint32(lesion_id)
        mask = result.labels[box] == np.uint32(lesion_id)
        chosen = mask if dice(mask, blob) >= CANDIDATE_MIN_DICE else blob
        out[box][chosen & (labels[box] == 0) & (out[box] == 0)] = lesion_id
    return out


def _union_box(a: tuple[slice, ...] | None, b: tuple[slice, ...] | None) -> tuple[slice, ...]:
    """The smallest box holding boxes ``a`` and ``b`` (either may be None, not both)."""
    if a is None or b is None:
        return a if b is None else b
    return tuple(slice(min(x.start, y.start), max(x.stop, y.stop)) for x, y in zip(a, b))


# -- one follow-up: the composition --------------------------------------------------------------


@dataclass
class FollowupResult:
    """A follow-up's lesion map (every reported lesion, new lesions included), its new-lesion candidates
    (uint32 label maps, z y x) and its tracking rows."""

    labels: np.ndarray
    candidates: np.ndarray
    rows: list[dict]


def _first_prompts(
    inputs: "FollowupInputs", track: TrackConfig, lesion_ids: Sequence[int], sources: dict[int, int], t: int,
    geometry: Geometry, min_fraction_inside: float,
) -> tuple[dict[int, PropagationResult], dict[int, PropagationResult]]:
    """(the prompt each lesion is segmented from first, its propagated last mask), by lesion ID; either
    may be :class:`OutOfFov`."""
    reader_now = {i: a for i, a in inputs.anchors.items() if a.session_index == t and i in lesion_ids}
    previous = propagate_lesions({i: s for i, s in sources.items() if i not in reader_now}, inputs.labels, inputs.transforms, t,
                                 geometry, min_fraction_inside)
    if track.prompt_source != "anchored":
        first = dict(previous)
        first.update({i: Propagated(i, a.prompt, 1.0) for i, a in reader_now.items()})
        return first, previous
    anchors = {i: inputs.anchors[i] for i in lesion_ids if i in inputs.anchors and (i in sources or i in reader_now)}
    first = propagate_anchors(anchors, inputs.geometries, inputs.transforms, t, geometry)
    for lesion_id, result in previous.items():  # the lesion's own extent decides the field of view, not its box
        if isinstance(result, OutOfFov) or isinstance(first.get(lesion_id), OutOfFov) or lesion_id not in first:
            first[lesion_id] = result
    return {i: first[i] for i in lesion_ids if i in first}, previous


def track_followup(
    patient: str,
    scans: Sequence[SessionScan],
    t: int,
    inputs: "FollowupInputs",
    segmenter: Segmenter,
    track: TrackConfig,
    min_fraction_inside: float,
    second_opinion: Segmenter | None = None,
) -> FollowupResult:
    """Segment every tracked lesion at follow-up ``t`` (``t >= 1``) from already-read ``inputs``.

    Prompts (anchored or propagated), segment, re-prompt the inconsistent, judge the evidence, find
    and segment new-lesion candidates, apply the reader's reviews. ``min_fraction_inside``:
    ``register.min_fraction_inside`` (a propagated mask with less of its volume inside the follow-up's
    field of view is ``out_of_fov``); ``second_opinion``: the segmenter asked when a mask has faded.
    """
    scan, image = scans[t], inputs.image
    geometry = Geometry.of(image)
    rows_before = inputs.previous_rows
    first_seen = first_sessions(rows_before)
    lesion_ids = tracked_lesion_ids(rows_before)
    added = [i for i, a in sorted(inputs.anchors.items()) if a.session_index == t and i not in first_seen]
    lesion_ids += added
    for lesion_id in added:
        first_seen[lesion_id] = t
    rejected = {i for i, verdict in inputs.reviews.items() if verdict == "rejected"}
    sources = {i: s for i, s in prompt_sources(rows_before, track.prompt_source).items() if i not in rejected}
    reader = {i: ("corrected" if i in first_seen and first_seen[i] < t else "added")
              for i, a in inputs.anchors.items() if a.session_index == t and i in lesion_ids}
    reader.update({i: v for i, v in inputs.reviews.items() if i in lesion_ids or v == "rejected"})
    active = [i for i in lesion_ids if i not in rejected]

    first, previous = _first_prompts(inputs, track, active, sources, t, geometry, min_fraction_inside)
    out_of_fov = {i for i, result in first.items() if isinstance(result, OutOfFov)}
    prompts = {i: result.prompt for i, result in first.items() if not isinstance(result, OutOfFov)}
    for lesion_id, result in first.items():
        if isinstance(result, OutOfFov):
            log.info("%s ses-%s lesion %d: out of the field of view (%s)", patient, scan.session, lesion_id, result.reason)

    started = time.perf_counter()
    segmented = segment_lesions(segmenter, image, list(prompts.values()))
    labels, scores, by_fallback = segmented.labels, segmented.scores, set(segmented.by_fallback)
    last_masks = {i: r.prompt.mask for i, r in previous.items() if not isinstance(r, OutOfFov) and i not in reader}
    min_voxels = max(int(np.ceil(track.min_volume_ml / geometry.voxel_volume_ml())), 1)
    refs = None
    if track.vanish_contrast_fraction > 0 and prompts:
        refs = References(inputs.reference_images, inputs.labels, first_seen, sitk.GetArrayViewFromImage(image))
    redo: dict[int, Prompt] = {}
    if track.prompt_source == "anchored":
        for lesion_id, prompt in prompts.items():
            last = last_masks.get(lesion_id)
            mask = labels == np.uint32(lesion_id)
            why = anchoring.inconsistency(mask, last, geometry, track.max_jump_mm, min_voxels)
            if why is None and last is not None and prompt.kind == "box" and refs is not None:
                why = _outgrown(lesion_id, mask, prompt, inputs, refs, track)
            if why is not None:
                log.info("%s ses-%s lesion %d: re-prompted from its last mask (%s)", patient, scan.session, lesion_id, why)
                redo[lesion_id] = anchoring.reprompt(lesion_id, prompt, last, geometry, track.reprompt_margin_mm, "outgrown" in why)
        if redo:
            again = segment_lesions(segmenter, image, list(redo.values()))
            replace_lesions(labels, again, redo)
            scores.update({i: again.scores.get(i, 0.0) for i in redo})
            by_fallback = (by_fallback - set(redo)) | (set(again.by_fallback) & set(redo))
            prompts.update(redo)
    segment_s = time.perf_counter() - started
    segmented_first = SegmentationResult(labels.copy(), dict(scores), set(by_fallback))

    segmented_ids = [i for i in active if i in prompts]
    if refs is not None:
        refs.before, refs.transforms, refs.t, refs.spacing_xyz = inputs.before_images, inputs.transforms, t, image.GetSpacing()
    unconfirmed = set(awaiting_confirmation(rows_before))
    just_seen = {i for i, s in last_observed(rows_before).items() if s == t - 1}  # parts are looked for only for these
    judged = judge_lesions(labels, image, segmented_ids, prompts, last_masks, last_volumes(rows_before), refs, second_opinion, track,
                           unconfirmed=unconfirmed, segmenter=segmenter, refind=just_seen)
    if track.prompt_source == "anchored":
        # gone or doubtful from the anchor: ask again from the last mask (a lesion that outgrew a box its
        # growth was too small to show beyond, or moved) before the answer stands
        retry = {i: anchoring.reprompt(i, prompts[i], last_masks[i], geometry, _retry_margin_mm(last_masks[i], geometry, track), True)
                 for i, j in judged.items() if j.status in ("vanished", "uncertain", "lost") and i in last_masks and i not in redo
                 and i not in unconfirmed}
        if retry:
            again = segment_lesions(segmenter, image, list(retry.values()))
            replace_lesions(labels, again, retry)
            second = judge_lesions(labels, image, list(retry), retry, last_masks, last_volumes(rows_before), refs, second_opinion, track,
                                   segmenter=segmenter, refind=just_seen)
            for lesion_id, judgement in second.items():
                log.info("%s ses-%s lesion %d: %s from its anchor, %s when re-prompted from its last mask", patient, scan.session,
                         lesion_id, judged[lesion_id].status, judgement.status)
                first_status = judged[lesion_id].status
                if judgement.status != first_status and judgement.status != "present":
                    # the two prompts disagree on a doubtful lesion: doubt, with a mask where one of them has one
                    if not (labels == np.uint32(lesion_id)).any() and first_status == "uncertain":
                        replace_lesions(labels, segmented_first, [lesion_id])
                    judgement = Judgement("uncertain", f"the anchor's prompt says {first_status}, the last mask's says "
                                                       f"{judgement.status}" + (f" ({judgement.reason})" if judgement.reason else ""))
                judged[lesion_id] = judgement
                prompts[lesion_id] = retry[lesion_id]
                scores[lesion_id] = again.scores.get(lesion_id, 0.0)
                by_fallback = (by_fallback - {lesion_id}) | ({lesion_id} & set(again.by_fallback))
    segmented = segmented_first = again = None  # full-volume maps (uint32) no longer needed: free them before the candidates
    lifecycle(labels, judged, inputs.labels[t - 1][0] if (t - 1) in inputs.labels else np.zeros((1, 1, 1), np.uint32),
              track.split_min_fraction)
    for lesion_id in active:
        if lesion_id in out_of_fov:
            judged[lesion_id] = Judgement("out_of_fov")
        elif lesion_id not in judged:
            judged[lesion_id] = Judgement("not_found")  # never observed: the baseline prompt gave an empty mask
    for lesion_id in rejected & set(lesion_ids):
        judged[lesion_id] = Judgement("rejected")
    for lesion_id in (i for i, j in judged.items() if j.status in ("vanished", "lost", "rejected", "out_of_fov", "not_found")):
        scores[lesion_id] = 0.0

    fractions = {i: r.fraction_inside for i, r in previous.items()}
    sources_used = {i: (t if i in reader else sources.get(i)) for i in lesion_ids}
    prompt_sessions = {i: scans[s].session for i, s in sources_used.items() if s is not None}
    new_ids = set(new_lesion_ids(rows_before)) | set(added)
    details = {
        i: {"is_new": i in new_ids, "first_session_index": first_seen.get(i, t), "review_reason": judged[i].reason, "reader": reader.get(i)}
        for i in lesion_ids
    }
    rows = lesion_rows(labels, geometry, lesion_ids, {i: judged[i].status for i in lesion_ids}, scores, fractions, prompt_sessions,
                       patient, scan, by_fallback=by_fallback, details=details)
    tally = Counter(judged[i].status for i in lesion_ids)
    log.info("%s ses-%s: %d lesion(s) segmented in %.1f s (%s)", patient, scan.session, len(prompts), segment_s,
             ", ".join(f"{status} {n}" for status, n in sorted(tally.items())) or "no lesions")

    candidates = np.zeros(geometry.shape_zyx, dtype=np.uint32)
    if track.candidates:
        if inputs.previous_image is None:
            raise ValueError("new-lesion candidates (track.candidates) need the previous image")
        found, candidate_scores = followup_candidates(
            image, inputs.previous_image, inputs.transforms[t], labels, inputs.labels[t - 1], t, track
        )
        if candidate_scores:
            candidates = segment_candidates(segmenter, image, found, labels)
            found = None
            ids = [i for i in candidate_scores if (candidates == np.uint32(i)).any()]
            statuses = {i: "rejected" if inputs.reviews.get(i) == "rejected" else "new_candidate" for i in ids}
            candidate_details = {
                i: {"is_new": True, "first_session_index": t, "reader": inputs.reviews.get(i),
                    "review_reason": None if inputs.reviews.get(i) else f"new-lesion candidate (score {candidate_scores[i]:.1f}), not yet confirmed"}
                for i in ids
            }
            for i in ids:
                if statuses[i] == "rejected":
                    candidates[candidates == np.uint32(i)] = 0
            rows += lesion_rows(candidates, geometry, ids, statuses, candidate_scores, {}, {}, patient, scan, details=candidate_details)
            np.copyto(labels, candidates, where=candidates > 0)  # in place: no third full-volume map
            log.info("%s ses-%s: %d new-lesion candidate(s) for review", patient, scan.session, len(ids))
    return FollowupResult(labels=labels, candidates=candidates, rows=rows)


def baseline_rows(
    patient: str, scan: SessionScan, labels: np.ndarray, geometry: Geometry, lesion_ids: Sequence[int],
    scores: dict[int, float], by_fallback: Collection[int] = (),
) -> list[dict]:
    """Tracking rows of the baseline: present, or not_found when the prompt gave an empty mask."""
    statuses = {i: ("present" if (labels == np.uint32(i)).any() else "not_found") for i in lesion_ids}
    sessions = {i: scan.session for i in lesion_ids}
    details = {i: {"review_reason": "the baseline prompt gave an empty mask"} for i in lesion_ids if statuses[i] == "not_found"}
    return lesion_rows(labels, geometry, lesion_ids, statuses, scores, {}, sessions, patient, scan, by_fallback=by_fallback,
                       details=details)


# -- files ---------------------------------------------------------------------------------------


def read_labels(path: Path) -> tuple[np.ndarray, Geometry]:
    """A label map (uint32, z y x) and its geometry."""
    image = read_image(path)
    return sitk.GetArrayFromImage(image).astype(np.uint32, copy=False), Geometry.of(image)


def read_tracking(path: Path) -> list[dict]:
    """One session's tracking table (:data:`TRACKING_SCHEMA`) as plain dicts."""
    return pq.read_table(path).to_pylist()


def reader_input(scan: SessionScan, geometry: Geometry, preference: str) -> tuple[list[Prompt], dict[int, str]]:
    """A session's reader prompts (voxel frame of ``geometry``) and reviews (lesion ID -> confirmed |
    rejected) from its ``prompts.json`` / ``prompt_mask``; nothing when it has neither."""
    if scan.prompts is None and scan.prompt_mask is None:
        return [], {}
    prompts = baseline_prompts(geometry, scan.prompts, scan.prompt_mask, preference)
    reviews = {}
    if scan.prompts is not None:
        reviews = {lesion.id: lesion.review for lesion in read_prompts(scan.prompts).lesions if lesion.review is not None}
    return prompts, reviews


def lesion_anchors(
    scans: Sequence[SessionScan],
    t: int,
    previous_rows: Sequence[dict],
    geometries: dict[int, Geometry],
    labels: dict[int, tuple[np.ndarray, Geometry]],
    preference: str,
) -> dict[int, Anchor]:
    """Every lesion's anchor at follow-up ``t``: its last reader prompt at sessions ``0..t``, else a box
    around a new lesion's mask at its first sighting, else (a lesion with no prompt file, as in a
    table-built cohort) its mask at its first session. ``geometries`` and ``labels`` must hold every
    session that is used."""
    anchors: dict[int, Anchor] = {}
    for s in range(t + 1):
        prompts, _ = reader_input(scans[s], geometries[s], preference) if s in geometries else ([], {})
        for prompt in prompts:
            anchors[int(prompt.lesion_id)] = Anchor(int(prompt.lesion_id), s, prompt)
    first = first_sessions(previous_rows)
    new = set(new_lesion_ids(previous_rows))
    for lesion_id in tracked_lesion_ids(previous_rows):
        if lesion_id in anchors or first.get(lesion_id) not in labels:
            continue
        s = first[lesion_id]
        mask = labels[s][0] == np.uint32(lesion_id)
        if not mask.any():
            continue
        prompt = (anchoring.box_around(mask, labels[s][1], NEW_LESION_BOX_MARGIN_MM, lesion_id) if lesion_id in new
                  else Prompt(lesion_id, "mask", mask=mask))
        anchors[lesion_id] = Anchor(lesion_id, s, prompt)
    return anchors


@dataclass
class FollowupInputs:
    """What tracking into follow-up ``t`` reads, already read (:func:`read_followup_inputs`).

    ``image``: the follow-up scan; ``previous_rows``: the tracking rows of sessions ``0..t-1``;
    ``labels``: label maps (uint32, z y x, each with its session's geometry) by session index, at
    least of every prompt source (:func:`prompt_sources`), of ``t-1``, of every anchor's session and
    (vanish test) of every lesion's first session; ``transforms[s]`` maps world points (mm, LPS) of
    session ``s`` to session ``s-1``, for ``s = 1..t``; ``previous_image``: session ``t-1`` (needed for
    candidates); ``reference_images``: by session index, the scans where lesions were first seen
    (needed for the vanish test); ``anchors``: by lesion ID (:func:`lesion_anchors`), with
    ``geometries`` of their sessions; ``reviews``: the reader's verdicts at ``t`` (lesion ID ->
    confirmed | rejected); ``before_images``: by session index, the scans just before new lesions that await
    confirmation appeared (:func:`awaiting_confirmation`; needed for the vanish test's novelty check).
    """

    image: sitk.Image
    previous_rows: list[dict]
    labels: dict[int, tuple[np.ndarray, Geometry]]
    transforms: dict[int, sitk.Transform]
    previous_image: sitk.Image | None = None
    reference_images: dict[int, sitk.Image] = field(default_factory=dict)
    anchors: dict[int, Anchor] = field(default_factory=dict)
    geometries: dict[int, Geometry] = field(default_factory=dict)
    reviews: dict[int, str] = field(default_factory=dict)
    before_images: dict[int, sitk.Image] = field(default_factory=dict)

    @property
    def baseline_image(self) -> sitk.Image | None:
        return self.reference_images.get(0)


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
    baseline), for ``s = 0..t``; ``scans[s].prompts`` / ``prompt_mask``: the reader's prompt files.
    Only the label maps that are used are read; the previous scan only when ``track.candidates``, the
    reference scans only when the vanish test can run.
    """
    previous_rows = [row for path in tracking_paths for row in read_tracking(path)]
    sources = prompt_sources(previous_rows, track.prompt_source)
    first = first_sessions(previous_rows)
    vanish_test = track.vanish_contrast_fraction > 0 and bool(sources)
    references = {first[i] for i in sources} if vanish_test else set()
    before = {s - 1 for s in awaiting_confirmation(previous_rows).values()} if vanish_test else set()
    with_prompts = {s for s in range(t + 1) if scans[s].prompts is not None or scans[s].prompt_mask is not None}
    anchored = track.prompt_source == "anchored"
    needed = set(sources.values()) | {t - 1} | references
    if anchored:
        needed |= {first[i] for i in tracked_lesion_ids(previous_rows)} | (with_prompts - {t})
    labels = {s: read_labels(labels_paths[s]) for s in sorted(needed)}
    geometries = {s: labels[s][1] if s in labels else read_geometry(scans[s].image) for s in sorted(with_prompts | set(labels))}
    image = read_image(scans[t].image)
    geometries[t] = Geometry.of(image)
    anchors = lesion_anchors(scans, t, previous_rows, geometries, labels, track.baseline_prompt) if anchored else {
        int(p.lesion_id): Anchor(int(p.lesion_id), t, p) for p in reader_input(scans[t], geometries[t], track.baseline_prompt)[0]
    }
    return FollowupInputs(
        image=image,
        previous_rows=previous_rows,
        labels=labels,
        transforms={s: load_transform(transform_paths[s]) for s in range(1, t + 1)},
        previous_image=read_image(scans[t - 1].image) if track.candidates else None,
        reference_images={s: read_image(scans[s].image) for s in sorted(references)},
        anchors=anchors,
        geometries=geometries,
        reviews=reader_input(scans[t], geometries[t], track.baseline_prompt)[1],
        before_images={s: read_image(scans[s].image) for s in sorted(before)},
    )


def write_tracking(rows: list[dict], path: Path) -> Path:
    """The per-session tracking table, with the explicit schema (an empty session keeps it)."""
    return write_parquet(pa.Table.from_pylist(rows, schema=TRACKING_SCHEMA), path)


def write_labels(labels: np.ndarray, reference: sitk.Image | Geometry, path: Path) -> Path:
    return write_image(image_from_array(labels.astype(np.uint32, copy=False), reference), path)
