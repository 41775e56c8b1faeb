"""Plan and render a synthetic longitudinal cohort.

Per patient: a source scan (lesion-free anatomy), baseline lesions placed inside organs or the
body, per-lesion trajectories (anisotropic growth or shrinkage, complete response, new lesions
after baseline), and per follow-up session a new acquisition: mass effect of the growing lesions,
repositioning (rigid + smooth non-rigid), a different voxel spacing and z range, intensity shift,
gain, bias field and noise. Longitudinal events on request (``p_split``, ``p_merge``, ``p_shrink``,
``p_fov_cut``): a lesion that splits into two parts, a pair that grows into contact, a responder
that shrinks but stays visible, a follow-up whose z range leaves a lesion out. Everything random is
drawn in the planning step from seeded generators per patient (the events from a stream of their
own, so a config without events draws exactly as before), and the same seed gives byte-identical
files.

Ground-truth status of a lesion at a session (see :func:`_lesion_rows`): ``new`` at the first
session a post-baseline lesion is seen, ``merged`` when its mask touches another lesion's
(26-connectivity; both rows), ``split`` when its mask is two or more separated parts, ``present``
otherwise; without voxels ``vanished`` (gone, or its centre inside the field of view) or
``out_of_fov``.

Frames: lesion centres live in the *anatomy frame* (world mm, LPS, of the source scan); a session's
image maps its own world points into it through ``session.transform`` (backward map).
"""

from __future__ import annotations

import csv
import io
import logging
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import cc3d
import numpy as np
import pandas as pd
import pyarrow as pa
import SimpleITK as sitk
from scipy import ndimage

from lesionlocator import __version__
from lesionlocator.core.config import SyntheticConfig
from lesionlocator.core.errors import ConfigError, InputError
from lesionlocator.core.io import Geometry, atomic_directory, image_from_array, write_image, write_json, write_parquet
from lesionlocator.core.progress import Progress
from lesionlocator.core.prompts import BoxPrompt, LesionPrompt, PromptFile, write_prompts
from synthetic import deform
from synthetic.lesions import (
    Appearance,
    LobulatedShape,
    MaskShape,
    SplitShape,
    ct_appearance,
    local_reference,
    mr_appearance,
    random_rotation,
)
from synthetic.sources import SourceScan, SourceSpec, expand_sources, load_source

log = logging.getLogger(__name__)

GENERATOR_NAME = "lesionlocator-synthetic"
MIN_VISIBLE_DIAMETER_MM = 5.0
MAX_SCALE = 2.5
PLANNING_SPACING_MM = 3.0
PATIENT_DRAWS = 10  # draws of a patient before its lesions are declared not to fit (plan_patient)
SITE_DEPTH = {"lung": 0.9, "body": 0.5}  # fraction of the radius the centre lies inside its site
ORGAN_DEPTH = 0.7
SPLIT_MIN_FRACTION = 0.05  # a part of a mask smaller than this fraction of its voxels is a speck, not a split
FOV_CUT_MIN_KEPT = 0.4  # a FOV cut (p_fov_cut) keeps at least this fraction of the session's slices...
FOV_CUT_MIN_SLICES = 8  # ...and at least this many
MERGE_MAX_JUMP = 2.2  # most a merging pair's along-axis scale may jump in the interval where they meet

GROUNDTRUTH_SCHEMA = pa.schema(
    [
        ("patient", pa.string()),
        ("session", pa.string()),
        ("session_index", pa.int32()),
        ("acq_time", pa.string()),
        ("lesion_id", pa.int64()),
        ("status", pa.string()),  # present | new | vanished | out_of_fov | split | merged
        ("volume_ml", pa.float64()),
        ("n_voxels", pa.int64()),
        ("centroid_x", pa.float64()),  # world mm, LPS; expected position when not visible
        ("centroid_y", pa.float64()),
        ("centroid_z", pa.float64()),
        ("diameter_eq_mm", pa.float64()),  # diameter of the sphere of the same volume
        ("touches_fov_edge", pa.bool_()),
        ("fraction_in_fov", pa.float64()),  # share of the lesion's volume inside the session's field of view
        ("site", pa.string()),
        ("contrast", pa.string()),  # hypo | hyper | existing
        ("modality", pa.string()),
        ("source", pa.string()),
    ]
)


@dataclass
class LesionPlan:
    lesion_id: int
    site: str
    shape: LobulatedShape | MaskShape | SplitShape
    appearance: Appearance
    rotation: np.ndarray  # world-from-local 3x3
    scales: list[np.ndarray | None]  # per session: per-axis scale of the shape, None = absent
    first_session: int
    centre: np.ndarray | None = None  # anatomy frame, world mm
    anchor: np.ndarray | None = None  # the point whose mass-effect displacement moves the lesion (None: its centre)
    event: str = ""  # "split", "merge" or "shrink" when drawn with one (p_split, p_merge, p_shrink)
    event_session: int = 0  # split: first session without the bridge; merge: the session the pair meets

    def field(self, u: np.ndarray, t: int) -> np.ndarray:
        """The shape's signed distance (mm, reference size) at local points ``u`` in session ``t``."""
        if isinstance(self.shape, SplitShape):
            return self.shape.field(u, self.shape.widths[t])
        return self.shape.field(u)

    @property
    def footprint(self) -> float:
        """Radius (mm) that holds the lesion in every session."""
        present = [s for s in self.scales if s is not None]
        return self.shape.extent * float(max(s.max() for s in present))

    def radius_at(self, session: int) -> float:
        """Equivalent radius (mm) in a session (0 when absent)."""
        scale = self.scales[session]
        return 0.0 if scale is None else self.shape.radius * 0.85 * float(np.prod(scale) ** (1 / 3))

    def status_planned(self, session: int) -> str | None:
        if session < self.first_session:
            return None
        if self.scales[session] is None:
            return "vanished"
        return "new" if session == self.first_session and session > 0 else "present"


@dataclass
class SessionPlan:
    index: int
    label: str
    acq_time: str
    geometry: Geometry
    transform: sitk.Transform | None  # output world -> anatomy world; None = identity (baseline)
    seed: int
    shift: float = 0.0
    gain: float = 1.0
    bias: np.ndarray = field(default_factory=lambda: np.zeros(3))
    noise_sd: float = 0.0
    left_out: int = 0  # the lesion whose z range a FOV cut (p_fov_cut) left out of this session; 0: none


@dataclass
class PatientPlan:
    patient: str
    spec: SourceSpec
    source_seed: int
    lesions: list[LesionPlan]
    sessions: list[SessionPlan]


# ----------------------------------------------------------------------------------------------
# planning


