"""Treatment response from tracked lesion measurements: RECIST 1.1 and volumetric response.

Every function works on a lesions frame (columns of :data:`lesionlocator.measure.lesions.LESION_SCHEMA`)
that may hold one patient or a whole cohort: all steps are vectorised group-by operations, so a
cohort partition of a million rows is assessed in about a second.
:func:`assess_response` composes named steps: target selection, sum of diameters and nadir, target,
non-target and overall response (with reappearance after CR), volumetric response, best response.
The new-lesion and review columns of the lesions table are derived here too (:func:`review_columns`,
used by :func:`lesionlocator.measure.lesions.measure_patient`).

Definitions (RECIST 1.1: Eisenhauer EA et al., "New response evaluation criteria in solid tumours:
revised RECIST guideline (version 1.1)", Eur J Cancer 2009;45(2):228-247):

* Baseline is each patient's first session (lowest ``session_index``).
* **Recorded diameters**: every longest diameter is rounded to 0.1 mm (half up), as a reader records
  it, and every threshold below is decided on those values with exact decimal arithmetic (integer
  tenths of a mm; percentages to 0.01 %). So a SoD of 23.1 mm against a baseline of 33.0 mm is
  exactly -30 % (PR), and 16.4 mm over a nadir of 11.4 mm is exactly +5.0 mm, where floating point
  would give -29.999... % and 4.999... mm. SoD and nadir are reported as these rounded sums.
* **Measurable**: longest diameter >= max(10 mm, 2 x slice thickness of the baseline scan) (RECIST
  1.1 section 3.1.1 and Appendix II: 10 mm assumes slices of at most 5 mm; thicker slices need twice
  the thickness). The slice thickness is the ``slice_thickness_mm`` column (the spacing along the
  image's slice axis); where it is unknown (null or absent) the 10 mm floor alone applies. The floor
  is ``metrics.min_measurable_mm``.
* **Target lesions**: measurable lesions present at baseline, at most 5 per patient and at most 2
  per organ, chosen by decreasing longest diameter (ties: lower lesion ID). The per-organ limit
  applies only where the ``organ`` column is known; lesions without organ are not limited per organ.
  Lymph-node short-axis rules are not applied (organ is usually unknown to the pipeline).
* **Sum of diameters (SoD)**: the sum of the targets' longest diameters; a target with no voxels
  at a session (vanished, merged into another) counts 0 mm, and a target that disappears and later
  reappears counts its diameter again. A target that is ``out_of_fov`` or ``lost`` (the tracker
  cleared a mask that jumped further than registration explains: its size there is unknown) makes
  the session not evaluable (NE) unless the evaluable targets alone already show progression.
* **Uncertain** lesions (the tracker's evidence conflicts; the mask is kept) are measured as present:
  their measured diameter and volume count, and a session with an uncertain target or non-target is
  never CR for it, even where its mask is empty (a doubtful lesion is not called gone).
* **Nadir**: the smallest SoD before the session, baseline included.
* Target response: **CR** all targets gone (SoD 0 mm, none uncertain); **PD** SoD >= nadir * 1.2 and
  SoD - nadir >= 5 mm; **PR** SoD <= baseline * 0.7; **SD** otherwise (checked in this order).
* Non-target lesions (baseline lesions that are not targets): CR when all are gone (none uncertain),
  NE when one is out of the field of view or lost, else NON-CR/NON-PD ("unequivocal progression" of
  non-targets needs a reader and is not assessed).
* **New lesions** are the lesions the tracker reports as new (``is_new``: first seen after baseline,
  a detector's candidate or a lesion a reader added at a follow-up; its first session is
  ``first_session_index``). Over all its patient's sessions a new lesion is (:func:`new_lesion_states`,
  the ``new_lesion`` column) **rejected** when a reader rejected it at any session; **confirmed** when
  a reader added or confirmed it, or it has voxels with status present, split or merged at a later
  session than its first (a detector's candidate only when its score at first sighting reached
  ``track.candidate_confirm_score``: a weak one seen again may be a lasting artefact, and a reader
  confirms it); **equivocal** otherwise. A confirmed new lesion is PD at every follow-up
  where it has voxels, from its first sighting on: RECIST 1.1 (section 4.3.2) dates progression at
  the first detection of a new lesion that a later scan confirms, so the first sighting's response
  becomes PD once the next session confirms it. An equivocal new lesion (RECIST's "equivocal new
  lesion": not yet confirmed) never changes a response: it is counted per session
  (``n_equivocal_new_lesions``), not in ``n_lesions``, and flags the session for review. A rejected
  one is ignored (no count, no response, no flag).
* Overall response per follow-up session: RECIST 1.1 Table 1 (targets x non-targets x new lesions).
* **Reappearance after CR**: a lesion that disappeared and reappears is not PD by itself; it is
  measured again (a target's diameter rejoins the SoD) and the response follows from all lesions.
  Only once the patient's overall response was CR (every target and non-target gone, no new lesion)
  does the reappearance of any lesion (an uncertain one included, equivocal new lesions aside) make
  that session PD, and its target and non-target responses PD where those lesions reappear (RECIST
  1.1 as the RECIST Working Group clarifies it: lesions that disappear and reappear are not PD by
  themselves unless overall CR was assigned at the previous assessment; recist.eortc.org, FAQ "Does
  a new lesion always result in PD?"). CR holds until
  something reappears, so "after CR" is any later follow-up (an NE in between does not end it). CR
  confirmation is not applied (see below): the CR that reappearance ends may be unconfirmed.
* **Best overall response**: the best response (CR > PR > SD > NON-CR/NON-PD > PD > NE) among
  follow-ups up to and including the first PD. Confirmation of CR/PR (>= 4 weeks) and the SD
  minimum duration are not applied, since acquisition times are optional.

Volumetric response uses the summed volume of the same target lesions with thresholds equivalent to
RECIST for a sphere (V ~ d^3): PR <= -65 % from baseline (0.7^3 = 0.343) and PD >= +73 % from the
volume nadir (1.2^3 = 1.728), CR at zero volume (none uncertain), PD for confirmed new lesions, NE
like the SoD; a nadir of zero followed by any regrowth is PD. Thresholds are the ``metrics`` section
of the config (:class:`~lesionlocator.core.config.MetricsConfig`).

**Review** (:func:`review_flags`; lesion column ``needs_review``, session columns ``needs_review`` and
``review_reasons``): a lesion-session is flagged when its status is new_candidate, merged, split,
uncertain or lost, its mask is the fallback segmenter's, the tracker gave a ``review_reason``, or it
is an equivocal new lesion with voxels; rows of a rejected new lesion are not (the reader decided).
Its ``review_reason`` names the most severe category (lost, uncertain, new lesion, split/merged,
fallback mask, other: :data:`REVIEW_CATEGORIES`) with the tracker's reason in brackets.
"""

