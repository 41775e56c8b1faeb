"""Longitudinal answers against ground truth: each lesion's status per session, and new lesions.

Per lesion and session (:data:`STATUS_EVALUATION_SCHEMA`, :func:`status_rows`), the status the
tracking reported (the session's ``tracking.parquet``) against the true one (the synthetic
generator's ``derivatives/groundtruth/groundtruth.parquet``, or, without that table, what the GT
masks show: :func:`truth_from_masks`).

* **Correspondence.** A GT lesion of the baseline goes with the predicted lesion of the same ID
  that the tracking does not call new (the tracking keeps the IDs of the baseline prompts). A GT new
  lesion (first seen after the first GT session) goes with the predicted new lesion
  (``is_new``; IDs of their own, ``session_index * 1_000_000 + k``) that :func:`match_new_lesions`
  pairs with it: at the first session where both have voxels, within ``max(10 mm, the GT lesion's
  equivalent radius)`` centre to centre or at IoU > ``iou_threshold``; the pair holds for the later
  sessions. Every other predicted lesion-session is a row of its own, true class ``none``.
* **Classes** (the confusion's rows and columns): ``present`` (statuses present, split, merged),
  ``new`` (GT status new; predicted ``new_candidate``, or a new lesion at its first sighting with a
  present-like status), ``vanished``, ``out_of_fov``; the flagged predictions ``uncertain`` and
  ``lost`` and the other predicted statuses (``not_found``, ``rejected``) are classes of their own,
  never correct; ``none`` says there is no lesion on that side.
* **Partly imaged lesions.** A GT lesion with less than :data:`PARTIAL_FOV` of its volume inside the
  session's field of view (the GT table's ``fraction_in_fov``) may be reported ``present`` (its visible
  part) or ``out_of_fov`` (not evaluable): both are correct, as the tracker reports ``out_of_fov`` below
  ``register.min_fraction_inside`` of the *propagated* mask, which can only estimate that share.
* **Centroid distance**: world distance (mm, LPS) from the reported centroid (tracking row) to the
  true one (GT table: the lesion's voxel centroid, or its expected position when it is not visible;
  without the table, the GT mask's centroid).
* **New-lesion calls**: a predicted new lesion at its first sighting (not rejected by a reader) is a
  *candidate*; one that found no GT new lesion is a false candidate.

The headline figures of a cohort (:func:`headline_figures`) come from the cohort dataset's
``status_evaluation`` and ``evaluation`` tables; :func:`evaluate_patient_longitudinal` writes a
patient's rows of both, reading each label map once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from scipy.optimize import linear_sum_assignment

from lesionlocator.core.errors import InputError
from lesionlocator.core.io import geometry_difference, read_geometry, write_patient_table
from lesionlocator.evaluate.tracking import (
    EVALUATION_SCHEMA,
    Correspondence,
    LabelOverlap,
    evaluate_overlap,
    evaluation_table,
    label_overlap,
    lesion_outcomes,
    read_label_map,
)

log = logging.getLogger(__name__)

#: Statuses that say "the lesion is there" (a split lesion and merged lesions are still there).
PRESENT_LIKE = ("present", "split", "merged")
#: Predicted statuses that flag a lesion for review instead of deciding: never counted correct.
FLAGGED = ("uncertain", "lost")
#: The classes a prediction can get right.
DECIDED = ("present", "new", "vanished", "out_of_fov")
#: The class of "no lesion on this side" (a false prediction, or a missed lesion).
NONE = "none"
#: A GT lesion with less than this share of its volume in the field of view may be reported out_of_fov.
PARTIAL_FOV = 0.5
#: A lesion reported present whose centroid lies further than this from the truth is a wrong answer (mm).
FAR_MM = 20.0
#: A predicted new lesion finds a GT new lesion within max(this, the lesion's equivalent radius) (mm).
NEW_MATCH_MIN_MM = 10.0
#: The GT status table, in the folder that holds the GT masks' ``sub-<p>/ses-<s>/`` folders.
GROUNDTRUTH_TABLE = "groundtruth.parquet"
#: A patient's status evaluation, beside its ``evaluation.arrow`` (Arrow IPC, as that one: only
#: aggregation reads it back; :func:`lesionlocator.core.io.write_patient_table`).
STATUS_EVALUATION_FILE = "status_evaluation.arrow"

#: One row per lesion per session: a GT lesion-session (with its corresponding prediction, if any)
#: or a predicted lesion-session without a GT lesion.
STATUS_EVALUATION_SCHEMA = pa.schema(
    [
        pa.field("patient", pa.string(), nullable=False),
        pa.field("session", pa.string(), nullable=False),
        pa.field("session_index", pa.int32(), nullable=False),
        pa.field("gt_lesion_id", pa.int64()),
        pa.field("pred_lesion_id", pa.int64()),
        pa.field("true_status", pa.string()),  # the GT table's status (null: no GT lesion)
        pa.field("pred_status", pa.string()),  # the tracking table's status (null: no prediction)
        pa.field("true_class", pa.string(), nullable=False),
        pa.field("pred_class", pa.string(), nullable=False),
        pa.field("correct", pa.bool_(), nullable=False),  # same class, one of DECIDED (or out_of_fov when partly imaged)
        pa.field("flagged", pa.bool_(), nullable=False),  # predicted uncertain or lost
        pa.field("gt_is_new", pa.bool_(), nullable=False),  # the GT lesion appeared after the first GT session
        pa.field("pred_is_new", pa.bool_(), nullable=False),  # the tracking calls the lesion new
        pa.field("new_candidate", pa.bool_(), nullable=False),  # a predicted new lesion at its first sighting
        pa.field("centroid_distance_mm", pa.float64()),  # reported centroid to the true one, world mm
    ]
)

#: Counts of (true class, predicted class) per session index, over the cohort.
STATUS_CONFUSION_SCHEMA = pa.schema(
    [
        pa.field("session_index", pa.int32(), nullable=False),
        pa.field("true_class", pa.string(), nullable=False),
        pa.field("pred_class", pa.string(), nullable=False),
        pa.field("n", pa.int64(), nullable=False),
    ]
)

_CENTROID = ["centroid_x", "centroid_y", "centroid_z"]


# --- classes --------------------------------------------------------------------------------------


def true_class(status: str | None) -> str:
    """The confusion class of a GT status (``none`` when there is no GT lesion)."""
    if status is None or (isinstance(status, float) and np.isnan(status)):
        return NONE
    if status in PRESENT_LIKE:
        return "present"
    return str(status)


def predicted_class(status: str | None, is_new: bool = False, first_sighting: bool = False) -> str:
    """The confusion class of a reported status: a new lesion at its first sighting is ``new``; the
    flagged and other statuses are classes of their own (``none``: no prediction)."""
    if status is None or (isinstance(status, float) and np.isnan(status)):
        return NONE
    if status == "new_candidate" or (is_new and first_sighting and status in PRESENT_LIKE):
        return "new"
    if status in PRESENT_LIKE:
        return "present"
    return str(status)


# --- the two sides --------------------------------------------------------------------------------


def predicted_lesions(tracking: pd.DataFrame) -> pd.DataFrame:
    """A patient's tracking rows (all sessions) with ``is_new`` and ``first_session_index`` (taken
    from the table when it has them; otherwise a lesion is new when it is first seen after the
    baseline) and ``first_sighting`` (the row is the lesion's first session)."""
    frame = tracking.copy()
    first_seen = frame.groupby("lesion_id")["session_index"].transform("min")
    if "first_session_index" not in frame:
        frame["first_session_index"] = first_seen
    frame["first_session_index"] = frame["first_session_index"].fillna(first_seen).astype(int)
    if "is_new" not in frame:
        frame["is_new"] = frame["first_session_index"] > frame["session_index"].min()
    frame["is_new"] = frame["is_new"].fillna(False).astype(bool) | frame["status"].eq("new_candidate")
    frame["first_sighting"] = frame["session_index"] == frame["first_session_index"]
    for column in _CENTROID:
        if column not in frame:
            frame[column] = np.nan
    return frame


def truth_from_masks(sessions: Mapping[int, LabelOverlap]) -> pd.DataFrame:
    """GT statuses from the GT masks alone (no GT table), ``sessions`` by session index: a lesion
    with voxels is ``new`` at its first session after the first one, else ``present``; a lesion seen
    before and without voxels now is ``vanished`` (the masks cannot tell ``out_of_fov``). Columns
    session_index, lesion_id, status, centroid_x/y/z (world mm; NaN when not visible)."""
    rows, seen = [], set()
    first = min(sessions, default=0)
    for index in sorted(sessions):
        o = sessions[index]
        here = {int(i): k for k, i in enumerate(o.gt_ids)}
        for lesion_id, k in here.items():
            status = "new" if index > first and lesion_id not in seen else "present"
            rows.append((index, lesion_id, status, *o.gt_centres[k]))
        rows += [(index, lesion_id, "vanished", np.nan, np.nan, np.nan) for lesion_id in sorted(seen - set(here))]
        seen |= set(here)
    return pd.DataFrame(rows, columns=["session_index", "lesion_id", "status", *_CENTROID])


def read_truth_table(path: str | Path, patient: str) -> pd.DataFrame:
    """One patient's rows of a GT status table (columns session, lesion_id, status, centroid_x/y/z, and
    fraction_in_fov when the table has it)."""
    columns = ["patient", "session", "lesion_id", "status", *_CENTROID]
    try:
        if "fraction_in_fov" in pq.read_schema(path).names:
            columns.append("fraction_in_fov")
        frame = pq.read_table(path, columns=columns, filters=[("patient", "==", patient)]).to_pandas()
    except (pa.ArrowInvalid, OSError, KeyError) as err:
        raise InputError(path, f"cannot read the ground-truth status table ({err})") from None
    return frame.drop(columns="patient")


def groundtruth_table_path(mask: str | Path, patient: str, session: str) -> Path | None:
    """The GT status table that goes with a GT mask ``<folder>/sub-<patient>/ses-<session>/<mask>``:
    ``<folder>/groundtruth.parquet`` when it exists (the synthetic cohort's layout), else None."""
    mask = Path(mask)
    if mask.parent.name != f"ses-{session}" or mask.parent.parent.name != f"sub-{patient}":
        return None
    table = mask.parents[2] / GROUNDTRUTH_TABLE
    return table if table.is_file() else None


# --- new lesions ----------------------------------------------------------------------------------


def match_new_lesions(
    sessions: Mapping[int, LabelOverlap],
    gt_new: set[int],
    pred_new: Mapping[int, set[int]],
    iou_threshold: float = 0.1,
    min_distance_mm: float = NEW_MATCH_MIN_MM,
) -> dict[int, int]:
    """Pair GT new lesions with predicted new lesions, GT ID -> predicted ID, one to one.

    Session by session in time order, the GT new lesions with voxels and no partner yet meet the
    predicted new lesions (``pred_new[session_index]``: the IDs the tracking calls new there) with
    voxels and no partner yet. A pair qualifies when the IoU exceeds ``iou_threshold`` or the
    centres (world mm) lie within ``max(min_distance_mm, the GT lesion's equivalent radius)``; among
    qualifying pairs the matching (Hungarian) maximises the number of pairs, then IoU plus closeness.
    A pair, once made, holds for the later sessions.
    """
    pairs: dict[int, int] = {}
    for index in sorted(sessions):
        o = sessions[index]
        taken = set(pairs.values())
        rows = [k for k, g in enumerate(o.gt_ids) if int(g) in gt_new and int(g) not in pairs]
        cols = [k for k, p in enumerate(o.pred_ids) if int(p) in pred_new.get(index, set()) and int(p) not in taken]
        if not rows or not cols:
            continue
        iou = o.iou[np.ix_(rows, cols)]
        limit = np.maximum(min_distance_mm, o.gt_radius_mm()[rows])[:, None]
        distance = o.distance[np.ix_(rows, cols)]
        passes = (iou > iou_threshold) | (distance <= limit)
        gain = np.where(passes, 2.0 + iou + np.clip(1.0 - distance / limit, 0.0, 1.0), 0.0)
        for r, c in zip(*linear_sum_assignment(gain, maximize=True)):
            if gain[r, c] > 0:
                pairs[int(o.gt_ids[rows[r]])] = int(o.pred_ids[cols[c]])
    return pairs


# --- per lesion-session rows ----------------------------------------------------------------------


def status_rows(truth: pd.DataFrame, predicted: pd.DataFrame, new_pairs: Mapping[int, int]) -> pd.DataFrame:
    """The status evaluation of one patient (columns of :data:`STATUS_EVALUATION_SCHEMA` without
    patient and session).

    ``truth``: GT rows (session_index, lesion_id, status, centroid_x/y/z world mm, optionally fraction_in_fov);
    ``predicted``: :func:`predicted_lesions` rows; ``new_pairs``: GT new lesion -> predicted new
    lesion (:func:`match_new_lesions`). Correspondence and classes: see the module docstring.
    """
    truth = truth.sort_values(["session_index", "lesion_id"], kind="mergesort")
    first_gt = truth.groupby("lesion_id")["session_index"].transform("min")
    gt_is_new = (first_gt > truth["session_index"].min()) | truth["status"].eq("new")
    new_ids = set(truth.loc[gt_is_new, "lesion_id"].astype(int))
    pred = {(int(r.session_index), int(r.lesion_id)): r for r in predicted.itertuples(index=False)}
    used: set[tuple[int, int]] = set()
    rows = []
    for t, gt_new in zip(truth.itertuples(index=False), gt_is_new):
        index, gt_id = int(t.session_index), int(t.lesion_id)
        pred_id = new_pairs.get(gt_id) if gt_id in new_ids else gt_id
        p = pred.get((index, pred_id)) if pred_id is not None else None
        if p is not None and bool(p.is_new) != (gt_id in new_ids):
            p = None  # a baseline GT lesion goes with a tracked lesion, a new one with a new lesion
        if p is not None:
            used.add((index, pred_id))
        partial = float(getattr(t, "fraction_in_fov", 1.0)) < PARTIAL_FOV  # NaN (no lesion) compares False
        rows.append(_row(index, gt_id, t.status, np.array([t.centroid_x, t.centroid_y, t.centroid_z], float), bool(gt_new), p, partial))
    for key, p in sorted(pred.items()):
        if key not in used:
            rows.append(_row(key[0], None, None, np.full(3, np.nan), False, p))
    columns = STATUS_EVALUATION_SCHEMA.names[2:]
    return pd.DataFrame.from_records(rows, columns=columns)


def _row(index: int, gt_id: int | None, status: str | None, centre: np.ndarray, gt_new: bool, p, partial: bool = False) -> dict:
    truth = true_class(status)
    if p is None:
        guess, pred_status, is_new, candidate, distance = NONE, None, False, False, np.nan
    else:
        pred_status, is_new = str(p.status), bool(p.is_new)
        guess = predicted_class(pred_status, is_new, bool(p.first_sighting))
        candidate = is_new and bool(p.first_sighting) and pred_status != "rejected"
        distance = float(np.linalg.norm(np.array([p.centroid_x, p.centroid_y, p.centroid_z], float) - centre))
    return {
        "session_index": index,
        "gt_lesion_id": gt_id,
        "pred_lesion_id": None if p is None else int(p.lesion_id),
        "true_status": status,
        "pred_status": pred_status,
        "true_class": truth,
        "pred_class": guess,
        "correct": (truth == guess and truth in DECIDED) or (partial and truth in ("present", "new") and guess == "out_of_fov"),
        "flagged": guess in FLAGGED,
        "gt_is_new": gt_new,
        "pred_is_new": is_new,
        "new_candidate": candidate,
        "centroid_distance_mm": distance if np.isfinite(distance) else None,
    }


def status_table(frame: pd.DataFrame) -> pa.Table:
    """Arrow table of a status-evaluation frame with exactly :data:`STATUS_EVALUATION_SCHEMA`."""
    frame = frame.reindex(columns=STATUS_EVALUATION_SCHEMA.names).copy()
    for column in ("gt_lesion_id", "pred_lesion_id"):
        frame[column] = frame[column].astype("Int64")
    frame["centroid_distance_mm"] = frame["centroid_distance_mm"].astype("float64")
    frame["session_index"] = frame["session_index"].astype("int32")
    return pa.Table.from_pandas(frame, schema=STATUS_EVALUATION_SCHEMA, preserve_index=False).replace_schema_metadata(None)


# --- one patient ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SessionFiles:
    """One session's inputs to :func:`evaluate_patient_longitudinal`: the predicted label map
    (``labels``), the new-lesion candidates' map when they are written apart (``candidates``, or
    None), the tracking table and the GT mask."""

    session: str
    session_index: int
    labels: Path
    groundtruth: Path
    tracking: Path
    candidates: Path | None = None


def evaluate_patient_longitudinal(
    patient: str,
    sessions: Sequence[SessionFiles],
    truth: pd.DataFrame | None = None,
    evaluation_output: str | Path | None = None,
    status_output: str | Path | None = None,
    correspondence: Correspondence = "id",
    iou_threshold: float = 0.1,
) -> tuple[pa.Table, pa.Table]:
    """A patient's per-lesion evaluation (:data:`~lesionlocator.evaluate.tracking.EVALUATION_SCHEMA`:
    Dice, centre distance, detection; GT new lesions go with the predicted new lesions paired by
    :func:`match_new_lesions`) and status evaluation (:data:`STATUS_EVALUATION_SCHEMA`).

    ``sessions``: the sessions with a GT mask, in time order; ``truth``: the patient's rows of the
    GT status table (columns session, lesion_id, status, centroid_x/y/z), or None (or no rows) to
    take the statuses from the masks (:func:`truth_from_masks`). Every predicted and GT map of a session must
    share one geometry (checked before anything is evaluated). Writes both tables atomically when
    their outputs are given.
    """
    for s in sessions:
        difference = geometry_difference(read_geometry(s.labels), read_geometry(s.groundtruth))
        if difference is not None:
            raise InputError(s.labels, f"prediction geometry does not match ground truth {s.groundtruth}: {difference}")
        if not Path(s.tracking).is_file():
            raise InputError(s.tracking, "tracking table not found")
    overlaps = {s.session_index: _session_overlap(s) for s in sessions}
    names = {s.session_index: s.session for s in sessions}
    predicted = predicted_lesions(pd.concat([pq.read_table(s.tracking).to_pandas() for s in sessions], ignore_index=True))
    predicted = predicted[predicted["session_index"].isin(names)]
    if truth is None or truth.empty:  # no table, or the patient is not in it
        truth_frame = truth_from_masks(overlaps)
    else:
        index_of = {name: index for index, name in names.items()}
        truth_frame = truth[truth["session"].isin(index_of)].assign(session_index=lambda f: f["session"].map(index_of))
    first_gt = truth_frame.groupby("lesion_id")["session_index"].transform("min")
    gt_new = set(truth_frame.loc[(first_gt > min(names, default=0)) | truth_frame["status"].eq("new"), "lesion_id"].astype(int))
    calls = predicted[predicted["is_new"] & predicted["status"].ne("rejected")]
    pred_new = {int(i): set(g["lesion_id"].astype(int)) for i, g in calls.groupby("session_index")}
    pairs = match_new_lesions(overlaps, gt_new, pred_new, iou_threshold)

    frames = []
    for index, overlap in overlaps.items():
        fixed = {g: pairs.get(g) for g in gt_new}
        frame = evaluate_overlap(overlap, correspondence, iou_threshold, fixed)
        frames.append(frame.assign(patient=patient, session=names[index], session_index=index))
    evaluation = evaluation_table(pd.concat(frames, ignore_index=True) if frames else pd.DataFrame())
    status = status_rows(truth_frame, predicted, pairs)
    status = status_table(status.assign(patient=patient, session=status["session_index"].map(names)))
    for table, output in ((evaluation, evaluation_output), (status, status_output)):
        if output is not None:
            write_patient_table(table, output)
    log.info("%s: %d evaluation and %d status row(s), %d new lesion(s) paired", patient, evaluation.num_rows, status.num_rows, len(pairs))
    return evaluation, status


def _session_overlap(s: SessionFiles) -> LabelOverlap:
    """Read one session's maps once: predicted lesions (plus the candidates' map where no lesion is,
    when candidates are written apart) and GT."""
    pred, _ = read_label_map(s.labels)
    if s.candidates is not None and Path(s.candidates).is_file():
        candidates, _ = read_label_map(s.candidates)
        if candidates.shape == pred.shape:
            pred = np.where((pred == 0) & (candidates > 0), candidates, pred)
    gt, geometry = read_label_map(s.groundtruth)
    return label_overlap(pred, gt, geometry)


# --- cohort figures -------------------------------------------------------------------------------


def status_confusion(status: pd.DataFrame) -> pd.DataFrame:
    """Counts per (session_index, true_class, pred_class) (:data:`STATUS_CONFUSION_SCHEMA`)."""
    counts = status.groupby(["session_index", "true_class", "pred_class"]).size().rename("n").reset_index()
    counts["session_index"] = counts["session_index"].astype("int32")
    counts["n"] = counts["n"].astype("int64")
    return counts[STATUS_CONFUSION_SCHEMA.names]


def confusion_matrix(confusion: pd.DataFrame, followups_only: bool = True) -> pd.DataFrame:
    """The confusion as a matrix: true classes as rows, predicted classes as columns (counts),
    pooled over the follow-ups (session_index > 0) or over every session."""
    rows = confusion[confusion["session_index"] > 0] if followups_only else confusion
    matrix = rows.pivot_table(index="true_class", columns="pred_class", values="n", aggfunc="sum", fill_value=0)
    order = list(DECIDED) + [NONE]
    index = [c for c in order if c in matrix.index] + sorted(set(matrix.index) - set(order))
    columns = [c for c in order[:-1] + list(FLAGGED) if c in matrix.columns]
    columns += sorted(set(matrix.columns) - set(columns) - {NONE}) + ([NONE] if NONE in matrix.columns else [])
    return matrix.loc[index, columns].astype(int)


def status_counts(status: pd.DataFrame, far_mm: float = FAR_MM) -> dict[str, float]:
    """Summable counts of status rows (any subset of the cohort), the ingredients of the headline figures.

    A follow-up scan counts when it has a row (every scan of a patient with a lesion, seen or gone).
    A lesion far from the truth counts when it is reported plainly ``present``: ``split`` and
    ``merged`` already flag it for review, and a merged mask's centroid lies between its lesions.
    The sum of :func:`status_counts_by_session` over its session indexes.
    """
    return {metric: float(value) for metric, value in status_counts_by_session(status, far_mm).sum().items()}


def status_counts_by_session(status: pd.DataFrame, far_mm: float = FAR_MM) -> pd.DataFrame:
    """:func:`status_counts` of each session index's rows, in one pass over the frame: one row per
    session index present (ascending, the index), one float column per count. A scan is one
    (patient, session_index); without a patient column, each follow-up row counts as one."""
    s = status
    followup = s["session_index"] > 0
    present = followup & s["true_class"].eq("present")
    gt_new = s["true_class"].eq("new")
    candidate = s["new_candidate"].astype(bool) & followup
    first_of_scan = ~s.duplicated(["patient", "session_index"]) if "patient" in s else True
    rows = pd.DataFrame(
        {
            "n_present_followup": present,
            "n_present_correct": present & s["correct"],
            "n_present_flagged": present & s["flagged"],
            "n_present_reported_vanished": s["true_class"].eq("present") & s["pred_class"].eq("vanished"),
            "n_reported_present": s["pred_class"].eq("present"),
            "n_reported_present_far": s["pred_status"].eq("present") & (s["centroid_distance_mm"] > far_mm),
            "n_gt_new": gt_new,
            "n_gt_new_detected": gt_new & s["pred_lesion_id"].notna(),
            "n_new_candidates": candidate,
            "n_false_new_candidates": candidate & s["gt_lesion_id"].isna(),
            "n_followup_scans": followup & first_of_scan,
        }
    ).astype(float)
    return rows.groupby(s["session_index"].to_numpy(), sort=True).sum().rename_axis("session_index")


def ratios_of_counts(counts: Mapping[str, float]) -> dict[str, float]:
    """The headline ratios of :func:`status_counts` sums (NaN where the denominator is 0)."""

    def ratio(a: str, b: str) -> float:
        return counts.get(a, 0.0) / counts[b] if counts.get(b) else float("nan")

    return {
        "status_accuracy_present": ratio("n_present_correct", "n_present_followup"),
        "new_lesion_recall": ratio("n_gt_new_detected", "n_gt_new"),
        "false_new_candidates_per_scan": ratio("n_false_new_candidates", "n_followup_scans"),
    }


def new_lesion_detection(status: pd.DataFrame, evaluation: pd.DataFrame, min_diameter_mm: float = 10.0) -> dict[str, float]:
    """New-lesion recall beside the headline's (found at the first sighting):

    * ``new_lesion_recall_by_next``: found at the first sighting or at the next follow-up (a new lesion
      missed once and found at the next assessment; RECIST confirms an equivocal new lesion there too);
    * ``new_lesion_recall_large``: found at the first sighting, among the GT new lesions whose equivalent
      diameter there is at least ``min_diameter_mm`` (RECIST's measurable size), with their count
      ``n_gt_new_large``.
    """
    first = status[status["true_class"].eq("new")]
    if first.empty:
        return {"new_lesion_recall_by_next": float("nan"), "new_lesion_recall_large": float("nan"), "n_gt_new_large": 0.0}

    def patients(frame: pd.DataFrame) -> pd.Series:  # one patient's tables have no patient column
        return frame["patient"] if "patient" in frame else pd.Series("", index=frame.index)

    index = status["session_index"].astype(int)
    found = {(p, int(g), int(i)) for p, g, i, q in zip(patients(status), status["gt_lesion_id"], index, status["pred_lesion_id"])
             if not pd.isna(g) and not pd.isna(q)}  # GT lesion-sessions with a paired prediction
    keys = list(zip(patients(first), first["gt_lesion_id"].astype(int), first["session_index"].astype(int)))
    by_next = [(p, g, i) in found or (p, g, i + 1) in found for p, g, i in keys]
    radii = {(p, int(g), int(i)): r for p, g, i, r in zip(patients(evaluation), evaluation["gt_lesion_id"],
                                                           evaluation["session_index"].astype(int), evaluation["gt_equivalent_radius_mm"])
             if not pd.isna(g)}
    large = [2 * radii.get(k, 0.0) >= min_diameter_mm for k in keys]
    n_large = sum(large)
    return {
        "new_lesion_recall_by_next": float(np.mean(by_next)),
        "new_lesion_recall_large": float(sum(k in found for k, big in zip(keys, large) if big) / n_large) if n_large else float("nan"),
        "n_gt_new_large": float(n_large),
    }


def headline_from_tables(status: pd.DataFrame, evaluation: pd.DataFrame, radius_mm: float = 25.0, far_mm: float = FAR_MM) -> dict:
    """The issue's "done when" figures from a cohort's status and evaluation rows (all sessions given;
    the figures use the follow-ups, session_index > 0, except the two counts of wrong answers,
    which count every session):

    * ``status_accuracy_present``: share of truly present lesion-sessions (present, split, merged)
      reported present (flagged ones count as not correct);
    * ``n_present_reported_vanished``; ``n_reported_present_far``: reported ``present`` with the
      centroid more than ``far_mm`` from the truth (:func:`status_counts`);
    * ``new_lesion_recall``: GT new lesions (at their first session) paired with a predicted new lesion;
      ``false_new_candidates_per_scan``: predicted new lesions at first sighting that found none, per
      follow-up scan;
    * ``cpm_at_r`` (r = ``radius_mm``) and ``followup_dice``: CPM@r and mean Dice over the GT lesions of
      the follow-ups (new lesions with their paired prediction);
    plus the counts behind them and :func:`new_lesion_detection`.
    """
    counts = status_counts(status, far_mm)
    figures: dict[str, float] = {**ratios_of_counts(counts), **counts, **new_lesion_detection(status, evaluation)}
    followups = evaluation[evaluation["session_index"].astype(int) > 0]
    outcomes = lesion_outcomes(followups, radius_mm)
    gt = outcomes["is_gt"]
    figures["n_gt_followup_lesions"] = float(gt.sum())
    figures["cpm_at_r"] = float(outcomes.loc[gt, "within_r"].mean()) if gt.any() else float("nan")
    figures["followup_dice"] = float(outcomes.loc[gt, "dice"].mean()) if gt.any() else float("nan")
    figures["radius_mm"] = float(radius_mm)
    return figures


def headline_figures(cohort_dir: str | Path, radius_mm: float = 25.0, far_mm: float = FAR_MM) -> dict:
    """:func:`headline_from_tables` of a cohort dataset folder: its ``status_evaluation`` and
    ``evaluation`` tables (written by :func:`lesionlocator.aggregate.cohort.aggregate_cohort`,
    partitioned by session_index)."""
    status = _read_partitioned(Path(cohort_dir) / "status_evaluation", STATUS_EVALUATION_SCHEMA)
    evaluation = _read_partitioned(Path(cohort_dir) / "evaluation", EVALUATION_SCHEMA)
    return headline_from_tables(status, evaluation, radius_mm, far_mm)


def _read_partitioned(folder: Path, schema: pa.Schema) -> pd.DataFrame:
    """A cohort table partitioned by session_index (hive folders), with its declared schema."""
    import pyarrow.dataset as ds

    if not folder.is_dir():
        raise InputError(folder, "no such table in the cohort dataset (was it aggregated with ground truth?)")
    partitioning = ds.partitioning(pa.schema([schema.field("session_index")]), flavor="hive")
    return ds.dataset(folder, schema=schema, format="parquet", partitioning=partitioning).to_table().to_pandas()