class _Room:
    """Where lesion centres may go in a source: site masks and distances on a coarse grid."""

    def __init__(self, source: SourceScan):
        geometry = source.geometry
        self.stride = np.maximum(1, np.round(PLANNING_SPACING_MM / np.asarray(geometry.spacing[::-1]))).astype(int)
        sz, sy, sx = self.stride
        self.geometry = Geometry(
            tuple(int(n) for n in np.asarray(source.body[::sz, ::sy, ::sx].shape[::-1])),
            tuple((np.asarray(geometry.spacing) * self.stride[::-1]).tolist()),
            geometry.origin,
            geometry.direction,
        )
        spacing_zyx = self.geometry.spacing[::-1]
        self.sites = {name: mask[::sz, ::sy, ::sx] for name, mask in source.sites.items()}
        self.body_depth = ndimage.distance_transform_edt(source.body[::sz, ::sy, ::sx], sampling=spacing_zyx)
        self._depth: dict[str, np.ndarray] = {}
        shape = np.asarray(self.geometry.shape_zyx)
        # distance (mm) to the grid's own border (a baseline lesion stays inside the scan)
        axes = [np.minimum(np.arange(n), n - 1 - np.arange(n)) * s for n, s in zip(shape, spacing_zyx)]
        self.border = np.minimum(np.minimum(axes[0][:, None, None], axes[1][None, :, None]), axes[2][None, None, :])

    def depth(self, site: str) -> np.ndarray:
        if site not in self._depth:
            self._depth[site] = ndimage.distance_transform_edt(self.sites[site], sampling=self.geometry.spacing[::-1])
        return self._depth[site]

    def allows(self, centre: np.ndarray, site: str, radius: float, footprint: float, baseline_extent: float, margin: float) -> bool:
        """Whether a lesion centred at ``centre`` (world mm) passes the checks of :meth:`candidates`."""
        index = tuple(np.round(self.geometry.world_to_index(centre)).astype(int))
        if not all(0 <= i < n for i, n in zip(index, self.geometry.shape_zyx)):
            return False
        return bool(
            self.sites[site][index] and self.depth(site)[index] >= SITE_DEPTH.get(site, ORGAN_DEPTH) * radius
            and self.body_depth[index] >= footprint + margin and self.border[index] >= baseline_extent
        )

    def candidates(self, site: str, radius: float, footprint: float, baseline_extent: float, margin: float) -> np.ndarray:
        depth_needed = SITE_DEPTH.get(site, ORGAN_DEPTH) * radius
        ok = self.sites[site] & (self.depth(site) >= depth_needed) & (self.body_depth >= footprint + margin)
        ok &= self.border >= baseline_extent
        return np.flatnonzero(ok)


def _trajectory(config: SyntheticConfig, first: int, diameter: float, rng: np.random.Generator, new: bool) -> list:
    n = config.n_sessions
    rate = rng.normal(config.growth_mean + (0.15 if new else 0.0), config.growth_sd)
    axes = rng.normal(0.0, config.anisotropy_sd, 3)
    vanish = None
    if n - first > 1 and rng.random() < config.p_vanish:
        vanish = int(rng.integers(first + 1, n))
        rate = -abs(rate) - 0.2  # a complete response follows shrinkage
    scales: list[np.ndarray | None] = [None] * n
    for t in range(first, n):
        if vanish is not None and t >= vanish:
            break
        k = t - first
        scale = np.clip(np.exp(k * (rate + axes)), 0.0, MAX_SCALE)
        if k > 0 and diameter * float(np.prod(scale) ** (1 / 3)) < MIN_VISIBLE_DIAMETER_MM:
            break  # too small to see: a complete response
        scales[t] = scale
    return scales


def _shrink_trajectory(config: SyntheticConfig, rng: np.random.Generator) -> list[np.ndarray]:
    """A responder (p_shrink): the volume falls geometrically to a fraction (shrink_volume_fraction)
    of baseline at the last session; the axes shrink unevenly at a constant volume ratio."""
    n = config.n_sessions
    fraction = float(rng.uniform(*config.shrink_volume_fraction))
    axes = rng.normal(0.0, config.anisotropy_sd, 3)
    rate = np.log(fraction) / (3 * (n - 1)) + axes - axes.mean()  # per axis; they sum to log(fraction) / (n - 1)
    return [np.exp(k * rate) for k in range(n)]


def _separation_mm(source: SourceScan, config: SyntheticConfig) -> float:
    """A gap (mm) that keeps two parts apart in any session's mask (no 26-neighbours across it): the
    largest voxel diagonal of a follow-up, with room for the smooth deformation and rounding."""
    spacing = np.asarray(source.geometry.spacing) * (1.0 + config.spacing_jitter)
    return 1.1 * float(np.linalg.norm(spacing)) + 1.0


def _split_lesion(lesion: LesionPlan, diameter: float, gap_mm: float, config: SyntheticConfig, rng: np.random.Generator) -> None:
    """Make ``lesion`` split (p_split): two lobes joined by a bridge that is gone from a follow-up on;
    the whole changes size slowly (between -8 % and +4 % of its length per interval)."""
    n = config.n_sessions
    split_at = int(rng.integers(1, n))
    rate = float(rng.uniform(-0.08, 0.04))
    lesion.scales = [np.full(3, np.exp(k * rate)) for k in range(n)]
    smallest = min(float(scale.min()) for scale in lesion.scales)
    widths = [1.0 if t < split_at else 0.0 for t in range(n)]
    # the bridge is as thick as the gap is wide: no voxel grid of a session cuts it
    lesion.shape = SplitShape.random(diameter, widths, gap_mm / smallest, 0.5 * gap_mm / smallest, rng)
    lesion.rotation = random_rotation(rng)
    lesion.event, lesion.event_session = "split", split_at