from __future__ import annotations

from typing import Collection

import numpy as np
import pandas as pd
import pyarrow as pa

from lesionlocator.core.config import MetricsConfig

RESPONSES = ("CR", "PR", "SD", "NON-CR/NON-PD", "PD", "NE")
_RANK = {name: rank for rank, name in enumerate(RESPONSES)}

#: Tracking states a reviewer should look at.
FLAGGED_STATUSES = ("new_candidate", "merged", "split", "uncertain", "lost")
#: Statuses that make a lesion not evaluable at that session (its size there is unknown).
NOT_EVALUABLE_STATUSES = ("out_of_fov", "lost")
#: What a reader's follow-up prompt file did to a lesion at a session (the ``reader`` column; null: nothing).
READER_ACTIONS = ("corrected", "added", "confirmed", "rejected")
#: The state of a new lesion over its patient's sessions (the ``new_lesion`` column; null: seen at baseline).
NEW_LESION_STATES = ("confirmed", "equivocal", "rejected")
#: Statuses of a new lesion at a later session that confirm it (it has voxels there).
CONFIRMING_STATUSES = ("present", "split", "merged")
#: Why a lesion-session is flagged, most severe first (:func:`review_category`).
REVIEW_CATEGORIES = ("lost", "uncertain", "new lesion", "split/merged", "fallback", "other")
_NOT_FLAGGED = len(REVIEW_CATEGORIES)
#: A flagged row's reason when the tracker gave none, by category (the new-lesion ones by state).
_DEFAULT_REASONS = {
    "lost": "the mask moved further than registration explains, voxels cleared",
    "uncertain": "the evidence conflicts, mask kept and measured",
    "equivocal new lesion": "not confirmed by a reader, nor by a later scan of a strong candidate",
    "split": "the mask has separate fragments",
    "merged": "the mask touches another lesion's",
}


def new_lesion_states(lesions: pd.DataFrame, weak: Collection[tuple[str, int]] = ()) -> pd.Series:
    """Per row of a lesions frame, the state of its lesion if it is new (``is_new``), else None.

    Over all the lesion's rows of its patient: ``rejected`` when a reader rejected it at any session
    (``reader`` or ``status`` is ``rejected``); ``confirmed`` when a reader added or confirmed it at any
    session, or it has voxels with a status in :data:`CONFIRMING_STATUSES` at a session after its
    ``first_session_index`` and is not a *weak* candidate (``weak``: (patient, lesion_id) of detector
    candidates whose score at first sighting fell short of ``track.candidate_confirm_score``: seen
    again, they may be a lasting artefact, so only a reader confirms them); ``equivocal`` otherwise
    (RECIST 1.1's equivocal new lesion). Reads columns patient, lesion_id, session_index, status,
    voxel_count, is_new, first_session_index, reader.
    """
    state = np.full(len(lesions), None, dtype=object)
    new = lesions["is_new"].fillna(False).to_numpy(bool)
    if not new.any():
        return pd.Series(state, index=lesions.index, dtype=object)
    rows = lesions[new]
    reader = rows["reader"] if "reader" in rows else pd.Series(None, index=rows.index, dtype=object)
    seen_again = (rows["voxel_count"] > 0) & rows["status"].isin(CONFIRMING_STATUSES) & (rows["session_index"] > rows["first_session_index"])
    if weak:
        seen_again &= ~pd.MultiIndex.from_arrays([rows["patient"], rows["lesion_id"]]).isin(list(weak))
    flags = pd.DataFrame({"patient": rows["patient"], "lesion_id": rows["lesion_id"],
                          "rejected": reader.eq("rejected") | rows["status"].eq("rejected"),
                          "confirmed": reader.isin(("added", "confirmed")) | seen_again})  # fmt: skip
    per_lesion = flags.groupby(["patient", "lesion_id"], sort=False)[["rejected", "confirmed"]].transform("any")
    state[new] = np.select([per_lesion["rejected"], per_lesion["confirmed"]], ["rejected", "confirmed"], "equivocal")
    return pd.Series(state, index=lesions.index, dtype=object)