def _frame(axis: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A rotation (world-from-local) whose local x axis is ``axis`` (unit), turned at random about it."""
    other = rng.normal(size=3)
    other -= np.dot(other, axis) * axis
    other /= np.linalg.norm(other)
    return np.column_stack([axis, other, np.cross(axis, other)])


def _reach_along_x(shape: LobulatedShape, step_mm: float = 1.0) -> tuple[float, float]:
    """How far ``shape`` reaches along its local +x axis (mm, reference size): the largest x of any
    point inside (an upper bound, from a ``step_mm`` grid) and where the x axis itself leaves the
    shape (a lower bound)."""
    reach = shape.extent
    axis = np.arange(-reach, reach + step_mm, step_mm)
    grid = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), axis=-1).reshape(-1, 3)
    inside = grid[shape.field(grid) < 0]
    farthest = float(inside[:, 0].max()) + step_mm
    ray = np.zeros((int(reach / 0.1) + 2, 3))
    ray[:, 0] = np.arange(len(ray)) * 0.1
    outside = np.flatnonzero(shape.field(ray) >= 0)
    on_axis = float(ray[outside[0], 0]) - 0.1 if outside.size else reach
    return farthest, on_axis


def _merge_pair(
    first_id: int, gap_mm: float, overlap_mm: float, config: SyntheticConfig, source: SourceScan, rng: np.random.Generator
) -> tuple[LesionPlan, LesionPlan, np.ndarray, float] | None:
    """Two baseline lesions facing each other along a direction ``v`` in the scan's axial plane, and
    the distance of their centres, such that they are at least ``gap_mm`` apart (a plane between
    them) before the session where they meet, and overlap by ``overlap_mm`` on the line through
    their centres from it on. They grow slowly, and along ``v`` by a jump in the interval where they
    meet. None when the jump would exceed :data:`MERGE_MAX_JUMP` or the scales :data:`MAX_SCALE`."""
    n = config.n_sessions
    directions = source.geometry.direction_matrix
    angle = rng.uniform(0.0, 2 * np.pi)
    v = np.cos(angle) * directions[:, 0] + np.sin(angle) * directions[:, 1]
    meet = int(rng.integers(1, n))
    lesions, reaches, growth = [], [], []
    for k, sign in enumerate((1.0, -1.0)):
        diameter = float(rng.uniform(*config.diameter_mm))
        shape = LobulatedShape.random(diameter, rng)
        lesions.append(LesionPlan(first_id + k, "", shape, None, _frame(sign * v, rng), [], 0))
        reaches.append(_reach_along_x(shape))
        growth.append((float(rng.uniform(0.0, 0.06)), float(rng.uniform(0.0, 0.06))))  # along v, across
    before = [np.exp(g * (meet - 1)) for g, _ in growth]
    distance = sum(b * far for b, (far, _) in zip(before, reaches)) + gap_mm + float(rng.uniform(0.0, 2.0))
    meeting = sum(b * np.exp(g) * axis for b, (g, _), (_, axis) in zip(before, growth, reaches))
    jump = max(1.0, (distance + overlap_mm) / meeting) * float(rng.uniform(1.0, 1.1))
    if jump > MERGE_MAX_JUMP:
        return None
    for lesion, (along, across) in zip(lesions, growth):
        lesion.event, lesion.event_session = "merge", meet
        lesion.scales = [
            np.array([np.exp(along * k) * (jump if k >= meet else 1.0), np.exp(across * k), np.exp(across * k)])
            for k in range(n)
        ]
        if max(float(scale.max()) for scale in lesion.scales) > MAX_SCALE:
            return None
    return lesions[0], lesions[1], v, distance


def _place_pair(
    pair: tuple[LesionPlan, LesionPlan], v: np.ndarray, distance: float, room: _Room, placed: list[LesionPlan],
    config: SyntheticConfig, rng: np.random.Generator, sites_order: list[str],
) -> bool:
    """Place a merging pair (:func:`_merge_pair`) in one site: centres ``distance`` apart along ``v``
    around a random midpoint, each passing the checks of a single lesion, apart from ``placed``.
    The midpoint becomes both lesions' mass-effect anchor: the pair moves with the tissue between
    them instead of being pushed apart by its own growth."""
    offsets = (-0.5 * distance * v, 0.5 * distance * v)
    for site in sites_order:
        if site not in room.sites:
            continue
        candidates = np.flatnonzero(room.sites[site])
        if candidates.size == 0:
            continue
        for flat in rng.choice(candidates, size=min(400, candidates.size), replace=False):
            index = np.asarray(np.unravel_index(flat, room.geometry.shape_zyx), dtype=float)
            middle = room.geometry.index_to_world(index + rng.uniform(-0.4, 0.4, 3))
            centres = [middle + offset for offset in offsets]
            if all(
                room.allows(centre, site, lesion.shape.radius, lesion.footprint,
                            lesion.shape.extent * float(lesion.scales[0].max()), config.margin_mm)
                and all(np.linalg.norm(centre - other.centre) >= lesion.footprint + other.footprint + config.margin_mm
                        for other in placed)
                for lesion, centre in zip(pair, centres)
            ):
                for lesion, centre in zip(pair, centres):
                    lesion.centre, lesion.site, lesion.anchor = centre, site, middle
                return True
    return False


def _weighted_order(sites: dict[str, float], rng: np.random.Generator) -> list[str]:
    names = [s for s, w in sites.items() if w > 0]
    weights = np.asarray([sites[s] for s in names], dtype=float)
    order = []
    while names:
        pick = int(rng.choice(len(names), p=weights / weights.sum()))
        order.append(names.pop(pick))
        weights = np.delete(weights, pick)
    return order


def _place(
    lesion: LesionPlan, room: _Room, placed: list[LesionPlan], config: SyntheticConfig,
    rng: np.random.Generator, source: SourceScan, sites_order: list[str],
) -> bool:
    """Choose a site and centre for ``lesion`` (no overlap with ``placed``, inside the body)."""
    footprint = lesion.footprint
    first_scale = lesion.scales[lesion.first_session]
    baseline_extent = lesion.shape.extent * float(first_scale.max())
    for site in sites_order:
        if site not in room.sites:
            continue
        candidates = room.candidates(site, lesion.shape.radius, footprint, baseline_extent, config.margin_mm)
        if candidates.size == 0:
            continue
        for flat in rng.choice(candidates, size=min(400, candidates.size), replace=False):
            index = np.asarray(np.unravel_index(flat, room.geometry.shape_zyx), dtype=float)
            index += rng.uniform(-0.4, 0.4, 3)
            centre = room.geometry.index_to_world(index)
            if all(np.linalg.norm(centre - other.centre) >= footprint + other.footprint + config.margin_mm for other in placed):
                lesion.centre = centre
                lesion.site = site
                return True
    return False


def _appearance_for(lesion: LesionPlan, source: SourceScan, rng: np.random.Generator) -> Appearance:
    geometry = source.geometry
    index = geometry.world_to_index(lesion.centre)
    radius_vox = 2.0 * lesion.shape.radius / np.asarray(geometry.spacing[::-1])
    reference = local_reference(source.array, source.sites[lesion.site], index, radius_vox)
    if source.modality == "CT":
        return ct_appearance(lesion.site, reference, rng, lesion.shape.radius)
    return mr_appearance(max(reference, 1.0), rng, lesion.shape.radius)


def _session_geometry(source: Geometry, config: SyntheticConfig, rng: np.random.Generator) -> Geometry:
    """A follow-up grid: same direction, jittered spacing, z range cropped at both ends."""
    jitter = config.spacing_jitter
    factor_xy, factor_z = 1.0 + rng.uniform(-jitter, jitter, 2) if jitter else (1.0, 1.0)
    spacing = np.asarray(source.spacing) * np.array([factor_xy, factor_xy, factor_z])
    extent = np.asarray(source.spacing) * np.asarray(source.size)
    crop_lo, crop_hi = rng.uniform(0.0, config.fov_z_crop, 2) if config.fov_z_crop else (0.0, 0.0)
    start = np.array([0.0, 0.0, crop_lo * extent[2]])
    new_extent = extent - np.array([0.0, 0.0, (crop_lo + crop_hi) * extent[2]])
    size = np.maximum(4, np.round(new_extent / spacing)).astype(int)
    offset = start + spacing / 2 - np.asarray(source.spacing) / 2
    origin = np.asarray(source.origin) + np.asarray(source.direction).reshape(3, 3) @ offset
    return Geometry(tuple(int(s) for s in size), tuple(spacing.tolist()), tuple(origin.tolist()), source.direction)


def plan_patient(
    patient_index: int, spec: SourceSpec, source: SourceScan, config: SyntheticConfig, room: _Room
) -> PatientPlan:
    """Draw everything random for one patient (lesions, trajectories, sessions).

    A draw whose lesions do not all fit the source (large lesions in a thin scan) is redrawn from
    the patient's next random stream, up to ``PATIENT_DRAWS`` times. The first stream is the
    patient's own, so a cohort whose draws all fit is the same as without redraws."""
    failure = ""
    for attempt in range(PATIENT_DRAWS):
        plan, failure = _draw_patient(patient_index, attempt, spec, source, config, room)
        if plan is not None:
            if attempt:
                log.info("synthetic %s: redrawn %d time(s), lesions did not fit %s", plan.patient, attempt, source.name)
            return plan
    raise ConfigError(f"{failure} (in {PATIENT_DRAWS} draws)")


def _draw_patient(
    patient_index: int, attempt: int, spec: SourceSpec, source: SourceScan, config: SyntheticConfig, room: _Room
) -> tuple[PatientPlan | None, str]:
    """One draw of a patient from stream ``attempt`` (0: the patient's own); (None, why) if a lesion finds no room."""
    key = (patient_index,) if attempt == 0 else (patient_index, attempt)
    seq = np.random.SeedSequence(entropy=config.seed, spawn_key=key)
    rng = np.random.default_rng(seq)
    events = np.random.default_rng(seq.spawn(1)[0])  # splits, merges, shrinkage, FOV cuts: spawn key + (0,)
    gap_mm = _separation_mm(source, config)
    patient = f"P{patient_index + 1:03d}"
    lesions: list[LesionPlan] = []
    n = config.n_sessions
    if source.lesions is not None:  # existing lesions of an nnU-Net source: progress them
        geometry = source.geometry
        for lesion_id in range(1, int(source.lesions.max()) + 1):
            mask = source.lesions == lesion_id
            if not mask.any():
                continue
            shape = MaskShape.from_mask(mask, geometry)
            scales = _trajectory(config, 0, 2 * shape.radius, rng, new=False)
            scales = [None if s is None else np.minimum(s, 1.5) for s in scales]
            appearance = Appearance("sample", 0.0, source=source.original, source_geometry=geometry, centre=shape.centre)
            lesions.append(LesionPlan(lesion_id, "existing", shape, appearance, np.eye(3), scales, 0, centre=shape.centre))
            if _event(config, events) == "shrink":  # an existing lesion cannot split: only shrinkage applies
                lesions[-1].scales, lesions[-1].event = _shrink_trajectory(config, events), "shrink"
    else:
        low, high = config.lesions_per_patient
        for lesion_id in range(1, int(rng.integers(low, high + 1)) + 1):
            diameter = float(rng.uniform(*config.diameter_mm))
            shape = LobulatedShape.random(diameter, rng)
            scales = _trajectory(config, 0, diameter, rng, new=False)
            lesions.append(LesionPlan(lesion_id, "", shape, None, random_rotation(rng), scales, 0))
            event = _event(config, events)
            if event == "split":
                _split_lesion(lesions[-1], diameter, gap_mm, config, events)
            elif event == "shrink":
                lesions[-1].scales, lesions[-1].event = _shrink_trajectory(config, events), "shrink"
    next_id = max([lesion.lesion_id for lesion in lesions], default=0) + 1
    pair = None
    if n > 1 and config.p_merge and events.random() < config.p_merge:
        overlap_mm = 1.5 * float(max(source.geometry.spacing)) * (1.0 + config.spacing_jitter)
        pair = _merge_pair(next_id, gap_mm, overlap_mm, config, source, events)
        if pair is None:
            log.info("synthetic %s: no merging pair (the lesions drawn would need too large a jump to meet)", patient)
        else:
            lesions.extend(pair[:2])
            next_id += 2
    for t in range(1, n):
        if rng.random() < config.p_new:
            diameter = float(rng.uniform(*config.new_lesion_diameter_mm))
            shape = LobulatedShape.random(diameter, rng)
            scales = _trajectory(config, t, diameter, rng, new=True)
            lesions.append(LesionPlan(next_id, "", shape, None, random_rotation(rng), scales, t))
            next_id += 1

    placed = [lesion for lesion in lesions if lesion.centre is not None]
    if pair is not None:
        first, second, v, distance = pair
        if not _place_pair((first, second), v, distance, room, placed, config, events,
                           _weighted_order(config.site_weights, events)):
            return None, (
                f"synthetic.p_merge / synthetic.diameter_mm: cannot place the merging lesions {first.lesion_id} and "
                f"{second.lesion_id} of patient {patient} ({distance:.0f} mm apart, up to {2 * first.footprint:.0f} and "
                f"{2 * second.footprint:.0f} mm over the sessions) in one site of source {source.name} with "
                f"margin_mm={config.margin_mm}; lower p_merge, diameter_mm or margin_mm"
            )
        first.appearance = second.appearance = _appearance_for(first, source, events)  # one kind of tumour
        placed.extend((first, second))
    to_place = sorted((lesion for lesion in lesions if lesion.centre is None), key=lambda les: -les.footprint)
    for lesion in to_place:
        if not _place(lesion, room, placed, config, rng, source, _weighted_order(config.site_weights, rng)):
            what = "baseline" if lesion.first_session == 0 else f"new (session {lesion.first_session + 1})"
            return None, (
                f"synthetic.lesions_per_patient / synthetic.diameter_mm: cannot place {what} lesion {lesion.lesion_id} "
                f"of patient {patient} (diameter {2 * lesion.shape.radius:.0f} mm, up to {2 * lesion.footprint:.0f} mm "
                f"over the sessions) in source {source.name}: no room left inside the body and its sites with "
                f"margin_mm={config.margin_mm}; lower lesions_per_patient, diameter_mm, growth or margin_mm"
            )
        lesion.appearance = _appearance_for(lesion, source, rng)
        placed.append(lesion)

    start = date.fromisoformat(config.start_date)
    sessions = []
    for t in range(n):
        acq = (start + timedelta(days=t * config.interval_days)).isoformat()
        if t == 0:
            geometry, transform = source.geometry, None
        else:
            geometry = _session_geometry(source.geometry, config, rng)
            transform = deform.repositioning(
                geometry, rng, config.rotation_deg, config.translation_mm, config.nonrigid_mm, config.nonrigid_grid_mm
            )
        session = SessionPlan(t, f"{t + 1:02d}", acq, geometry, transform, int(rng.integers(2**31)))
        if source.modality == "CT":
            session.shift = float(rng.uniform(-config.ct_shift_hu, config.ct_shift_hu)) if config.ct_shift_hu else 0.0
            session.noise_sd = config.ct_noise_hu * float(rng.uniform(0.7, 1.3))
        else:
            p99 = float(np.percentile(source.array[source.body], 99))
            session.gain = 1.0 + (float(rng.uniform(-config.mr_gain, config.mr_gain)) if config.mr_gain else 0.0)
            session.bias = rng.uniform(-config.mr_bias, config.mr_bias, 3) if config.mr_bias else np.zeros(3)
            session.noise_sd = config.mr_noise * p99 * float(rng.uniform(0.7, 1.3))
        sessions.append(session)
    lesions.sort(key=lambda les: les.lesion_id)
    plan = PatientPlan(patient, spec, int(seq.generate_state(1)[0]), lesions, sessions)
    for t in range(1, n):
        if config.p_fov_cut and events.random() < config.p_fov_cut:
            _cut_fov(plan, t, source, config)
    return plan, ""


def _event(config: SyntheticConfig, rng: np.random.Generator) -> str | None:
    """A baseline lesion's longitudinal event: "split", "shrink" or None (one draw, none without events)."""
    if config.n_sessions < 2 or not (config.p_split or config.p_shrink):
        return None
    draw = rng.random()
    if draw < config.p_split:
        return "split"
    return "shrink" if draw < config.p_split + config.p_shrink else None


def _z_range(geometry: Geometry, start: int, stop: int) -> Geometry:
    """The slices ``start``..``stop - 1`` of ``geometry``."""
    offset = np.asarray(geometry.direction_matrix) @ np.array([0.0, 0.0, start * geometry.spacing[2]])
    size = (geometry.size[0], geometry.size[1], stop - start)
    return Geometry(size, geometry.spacing, tuple((np.asarray(geometry.origin) + offset).tolist()), geometry.direction)


def _cut_fov(plan: PatientPlan, t: int, source: SourceScan, config: SyntheticConfig) -> None:
    """Cut session ``t``'s z range short at one end so that one lesion visible there lies wholly
    outside it (p_fov_cut). Of all lesions and both ends, the cut that leaves the fewest other lesions
    less than wholly in view, then keeps the most slices, if it keeps :data:`FOV_CUT_MIN_KEPT` of them
    and :data:`FOV_CUT_MIN_SLICES`. A new lesion at its first session is never cut out (its first
    sighting). A lesion's reach is its extent at that session (plus 10 %, a voxel and 2 mm for the
    smooth deformation) around its centre in the session's frame, mass effect included."""
    session = plan.sessions[t]
    geometry = session.geometry
    mass = _mass_effect(plan, source, t, config)
    n_slices = geometry.shape_zyx[0]
    keep_min = max(FOV_CUT_MIN_SLICES, int(np.ceil(FOV_CUT_MIN_KEPT * n_slices)))
    spans = {}  # lesion id -> (lowest, highest) z index it may reach
    for lesion in plan.lesions:
        if lesion.scales[t] is None or t < lesion.first_session:
            continue
        z = float(geometry.world_to_index(_to_output(lesion, mass, session))[0])
        reach = (1.1 * lesion.shape.extent * float(lesion.scales[t].max()) + max(geometry.spacing) + 2.0) / geometry.spacing[2]
        spans[lesion.lesion_id] = (z - reach, z + reach, t == lesion.first_session)
    best, best_key = None, None
    for lesion_id, (low, high, first_sighting) in spans.items():
        if first_sighting or low < 0 or high > n_slices - 1:
            continue  # a new lesion's first sighting, or already at an edge of the field of view
        for start, stop in ((0, int(np.ceil(low))), (int(np.floor(high)) + 1, n_slices)):
            if stop - start < keep_min:
                continue
            hit = sum(1 for other, (lo, hi, _) in spans.items() if other != lesion_id and (lo < start or hi > stop - 1))
            key = (hit, -(stop - start))
            if best_key is None or key < best_key:
                best, best_key = (start, stop, lesion_id), key
    if best is not None:
        session.geometry = _z_range(geometry, best[0], best[1])
        session.left_out = best[2]
        log.debug("synthetic %s ses-%s: z range cut to slices %d-%d, lesion %d out of view", plan.patient,
                  session.label, best[0], best[1] - 1, best[2])


# ----------------------------------------------------------------------------------------------
# rendering


def _mass_effect(plan: PatientPlan, source: SourceScan, t: int, config: SyntheticConfig) -> sitk.Transform | None:
    """Backward displacement (anatomy at session t -> anatomy at baseline) of lesion growth."""
    if config.mass_effect == 0:
        return None
    coarse = deform.coarse_geometry(source.geometry)
    spacing_zyx = np.asarray(coarse.spacing[::-1])
    entries = []
    for lesion in plan.lesions:
        if lesion.scales[t] is None:
            continue
        delta = config.mass_effect * (lesion.radius_at(t) - (lesion.radius_at(0) if lesion.first_session == 0 else 0.0))
        if abs(delta) < 0.5:
            continue
        sigma = max(config.mass_effect_sigma_mm, 0.75 * abs(delta))
        reach = lesion.shape.extent * float(lesion.scales[t].max()) + coarse.spacing[0]
        centre = coarse.world_to_index(lesion.centre)
        lo = np.maximum(np.floor(centre - reach / spacing_zyx).astype(int), 0)
        hi = np.minimum(np.ceil(centre + reach / spacing_zyx).astype(int) + 1, coarse.shape_zyx)
        if np.any(hi <= lo):
            continue
        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        u = _local(deform.grid_points(coarse, box).reshape(-1, 3), lesion, lesion.centre, t)
        depth = lesion.field(u, t) * _mean_scale(lesion, t)
        soft = np.clip(0.5 - depth / float(np.mean(coarse.spacing)), 0.0, 1.0).reshape(hi - lo)
        entries.append((soft, box, delta, sigma))
    if not entries:
        return None
    field = deform.mass_effect_field(entries, coarse)
    return deform.to_transform(field, coarse)


def _local(points: np.ndarray, lesion: LesionPlan, centre: np.ndarray, t: int) -> np.ndarray:
    """Lesion-local coordinates u = S^-1 R^T (y - c) of world points ``y`` (N, 3)."""
    return ((points - centre) @ lesion.rotation) / lesion.scales[t]


def _mean_scale(lesion: LesionPlan, t: int) -> float:
    return float(np.prod(lesion.scales[t]) ** (1 / 3))


def _resample(source: SourceScan, session: SessionPlan, total: sitk.Transform) -> np.ndarray:
    """The source anatomy seen through ``total`` on the session grid (linear interpolation)."""
    geometry = session.geometry
    # evaluate the composite once on a coarse grid; trilinear interpolation of a smooth field is exact
    # for the rigid part and close for the rest, and far cheaper than B-spline evaluation per voxel
    coarse = deform.coarse_geometry(geometry)
    field = deform.to_transform(deform.displacement_of(total, coarse), coarse)
    resampler = sitk.ResampleImageFilter()
    resampler.SetSize([int(s) for s in geometry.size])
    resampler.SetOutputSpacing(geometry.spacing)
    resampler.SetOutputOrigin(geometry.origin)
    resampler.SetOutputDirection(geometry.direction)
    resampler.SetTransform(field)
    resampler.SetInterpolator(sitk.sitkLinear)
    resampler.SetUseNearestNeighborExtrapolator(True)
    resampler.SetOutputPixelType(sitk.sitkFloat32)
    return sitk.GetArrayFromImage(resampler.Execute(source.image))


def render_session(
    plan: PatientPlan, source: SourceScan, t: int, config: SyntheticConfig
) -> tuple[np.ndarray, np.ndarray, dict, dict]:
    """Image (float32) and lesion instance mask (uint32) of session ``t`` on its grid, for each planned
    lesion its expected centre (output world mm), and for each lesion with a shape at ``t`` the fraction of
    its volume inside the session's field of view (1.0 when the grid holds all of it)."""
    session = plan.sessions[t]
    geometry = session.geometry
    mass = _mass_effect(plan, source, t, config) if t > 0 else None
    if session.transform is None and mass is None:
        image = source.array.astype(np.float32, copy=True)
    else:
        parts = [p for p in (mass, session.transform) if p is not None]
        image = _resample(source, session, sitk.CompositeTransform(parts))  # last listed applies first
    labels = np.zeros(geometry.shape_zyx, dtype=np.uint32)
    rng = np.random.default_rng(session.seed)
    spacing_zyx = np.asarray(geometry.spacing[::-1])
    voxel_mm = float(np.prod(geometry.spacing) ** (1 / 3))
    slack = 2.0 * config.nonrigid_mm + 3.0 * max(geometry.spacing)
    expected, in_fov = {}, {}
    for lesion in plan.lesions:
        if lesion.scales[t] is None:
            if t >= lesion.first_session:
                expected[lesion.lesion_id] = _to_output(lesion, mass, session)
            continue
        centre_t = _displaced(lesion, mass)
        centre_out = _to_output(lesion, mass, session)
        expected[lesion.lesion_id] = centre_out
        reach = lesion.shape.extent * float(lesion.scales[t].max()) + slack
        index = geometry.world_to_index(centre_out)
        lo_all = np.floor(index - reach / spacing_zyx).astype(int)
        hi_all = np.ceil(index + reach / spacing_zyx).astype(int) + 1
        lo, hi = np.maximum(lo_all, 0), np.minimum(hi_all, geometry.shape_zyx)

        def shape_in(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            """The lesion's local coordinates and signed depth (negative inside) at the voxel centres of
            the box [a, b) of the session's grid (it may reach beyond the grid)."""
            points = deform.grid_points(geometry, tuple(slice(i, j) for i, j in zip(a, b))).reshape(-1, 3)
            if session.transform is not None:
                box_geometry = Geometry(tuple(int(n) for n in (b - a)[::-1]), geometry.spacing,
                                        tuple(geometry.index_to_world(a.astype(float)).tolist()), geometry.direction)
                points = points + deform.displacement_of(session.transform, box_geometry).reshape(-1, 3)
            local = _local(points, lesion, centre_t, t)
            return local, lesion.field(local, t) * _mean_scale(lesion, t)

        cut = np.any(lo != lo_all) or np.any(hi != hi_all)
        if np.any(hi <= lo):
            in_fov[lesion.lesion_id] = 0.0
            continue  # outside the field of view
        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        u, depth = shape_in(lo, hi)
        if cut:  # the share of the whole lesion that the grid holds
            whole = int(np.count_nonzero(shape_in(lo_all, hi_all)[1] < 0))
            in_fov[lesion.lesion_id] = float(np.count_nonzero(depth < 0)) / whole if whole else 0.0
        else:
            in_fov[lesion.lesion_id] = 1.0
        width = float(np.hypot(voxel_mm, lesion.appearance.edge_mm))
        soft = np.clip(0.5 - depth / width, 0.0, 1.0)
        touched = soft > 0
        if not touched.any():
            continue
        texture = ndimage.gaussian_filter(rng.standard_normal(tuple(hi - lo)).astype(np.float32), 1.0).ravel()
        texture /= max(float(texture.std()), 1e-6)
        local_image = image[box].reshape(-1)
        values = lesion.appearance.values(u[touched], depth[touched], local_image[touched], texture[touched])
        local_image[touched] = local_image[touched] * (1 - soft[touched]) + values * soft[touched]
        image[box] = local_image.reshape(hi - lo)
        local_labels = labels[box].reshape(-1)
        inside = (depth < 0) & (local_labels == 0)
        local_labels[inside] = lesion.lesion_id
        labels[box] = local_labels.reshape(hi - lo)
    image = _acquisition(image, session, source.modality, rng)
    return image, labels, expected, in_fov


def _displaced(lesion: LesionPlan, mass: sitk.Transform | None) -> np.ndarray:
    """A lesion's centre moved by the mass effect (anatomy frame): by the displacement at its own
    centre, or at its anchor (a merging pair moves with the tissue between its lesions)."""
    if mass is None:
        return lesion.centre
    if lesion.anchor is None:
        return deform.invert_point(mass, lesion.centre)
    return lesion.centre + (deform.invert_point(mass, lesion.anchor) - lesion.anchor)


def _to_output(lesion: LesionPlan, mass: sitk.Transform | None, session: SessionPlan) -> np.ndarray:
    """Where a lesion's centre (baseline anatomy frame) lies in the session's world frame."""
    point = _displaced(lesion, mass)
    return point if session.transform is None else deform.invert_point(session.transform, point)


def _acquisition(image: np.ndarray, session: SessionPlan, modality: str, rng: np.random.Generator) -> np.ndarray:
    """Scanner effects of a session: intensity shift/gain, bias field (MR), noise; integer output.
    Works in place on ``image`` (float32) to keep large volumes cheap."""
    noise = rng.standard_normal(image.shape, dtype=np.float32)
    noise *= np.float32(session.noise_sd)
    if modality == "CT":
        image += np.float32(session.shift)
        image += noise
        low, high = -1024, 3071
    else:
        axes = [np.linspace(-1, 1, n, dtype=np.float32) for n in image.shape]
        bias = [np.exp(b * a).astype(np.float32) for b, a in zip(session.bias[::-1], axes)]
        image *= np.float32(session.gain) * bias[0][:, None, None]
        image *= bias[1][None, :, None]
        image *= bias[2][None, None, :]
        image += noise
        np.abs(image, out=image)
        low, high = 0, 32767
    del noise
    np.rint(image, out=image)
    np.clip(image, low, high, out=image)
    return image.astype(np.int16)


# ----------------------------------------------------------------------------------------------
# outputs


def _touches_another(labels: np.ndarray, box: tuple[slice, ...], lesion_id: int) -> bool:
    """Whether lesion ``lesion_id``'s mask touches another lesion's (26-connectivity)."""
    grown = tuple(slice(max(s.start - 1, 0), min(s.stop + 1, n)) for s, n in zip(box, labels.shape))
    region = labels[grown]
    near = region[ndimage.binary_dilation(region == lesion_id, structure=np.ones((3, 3, 3), dtype=bool))]
    return bool(np.any((near != 0) & (near != lesion_id)))


def _is_split(local: np.ndarray) -> bool:
    """Whether a lesion's mask is two or more separated parts (26-connectivity), specks (parts under
    :data:`SPLIT_MIN_FRACTION` of its voxels) aside."""
    parts = cc3d.connected_components(np.ascontiguousarray(local), connectivity=26)
    sizes = np.bincount(parts.ravel())[1:]
    return int((sizes >= SPLIT_MIN_FRACTION * sizes.sum()).sum()) >= 2


def _seen_status(lesion: LesionPlan, labels: np.ndarray, box: tuple[slice, ...], local: np.ndarray, seen: set[int]) -> str:
    """Status of a lesion with voxels: new (first sighting after baseline) > merged > split > present."""
    if lesion.first_session > 0 and lesion.lesion_id not in seen:
        return "new"
    if _touches_another(labels, box, lesion.lesion_id):
        return "merged"
    return "split" if _is_split(local) else "present"


def _lesion_rows(
    plan: PatientPlan, t: int, labels: np.ndarray, geometry: Geometry, expected: dict, in_fov: dict, modality: str,
    seen: set[int],
) -> list[dict]:
    """Ground-truth rows of session ``t`` from its label map; ``seen`` (lesion ids with voxels in an
    earlier session) is updated. A lesion planned after baseline is ``new`` at its first sighting,
    which is a later session than planned when it first lay outside the field of view. ``in_fov``: the
    share of each lesion's volume inside the field of view (:func:`render_session`)."""
    session = plan.sessions[t]
    counts = np.bincount(labels.ravel(), minlength=max(lesion.lesion_id for lesion in plan.lesions) + 1)
    boxes = ndimage.find_objects(labels)
    rows = []
    for lesion in plan.lesions:
        status = lesion.status_planned(t)
        if status is None:
            continue
        n_voxels = int(counts[lesion.lesion_id]) if lesion.lesion_id < len(counts) else 0
        centroid = expected.get(lesion.lesion_id, np.full(3, np.nan))
        touches = False
        if n_voxels:
            box = boxes[lesion.lesion_id - 1]
            local = labels[box] == lesion.lesion_id
            centroid = geometry.index_to_world(np.argwhere(local).mean(axis=0) + [s.start for s in box])
            touches = any(s.start == 0 or s.stop == n for s, n in zip(box, labels.shape))
            status = _seen_status(lesion, labels, box, local, seen)
            seen.add(lesion.lesion_id)
        elif status != "vanished":
            inside = geometry.contains_index(geometry.world_to_index(centroid))
            status = "vanished" if inside else "out_of_fov"
        volume = n_voxels * geometry.voxel_volume_ml()
        contrast = "existing" if lesion.appearance.kind == "sample" else (
            "hyper" if lesion.appearance.base() > lesion.appearance.reference else "hypo")
        rows.append(dict(
            patient=plan.patient, session=session.label, session_index=t, acq_time=session.acq_time,
            lesion_id=lesion.lesion_id, status=status, volume_ml=volume, n_voxels=n_voxels,
            centroid_x=float(centroid[0]), centroid_y=float(centroid[1]), centroid_z=float(centroid[2]),
            diameter_eq_mm=float((6 * volume * 1000 / np.pi) ** (1 / 3)), touches_fov_edge=bool(touches),
            fraction_in_fov=float(in_fov.get(lesion.lesion_id, np.nan)),  # NaN: no lesion at t
            site=lesion.site, contrast=contrast, modality=modality, source=plan.spec.name,
        ))
    return rows


def _prompts(labels: np.ndarray, geometry: Geometry) -> PromptFile:
    """A point (the lesion voxel nearest its centroid) and a box per lesion, world frame."""
    lesions = []
    for lesion_id, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        voxels = np.argwhere(labels[box] == lesion_id) + [s.start for s in box]
        nearest = voxels[np.argmin(np.linalg.norm(voxels - voxels.mean(axis=0), axis=1))]
        corners = geometry.index_to_world(np.array([voxels.min(axis=0), voxels.max(axis=0)], dtype=float))
        lesions.append(LesionPrompt(
            id=lesion_id,
            point=tuple(np.round(geometry.index_to_world(nearest.astype(float)), 4).tolist()),
            box=BoxPrompt(min=tuple(np.round(corners.min(axis=0), 4).tolist()), max=tuple(np.round(corners.max(axis=0), 4).tolist())),
        ))
    return PromptFile(frame="world", lesions=lesions)


def _write_patient(plan: PatientPlan, source: SourceScan, config: SyntheticConfig, root: Path) -> list[dict]:
    rows = []
    subject = root / f"sub-{plan.patient}"
    seen: set[int] = set()
    for t, session in enumerate(plan.sessions):
        image, labels, expected, in_fov = render_session(plan, source, t, config)
        geometry = session.geometry
        session_dir = subject / f"ses-{session.label}"
        write_image(image_from_array(image, geometry), session_dir / "image.nii.gz")
        write_image(image_from_array(labels, geometry), root / "derivatives" / "groundtruth" / subject.name / session_dir.name / "lesions.nii.gz")
        if t == 0:
            write_prompts(_prompts(labels, geometry), session_dir / "prompts.json")
        rows.extend(_lesion_rows(plan, t, labels, geometry, expected, in_fov, source.modality, seen))
        log.debug("%s ses-%s: %d lesion voxels", plan.patient, session.label, int((labels > 0).sum()))
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter="\t", lineterminator="\n")
    writer.writerow(["session_id", "acq_time"])
    for session in plan.sessions:
        writer.writerow([f"ses-{session.label}", session.acq_time])
    (subject / f"sub-{plan.patient}_sessions.tsv").write_text(buffer.getvalue())
    return rows


def groundtruth_table(rows: list[dict]) -> pa.Table:
    frame = pd.DataFrame(rows, columns=GROUNDTRUTH_SCHEMA.names)
    return pa.Table.from_pandas(frame, schema=GROUNDTRUTH_SCHEMA, preserve_index=False)


def plan_cohort(config: SyntheticConfig) -> tuple[list[PatientPlan], dict[SourceSpec, SourceScan]]:
    """Load the sources and draw every patient's plan; all checks happen here, before any write."""
    specs = expand_sources(config)
    sources: dict[SourceSpec, SourceScan] = {}
    rooms: dict[SourceSpec, _Room] = {}
    plans = []
    for index in range(config.n_patients):
        spec = specs[index % len(specs)]
        key = spec
        if spec.kind == "phantom":  # every phantom patient has its own body
            key = SourceSpec("phantom", phantom_size=spec.phantom_size, instance=index)
        if key not in sources:
            seq = np.random.SeedSequence(entropy=config.seed, spawn_key=(10_000 + index,))
            sources[key] = load_source(spec, config, np.random.default_rng(seq))
            rooms[key] = _Room(sources[key])
        plan = plan_patient(index, spec, sources[key], config, rooms[key])
        plan.spec = key if spec.kind == "phantom" else spec
        plans.append(plan)
    return plans, sources


def _is_synthetic_cohort(folder: Path) -> bool:
    description = folder / "dataset_description.json"
    return description.is_file() and GENERATOR_NAME in description.read_text()


# What forked rendering workers read (set in the parent before the pool forks): sources, config, root.
_WORKER_STATE: tuple[dict[SourceSpec, SourceScan], SyntheticConfig, Path] | None = None


def _write_patient_in_worker(plan: PatientPlan) -> list[dict]:
    sources, config, root = _WORKER_STATE
    return _write_patient(plan, sources[plan.spec], config, root)


def _write_patients(plans: list[PatientPlan], sources: dict[SourceSpec, SourceScan], config: SyntheticConfig,
                    root: Path, workers: int):
    """Render and write every patient, in ``workers`` forked processes when more than one; yields each
    plan with its ground-truth rows, in plan order. Each session draws from its own seeded stream, so
    the files do not depend on the number of workers."""
    global _WORKER_STATE
    if workers <= 1 or len(plans) <= 1 or "fork" not in multiprocessing.get_all_start_methods():
        for plan in plans:
            yield plan, _write_patient(plan, sources[plan.spec], config, root)
        return
    _WORKER_STATE = (sources, config, root)
    try:
        with ProcessPoolExecutor(min(workers, len(plans)), mp_context=multiprocessing.get_context("fork")) as pool:
            yield from zip(plans, pool.map(_write_patient_in_worker, plans))
    finally:
        _WORKER_STATE = None


def generate_cohort(config: SyntheticConfig, out_dir: str | Path | None = None, workers: int = 1) -> pd.DataFrame:
    """Generate the cohort of ``config`` into ``out_dir`` (default ``config.output``) and return its
    ground-truth table (one row per patient x session x lesion; see :data:`GROUNDTRUTH_SCHEMA`).
    ``workers`` > 1 renders patients in that many forked processes (the same files; planning stays
    in this process).

    Layout (what :func:`lesionlocator.ingest.cohort.ingest_cohort` reads)::

        <out>/sub-<P>/sub-<P>_sessions.tsv                     session_id, acq_time (ISO dates)
        <out>/sub-<P>/ses-<S>/image.nii.gz                     int16 (CT: HU)
        <out>/sub-<P>/ses-01/prompts.json                      baseline: point + box per lesion, world
        <out>/derivatives/groundtruth/sub-<P>/ses-<S>/lesions.nii.gz   uint32 lesion ids, same in all sessions
        <out>/derivatives/groundtruth/groundtruth.parquet

    The cohort is written to a temporary sibling folder and moved into place at the end, so a failed
    run leaves no partial output. An existing ``out_dir`` is replaced only if it is a cohort made by
    this generator.
    """
    out = Path(out_dir if out_dir is not None else config.output)
    if out.exists() and not (out.is_dir() and (not any(out.iterdir()) or _is_synthetic_cohort(out))):
        raise InputError(out, "output exists and is not a synthetic cohort made by this generator; choose a new folder")
    plans, sources = plan_cohort(config)
    with atomic_directory(out) as tmp:
        rows = []
        with Progress("synthetic cohort", total=len(plans), unit="patient", logger=log) as progress:
            for plan, patient_rows in _write_patients(plans, sources, config, tmp, workers):
                rows.extend(patient_rows)
                log.debug("synthetic %s: source %s", plan.patient, plan.spec.name)
                progress.advance(f"{plan.patient}: {len(plan.sessions)} session(s), {len(plan.lesions)} lesion(s)")
        table = groundtruth_table(rows)
        write_parquet(table, tmp / "derivatives" / "groundtruth" / "groundtruth.parquet")
        description = {
            "Name": "LesionLocator synthetic longitudinal cohort",
            "BIDSVersion": "1.9.0",
            "DatasetType": "raw",
            "GeneratedBy": [{"Name": GENERATOR_NAME, "Version": __version__}],
            "SyntheticConfig": config.model_dump(mode="json"),
        }
        write_json(description, tmp / "dataset_description.json")
        write_json({**description, "DatasetType": "derivative"}, tmp / "derivatives" / "groundtruth" / "dataset_description.json")
    return table.to_pandas()