def review_flags(lesions: pd.DataFrame) -> pd.Series:
    """Per row, whether a reader should look at it: a status in :data:`FLAGGED_STATUSES`, a mask the
    fallback segmenter made, a reason the tracker gave (``review_reason``), or an equivocal new lesion
    with voxels. Rows of a new lesion a reader rejected are never flagged (it is ignored)."""
    state = lesions["new_lesion"] if "new_lesion" in lesions else pd.Series(None, index=lesions.index, dtype=object)
    reason = lesions["review_reason"] if "review_reason" in lesions else pd.Series(None, index=lesions.index, dtype=object)
    flagged = (
        lesions["status"].isin(FLAGGED_STATUSES)
        | lesions["by_fallback"].eq(True)
        | reason.notna()
        | (state.eq("equivocal") & (lesions["voxel_count"] > 0))
    )
    return flagged & ~state.eq("rejected")


def flagged_for_review(lesions: pd.DataFrame) -> pd.Series:
    """Rows of a lesions frame to review: its ``needs_review`` column, or :func:`review_flags` without one."""
    return lesions["needs_review"].astype(bool) if "needs_review" in lesions else review_flags(lesions)


def review_category(lesions: pd.DataFrame) -> np.ndarray:
    """Per row, the index in :data:`REVIEW_CATEGORIES` of its most severe reason to review (lost,
    uncertain, new lesion: an equivocal one or any ``new_candidate`` row, split/merged, fallback mask,
    other: a reason the tracker gave for an otherwise ordinary row), or ``len(REVIEW_CATEGORIES)``
    for a row that is not flagged (:func:`flagged_for_review`)."""
    status = lesions["status"]
    state = lesions["new_lesion"] if "new_lesion" in lesions else pd.Series(None, index=lesions.index, dtype=object)
    category = np.select(
        [status.eq("lost"), status.eq("uncertain"), status.eq("new_candidate") | (state.eq("equivocal") & (lesions["voxel_count"] > 0)),
         status.isin(("split", "merged")), lesions["by_fallback"].eq(True)],
        range(5),
        default=5,
    )  # fmt: skip
    return np.where(flagged_for_review(lesions).to_numpy(bool), category, _NOT_FLAGGED)


def review_reasons(lesions: pd.DataFrame, needs_review: pd.Series) -> pd.Series:
    """Per row, why it needs review (None where ``needs_review`` is false): the most severe category's
    label, with the tracker's ``review_reason`` in brackets, or a default explanation without one
    (e.g. ``"lost (its mask lies 54 mm from its propagated last mask)"``, ``"equivocal new lesion (not
    confirmed by a later scan or a reader)"``, ``"volume x6.1 since ses-02"`` for an otherwise
    ordinary row)."""
    out = np.full(len(lesions), None, dtype=object)
    flagged = needs_review.to_numpy(bool)
    rows = lesions[flagged]
    if rows.empty:
        return pd.Series(out, index=lesions.index, dtype=object)
    category = np.asarray(REVIEW_CATEGORIES, dtype=object)[review_category(rows.assign(needs_review=True))]
    state = rows["new_lesion"] if "new_lesion" in rows else pd.Series(None, index=rows.index, dtype=object)
    label = np.select(
        [category == "new lesion", category == "split/merged", category == "fallback", category == "other"],
        [state.map({"confirmed": "first sighting of a confirmed new lesion", "equivocal": "equivocal new lesion"}).fillna("new-lesion candidate"),
         rows["status"], "mask from the fallback segmenter", ""],
        default=category,
    )  # fmt: skip
    tracker = rows["review_reason"] if "review_reason" in rows else pd.Series(None, index=rows.index, dtype=object)
    detail = tracker.where(tracker.notna(), pd.Series(label, index=rows.index).map(_DEFAULT_REASONS))
    out[flagged] = [f"{a} ({b})" if a and isinstance(b, str) else (a or b) for a, b in zip(label, detail)]
    return pd.Series(out, index=lesions.index, dtype=object)


def review_columns(lesions: pd.DataFrame, weak: Collection[tuple[str, int]] = ()) -> pd.DataFrame:
    """A copy of a lesions frame with the new-lesion and review columns of
    :data:`~lesionlocator.measure.lesions.LESION_SCHEMA` derived: ``new_lesion``
    (:func:`new_lesion_states`, with ``weak`` candidates), ``needs_review`` (:func:`review_flags`) and ``review_reason``
    (:func:`review_reasons`; read as the tracker's reason). Missing inputs default: ``reader`` and
    ``review_reason`` null; ``is_new``: the lesion's first row with voxels is after its patient's
    baseline or it has a ``new_candidate`` row (a frame from before these columns);
    ``first_session_index``: the lesion's first session with voxels (else its first row)."""
    lesions = lesions.copy()
    for column in ("reader", "review_reason"):
        if column not in lesions:
            lesions[column] = None
    key = [lesions["patient"], lesions["lesion_id"]]
    if "first_session_index" not in lesions:
        first_row = lesions["session_index"].groupby(key).transform("min")
        first_seen = lesions["session_index"].where(lesions["voxel_count"] > 0).groupby(key).transform("min")
        lesions["first_session_index"] = first_seen.fillna(first_row).astype("int32")
    if "is_new" not in lesions:
        baseline = lesions.groupby("patient")["session_index"].transform("min")
        candidate = lesions["status"].eq("new_candidate").groupby(key).transform("any")
        lesions["is_new"] = (lesions["first_session_index"] > baseline) | candidate
    lesions["is_new"] = lesions["is_new"].fillna(False).astype(bool)
    lesions["new_lesion"] = new_lesion_states(lesions, weak)
    lesions["needs_review"] = review_flags(lesions)
    lesions["review_reason"] = review_reasons(lesions, lesions["needs_review"])
    return lesions

#: One row per patient x session.
SESSION_SCHEMA = pa.schema(
    [
        pa.field("patient", pa.string(), nullable=False),
        pa.field("session", pa.string(), nullable=False),
        pa.field("session_index", pa.int32(), nullable=False),
        pa.field("is_baseline", pa.bool_(), nullable=False),
        pa.field("n_lesions", pa.int32(), nullable=False),
        pa.field("n_new_lesions", pa.int32(), nullable=False),  # confirmed new lesions with voxels
        pa.field("n_equivocal_new_lesions", pa.int32(), nullable=False),  # unconfirmed ones: no effect on response
        pa.field("total_volume_ml", pa.float64(), nullable=False),
        pa.field("n_targets", pa.int32(), nullable=False),
        pa.field("sum_diameters_mm", pa.float64()),
        pa.field("nadir_sum_mm", pa.float64()),
        pa.field("pct_change_baseline", pa.float64()),
        pa.field("pct_change_nadir", pa.float64()),
        pa.field("target_volume_ml", pa.float64()),
        pa.field("pct_volume_change_baseline", pa.float64()),
        pa.field("pct_volume_change_nadir", pa.float64()),
        pa.field("target_response", pa.string()),
        pa.field("non_target_response", pa.string()),
        pa.field("recist_response", pa.string()),
        pa.field("volumetric_response", pa.string()),
        pa.field("needs_review", pa.bool_(), nullable=False),  # a lesion-session of it is flagged
        pa.field("review_reasons", pa.string()),  # its flagged rows' distinct reasons, most severe first, '; '-joined
    ]
)

#: One row per patient.
PATIENT_SCHEMA = pa.schema(
    [
        pa.field("patient", pa.string(), nullable=False),
        pa.field("n_sessions", pa.int32(), nullable=False),
        pa.field("n_lesions", pa.int32(), nullable=False),
        pa.field("n_targets", pa.int32(), nullable=False),
        pa.field("target_lesion_ids", pa.list_(pa.int64()), nullable=False),
        pa.field("baseline_sum_mm", pa.float64()),
        pa.field("best_pct_change_baseline", pa.float64()),
        pa.field("best_response", pa.string()),
        pa.field("first_pd_session_index", pa.int32()),
        pa.field("best_pct_volume_change", pa.float64()),
        pa.field("best_volumetric_response", pa.string()),
        pa.field("n_flagged", pa.int32(), nullable=False),
    ]
)


KEY = ["patient", "session_index"]
#: The lesion columns :func:`assess_response` reads (with the new-lesion and review columns; a frame
#: without those needs the ones :func:`review_columns` reads too).
ASSESSED_COLUMNS = ["patient", "session", "session_index", "lesion_id", "status", "by_fallback", "organ", "voxel_count", "volume_ml",
                    "longest_diameter_mm", "slice_thickness_mm", "is_new", "new_lesion", "needs_review", "review_reason"]  # fmt: skip

#: RECIST 1.1: on slices thicker than 5 mm a measurable lesion is at least twice the slice thickness.
SLICE_THICKNESS_FACTOR = 2.0


def tenths_mm(millimetres) -> np.ndarray:
    """Lengths in mm as integer tenths of a mm, rounded half up (a reader's recorded value)."""
    return np.floor(np.asarray(millimetres, dtype=float) * 10.0 + 0.5).astype(np.int64)


def _pct_factor(pct: float) -> int:
    """``1 + pct / 100`` as an integer in units of 1e-4 (the percentage to 0.01 %)."""
    return 10_000 + round(pct * 100.0)


def measurable_minimum_mm(slice_thickness_mm, criteria: MetricsConfig = MetricsConfig()) -> np.ndarray:
    """RECIST 1.1 measurable minimum (mm) per scan: max(floor, 2 x slice thickness); NaN thickness: floor."""
    thickness = np.nan_to_num(np.asarray(slice_thickness_mm, dtype=float), nan=0.0)
    return np.maximum(criteria.min_measurable_mm, SLICE_THICKNESS_FACTOR * thickness)


def select_targets(lesions: pd.DataFrame, criteria: MetricsConfig = MetricsConfig()) -> pd.DataFrame:
    """The target lesions of each patient, chosen at baseline: columns patient, lesion_id, organ.

    A lesion is measurable when its recorded (0.1 mm) longest diameter reaches
    :func:`measurable_minimum_mm` of its baseline scan (column ``slice_thickness_mm`` if present).
    """
    baseline = lesions.groupby("patient", sort=False)["session_index"].transform("min")
    thickness = lesions["slice_thickness_mm"] if "slice_thickness_mm" in lesions else np.full(len(lesions), np.nan)
    measurable = tenths_mm(lesions["longest_diameter_mm"]) >= tenths_mm(measurable_minimum_mm(thickness, criteria))
    candidates = lesions[
        (lesions["session_index"] == baseline)
        & (lesions["voxel_count"] > 0)
        & (lesions["status"] != "out_of_fov")
        & measurable
    ]
    candidates = candidates.sort_values(
        ["patient", "longest_diameter_mm", "lesion_id"], ascending=[True, False, True], kind="mergesort"
    )
    organ = candidates["organ"] if "organ" in candidates else pd.Series(None, index=candidates.index, dtype=object)
    per_organ = candidates.assign(_organ=organ).groupby(["patient", "_organ"], sort=False, dropna=True).cumcount()
    keep = organ.isna() | (per_organ.reindex(candidates.index) < criteria.max_targets_per_organ)
    chosen = candidates[keep]
    chosen = chosen[chosen.groupby("patient", sort=False).cumcount() < criteria.max_targets]
    return chosen[["patient", "lesion_id"]].assign(organ=organ.reindex(chosen.index)).reset_index(drop=True)


def _pct(value: pd.Series, reference: pd.Series) -> pd.Series:
    ref = reference.where(reference > 0)
    return (value - ref) / ref * 100.0


# -- the steps of assess_response ----------------------------------------------------------------
# Each takes the sessions frame (one row per patient x session, sorted by KEY; patients as integer
# codes) and returns it with its columns added, or a series aligned to it. Internal columns hold
# recorded diameters in integer tenths of a mm (``*_tenths``) and are dropped at the end.


def _encode_patients(lesions: pd.DataFrame, sessions: pd.DataFrame | None) -> tuple[pd.DataFrame, pd.DataFrame | None, np.ndarray]:
    """The columns the assessment reads, with patients as integer codes (merging and taking string
    columns costs most of the time); the code -> name array."""
    if not {"new_lesion", "needs_review"} <= set(lesions.columns):
        lesions = review_columns(lesions)
    lesions = lesions.reindex(columns=ASSESSED_COLUMNS).reset_index(drop=True)
    names = [lesions["patient"]] + ([sessions["patient"]] if sessions is not None else [])
    codes, patient_names = pd.factorize(pd.concat(names, ignore_index=True), sort=True)
    lesions["patient"] = codes[: len(lesions)]
    for column in ("session", "status", "organ", "new_lesion", "review_reason"):
        lesions[column] = lesions[column].astype(object)
    if sessions is not None:
        sessions = sessions[["session", "session_index"]].assign(patient=codes[len(lesions) :])
    return lesions, sessions, np.asarray(patient_names, dtype=object)


def session_frame(lesions: pd.DataFrame, sessions: pd.DataFrame | None) -> pd.DataFrame:
    """One row per patient x session of either frame, sorted by KEY, with baseline_index and is_baseline."""
    frames = [lesions[["patient", "session", "session_index"]]]
    if sessions is not None:
        frames.append(sessions[["patient", "session", "session_index"]])
    frame = pd.concat(frames, ignore_index=True).drop_duplicates(KEY)
    frame["session_index"] = frame["session_index"].astype("int32")
    frame = frame.sort_values(KEY, kind="mergesort").reset_index(drop=True)
    frame["baseline_index"] = frame.groupby("patient", sort=False)["session_index"].transform("min")
    frame["is_baseline"] = frame["session_index"] == frame["baseline_index"]
    return frame


def new_lesions(lesions: pd.DataFrame, state: str = "confirmed") -> pd.Series:
    """Per lesion row (with ``baseline_index``): a follow-up row with voxels of a new lesion in ``state``
    (``new_lesion`` column: confirmed or equivocal)."""
    follow_up = lesions["session_index"] > lesions["baseline_index"]
    return follow_up & (lesions["voxel_count"] > 0) & lesions["is_new"].eq(True) & lesions["new_lesion"].eq(state)


def count_lesions(frame: pd.DataFrame, lesions: pd.DataFrame) -> pd.DataFrame:
    """Adds per session n_lesions (with voxels; equivocal new lesions are not counted) and their
    total_volume_ml, n_new_lesions (confirmed, :func:`new_lesions`), n_equivocal_new_lesions, needs_review
    (a flagged row or an equivocal new lesion), review_reasons (:func:`session_review_reasons`), and the
    internal n_present: lesions measured as present (voxels or ``uncertain``), equivocal ones excluded."""
    not_equivocal = ~lesions["new_lesion"].eq("equivocal")
    counted = (lesions["voxel_count"] > 0) & not_equivocal
    present = counted | (lesions["status"].eq("uncertain") & not_equivocal)
    per_session = (
        lesions.assign(_counted=counted, _present=present, _new=new_lesions(lesions), _equivocal=new_lesions(lesions, "equivocal"),
                       _vol=lesions["volume_ml"].where(counted, 0.0), _review=lesions["needs_review"].astype(bool))
        .groupby(KEY, sort=False)
        .agg(n_lesions=("_counted", "sum"), n_new_lesions=("_new", "sum"), n_equivocal_new_lesions=("_equivocal", "sum"),
             total_volume_ml=("_vol", "sum"), n_present=("_present", "sum"), _review=("_review", "any"))
    )  # fmt: skip
    frame = frame.join(per_session, on=KEY)
    for column in ("n_lesions", "n_new_lesions", "n_equivocal_new_lesions", "n_present"):
        frame[column] = frame[column].fillna(0).astype("int32")
    frame["total_volume_ml"] = frame["total_volume_ml"].fillna(0.0).astype(float)
    frame["needs_review"] = frame["_review"].fillna(False).astype(bool) | (frame["n_equivocal_new_lesions"] > 0)
    reasons = frame[KEY].join(session_review_reasons(lesions).rename("_reasons"), on=KEY)["_reasons"].astype(object)
    frame["review_reasons"] = reasons.where(reasons.notna(), None)
    return frame


def session_review_reasons(lesions: pd.DataFrame) -> pd.Series:
    """The distinct ``review_reason`` values of each session's flagged rows, most severe category first
    (:data:`REVIEW_CATEGORIES`, then alphabetical), '; '-joined; indexed by KEY (sessions without a
    flagged row are absent)."""
    flagged = lesions.loc[lesions["needs_review"].astype(bool) & lesions["review_reason"].notna()]
    flagged = flagged[KEY + ["review_reason"]].assign(_category=review_category(flagged))
    flagged = flagged.sort_values(KEY + ["_category", "review_reason"], kind="mergesort").drop_duplicates(KEY + ["review_reason"])
    return flagged.groupby(KEY, sort=False)["review_reason"].agg("; ".join)


def sum_of_diameters(frame: pd.DataFrame, lesions: pd.DataFrame, targets: pd.DataFrame) -> pd.DataFrame:
    """Adds the targets' sums per session: n_targets, has_targets, evaluable (no target out of the
    field of view or lost), n_uncertain_targets, sum_diameters_mm and target_volume_ml (evaluable
    sessions only), and the recorded sums in tenths of a mm: sod_tenths (evaluable sessions only),
    sod_all_tenths (every target), sod_evaluable_tenths (the evaluable targets). A target without a
    row or voxels counts 0 mm, 0 mL."""
    grid = frame[["patient", "session_index"]].merge(targets[["patient", "lesion_id"]], on="patient")
    grid = grid.merge(
        lesions[["patient", "session_index", "lesion_id", "status", "longest_diameter_mm", "volume_ml"]],
        on=["patient", "session_index", "lesion_id"],
        how="left",
    )
    grid["_d10"] = tenths_mm(grid["longest_diameter_mm"].fillna(0.0))  # recorded diameters, 0.1 mm
    grid["volume_ml"] = grid["volume_ml"].fillna(0.0)
    grid["unevaluable"] = grid["status"].isin(NOT_EVALUABLE_STATUSES)
    grid["_uncertain"] = grid["status"].eq("uncertain")
    grid["_d10_ok"] = grid["_d10"].where(~grid["unevaluable"], 0)
    sums = grid.groupby(KEY, sort=False).agg(
        n_targets=("lesion_id", "size"),
        sod_all_tenths=("_d10", "sum"),
        sod_evaluable_tenths=("_d10_ok", "sum"),
        _vol=("volume_ml", "sum"),
        _unevaluable=("unevaluable", "sum"),
        n_uncertain_targets=("_uncertain", "sum"),
    )
    frame = frame.join(sums, on=KEY)
    frame["n_targets"] = frame["n_targets"].fillna(0).astype("int32")
    frame["n_uncertain_targets"] = frame["n_uncertain_targets"].fillna(0).astype("int32")
    frame["has_targets"] = frame["n_targets"] > 0
    frame["evaluable"] = frame["has_targets"] & (frame["_unevaluable"].fillna(0) == 0)
    # sums of diameters in integer tenths of a mm (held as floats, exact far beyond any real sum)
    frame["sod_tenths"] = frame["sod_all_tenths"].where(frame["evaluable"])
    frame["sum_diameters_mm"] = frame["sod_tenths"] / 10.0
    frame["target_volume_ml"] = frame["_vol"].where(frame["evaluable"])
    return frame


def baseline_and_nadir(values: pd.Series, patient: pd.Series, is_baseline: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Per session (rows sorted by KEY) its patient's baseline value and the nadir: the smallest
    value of the sessions before, baseline included; an unevaluable session (NaN) is skipped, so
    the session after it keeps the nadir of the sessions before."""
    baseline = values.where(is_baseline).groupby(patient).transform("max")
    nadir = values.groupby(patient).cummin().groupby(patient).shift()
    return baseline, nadir.groupby(patient).ffill()


def nadir_and_changes(frame: pd.DataFrame) -> pd.DataFrame:
    """Adds the baselines and nadirs of the sum of diameters (baseline_sod_tenths, nadir_tenths,
    nadir_sum_mm) and of the target volume (baseline_volume_ml, nadir_volume_ml), and the percentage
    changes from baseline and from the nadir."""
    patient, is_baseline = frame["patient"], frame["is_baseline"]
    baseline_sod, nadir = baseline_and_nadir(frame["sod_tenths"], patient, is_baseline)
    baseline_vol, nadir_vol = baseline_and_nadir(frame["target_volume_ml"], patient, is_baseline)
    frame = frame.assign(baseline_sod_tenths=baseline_sod, nadir_tenths=nadir, baseline_volume_ml=baseline_vol, nadir_volume_ml=nadir_vol)
    frame["nadir_sum_mm"] = nadir / 10.0
    frame["pct_change_baseline"] = _pct(frame["sum_diameters_mm"], baseline_sod / 10.0)
    frame["pct_change_nadir"] = _pct(frame["sum_diameters_mm"], frame["nadir_sum_mm"])
    frame["pct_volume_change_baseline"] = _pct(frame["target_volume_ml"], baseline_vol)
    frame["pct_volume_change_nadir"] = _pct(frame["target_volume_ml"], nadir_vol)
    return frame


def target_response(frame: pd.DataFrame, criteria: MetricsConfig = MetricsConfig()) -> pd.Series:
    """RECIST 1.1 target response per follow-up (None at baseline and without targets): NE with a
    target out of the field of view or lost unless the evaluable targets already progress; CR (not
    with an ``uncertain`` target), PD, PR, SD. Exact: integer tenths of a mm times integer factors in
    units of 1e-4."""
    nadir, sod_evaluable = frame["nadir_tenths"], frame["sod_evaluable_tenths"]
    progression = (
        (sod_evaluable * 10_000 >= nadir * _pct_factor(criteria.pd_pct))
        & (sod_evaluable - nadir >= int(tenths_mm(criteria.pd_min_increase_mm)))
        & nadir.notna()
    )
    partial = frame["has_targets"] & ~frame["evaluable"]
    response = np.select(
        [~frame["has_targets"], partial & progression, partial, (frame["sod_all_tenths"] == 0) & (frame["n_uncertain_targets"] == 0), progression,
         frame["sod_all_tenths"] * 10_000 <= frame["baseline_sod_tenths"] * _pct_factor(criteria.pr_pct)],
        [None, "PD", "NE", "CR", "PD", "PR"],
        default="SD",
    )  # fmt: skip
    return pd.Series(response, index=frame.index, dtype=object).where(~frame["is_baseline"], None)


def non_target_response(frame: pd.DataFrame, lesions: pd.DataFrame, targets: pd.DataFrame) -> pd.Series:
    """Non-target response per follow-up (None at baseline and without non-targets): NE when one is out
    of the field of view or lost, CR when all are gone (an ``uncertain`` one is not), else NON-CR/NON-PD."""
    baseline_present = lesions[(lesions["session_index"] == lesions["baseline_index"]) & (lesions["voxel_count"] > 0)]
    non_targets = baseline_present[["patient", "lesion_id"]].merge(
        targets[["patient", "lesion_id"]], how="left", indicator=True
    )
    non_targets = non_targets[non_targets["_merge"] == "left_only"][["patient", "lesion_id"]]
    grid = frame[KEY].merge(non_targets, on="patient")
    grid = grid.merge(lesions[["patient", "session_index", "lesion_id", "status", "voxel_count"]], how="left")
    grid["_present"] = (grid["voxel_count"].fillna(0) > 0) | grid["status"].eq("uncertain")
    grid["_ne"] = grid["status"].isin(NOT_EVALUABLE_STATUSES)
    summary = grid.groupby(KEY, sort=False).agg(_n=("lesion_id", "size"), _present=("_present", "sum"), _ne=("_ne", "sum"))
    joined = frame[KEY].join(summary, on=KEY)
    result = np.select(
        [joined["_n"].isna(), joined["_ne"] > 0, joined["_present"] == 0],
        [None, "NE", "CR"],
        default="NON-CR/NON-PD",
    )
    return pd.Series(result, index=frame.index, dtype=object).where(~frame["is_baseline"], None)


def overall_response(frame: pd.DataFrame) -> pd.Series:
    """RECIST 1.1 Table 1 per follow-up (None at baseline): target x non-target response x new lesions."""
    t, nt = frame["target_response"], frame["non_target_response"]
    overall = np.select(
        [(frame["n_new_lesions"] > 0) | t.eq("PD"), t.eq("CR") & (nt.eq("CR") | nt.isna()), t.eq("CR"), t.eq("PR"),
         t.eq("SD"), t.eq("NE"), t.isna() & nt.eq("CR"), t.isna() & nt.eq("NON-CR/NON-PD"), t.isna() & nt.eq("NE")],
        ["PD", "CR", "PR", "PR", "SD", "NE", "CR", "NON-CR/NON-PD", "NE"],
        default=None,
    )  # fmt: skip
    return pd.Series(overall, index=frame.index, dtype=object).where(~frame["is_baseline"], None)


def progression_after_complete_response(frame: pd.DataFrame, overall: pd.Series) -> tuple[pd.Series, pd.Series, pd.Series]:
    """The target, non-target and overall responses once reappearance after an overall CR is PD (see
    the module docstring): every follow-up after the first overall CR is PD where any lesion is present
    (voxels or ``uncertain``; equivocal new lesions aside), its target response where a target is, its
    non-target response where a non-target is."""
    patient = frame["patient"]
    was_cr = overall.eq("CR").groupby(patient).cummax()
    after_cr = was_cr.groupby(patient).shift(fill_value=False).astype(bool) & ~frame["is_baseline"]
    target, non_target, overall = frame["target_response"].copy(), frame["non_target_response"].copy(), overall.copy()
    target[after_cr & ((frame["sod_all_tenths"] > 0) | (frame["n_uncertain_targets"] > 0))] = "PD"
    non_target[after_cr & frame["non_target_response"].eq("NON-CR/NON-PD")] = "PD"
    overall[after_cr & (frame["n_present"] > 0)] = "PD"
    return target, non_target, overall


def volumetric_response(frame: pd.DataFrame, criteria: MetricsConfig = MetricsConfig()) -> pd.Series:
    """Volumetric response per follow-up (None at baseline): PD for confirmed new lesions, NE with a
    target out of the field of view or lost, CR at 0 mL (not with an ``uncertain`` target), PD at
    ``volume_pd_pct`` over a nadir it exceeds, PR at ``volume_pr_pct`` from baseline, SD otherwise."""
    volume, nadir = frame["target_volume_ml"], frame["nadir_volume_ml"]
    progression = (volume >= nadir * (1 + criteria.volume_pd_pct / 100.0)) & (volume > nadir)
    response = np.select(
        [frame["n_new_lesions"] > 0, ~frame["has_targets"], frame["has_targets"] & ~frame["evaluable"],
         (volume == 0) & (frame["n_uncertain_targets"] == 0),
         progression, volume <= frame["baseline_volume_ml"] * (1 + criteria.volume_pr_pct / 100.0)],
        ["PD", None, "NE", "CR", "PD", "PR"],
        default="SD",
    )  # fmt: skip
    return pd.Series(response, index=frame.index, dtype=object).where(~frame["is_baseline"], None)


def assess_response(
    lesions: pd.DataFrame,
    sessions: pd.DataFrame | None = None,
    criteria: MetricsConfig = MetricsConfig(),
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """RECIST 1.1 and volumetric response of every patient and session.

    ``lesions`` has the columns of :data:`~lesionlocator.measure.lesions.LESION_SCHEMA` (without the
    new-lesion and review columns, :func:`review_columns` derives them); ``sessions``
    (optional; columns patient, session, session_index) adds sessions that hold no lesion rows.
    Returns ``(sessions, patients)`` frames with the columns of :data:`SESSION_SCHEMA` and
    :data:`PATIENT_SCHEMA`, sorted by patient and session_index.
    """
    lesions, sessions, names = _encode_patients(lesions, sessions)
    frame = session_frame(lesions, sessions)
    rejected = lesions["new_lesion"].eq("rejected")
    if rejected.any():  # a new lesion a reader rejected is ignored (its sessions stay)
        lesions = lesions[~rejected]
    lesions = lesions.merge(frame[["patient", "baseline_index"]].drop_duplicates("patient"), on="patient", how="left")
    frame = count_lesions(frame, lesions)
    targets = select_targets(lesions, criteria)
    frame = nadir_and_changes(sum_of_diameters(frame, lesions, targets))
    frame["target_response"] = target_response(frame, criteria)
    frame["non_target_response"] = non_target_response(frame, lesions, targets)
    responses = progression_after_complete_response(frame, overall_response(frame))
    frame["target_response"], frame["non_target_response"], frame["recist_response"] = responses
    frame["volumetric_response"] = volumetric_response(frame, criteria)

    patients = patient_summary(frame, lesions, targets)
    frame["patient"] = names[frame["patient"].to_numpy()]
    patients["patient"] = names[patients["patient"].to_numpy()]
    return frame[SESSION_SCHEMA.names].reset_index(drop=True), patients


def best_response(responses: pd.Series, patients: pd.Series, order: pd.Series) -> pd.DataFrame:
    """Best overall response per patient: the best category up to and including the first PD.

    ``responses``, ``patients`` and ``order`` (session_index) are aligned series of follow-up
    sessions. Returns a frame indexed by patient with columns best_response, first_pd_session_index.
    """
    frame = pd.DataFrame({"patient": patients, "response": responses, "order": order}).dropna(subset=["response"])
    first_pd = frame[frame["response"] == "PD"].groupby("patient")["order"].min().rename("first_pd_session_index")
    frame = frame.join(first_pd, on="patient")
    frame = frame[frame["first_pd_session_index"].isna() | (frame["order"] <= frame["first_pd_session_index"])]
    rank = frame["response"].map(_RANK)
    best = rank.groupby(frame["patient"]).min().map(dict(enumerate(RESPONSES))).rename("best_response")
    return pd.concat([best, first_pd], axis=1)


def patient_summary(frame: pd.DataFrame, lesions: pd.DataFrame, targets: pd.DataFrame) -> pd.DataFrame:
    """One row per patient (:data:`PATIENT_SCHEMA`): counts (n_lesions: lesions with voxels, equivocal new
    lesions aside; n_flagged: lesions with a flagged row), baseline sum, best changes and best responses."""
    patients = frame.groupby("patient", sort=True).agg(
        n_sessions=("session_index", "size"),
        n_targets=("n_targets", "max"),
        baseline_sum_mm=("sum_diameters_mm", "first"),
    )
    patients["baseline_sum_mm"] = frame[frame["is_baseline"]].set_index("patient")["sum_diameters_mm"]
    follow = frame[~frame["is_baseline"]]
    patients["best_pct_change_baseline"] = follow.groupby("patient")["pct_change_baseline"].min()
    patients["best_pct_volume_change"] = follow.groupby("patient")["pct_volume_change_baseline"].min()
    recist = best_response(follow["recist_response"], follow["patient"], follow["session_index"])
    volumetric = best_response(follow["volumetric_response"], follow["patient"], follow["session_index"])
    patients = patients.join(recist).join(volumetric["best_response"].rename("best_volumetric_response"))
    with_voxels = lesions[(lesions["voxel_count"] > 0) & ~lesions["new_lesion"].eq("equivocal")]
    patients["n_lesions"] = with_voxels.groupby("patient")["lesion_id"].nunique()
    flagged = lesions[lesions["needs_review"].astype(bool)]
    patients["n_flagged"] = flagged.groupby("patient")["lesion_id"].nunique()
    patients["target_lesion_ids"] = pd.Series(_ids_per_patient(targets, patients.index), index=patients.index, dtype=object)
    for column in ("n_sessions", "n_targets", "n_lesions", "n_flagged"):
        patients[column] = patients[column].fillna(0).astype("int32")
    patients["first_pd_session_index"] = patients["first_pd_session_index"].astype("Int32")
    patients = patients.reset_index()
    return patients[PATIENT_SCHEMA.names]


def _ids_per_patient(targets: pd.DataFrame, patients: pd.Index) -> list[list[int]]:
    """Each patient's target lesion IDs, ascending (an empty list without targets): one sort and a
    slice per patient, not a Python aggregation per group."""
    targets = targets.sort_values(["patient", "lesion_id"], kind="mergesort")
    owner, ids = targets["patient"].to_numpy(), targets["lesion_id"].to_numpy()
    starts, stops = np.searchsorted(owner, patients, side="left"), np.searchsorted(owner, patients, side="right")
    return [ids[start:stop].tolist() for start, stop in zip(starts, stops)]


def session_table(frame: pd.DataFrame) -> pa.Table:
    """Arrow table of a sessions frame with exactly :data:`SESSION_SCHEMA`."""
    return pa.Table.from_pandas(frame[SESSION_SCHEMA.names], schema=SESSION_SCHEMA, preserve_index=False).replace_schema_metadata(None)


def patient_table(frame: pd.DataFrame) -> pa.Table:
    """Arrow table of a patients frame with exactly :data:`PATIENT_SCHEMA`."""
    return pa.Table.from_pandas(frame[PATIENT_SCHEMA.names], schema=PATIENT_SCHEMA, preserve_index=False).replace_schema_metadata(None)
