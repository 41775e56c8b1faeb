"""Treatment response from tracked lesion measurements: RECIST 1.1 and volumetric response.

Every function works on a lesions frame (columns of :data:`lesionlocator.measure.lesions.LESION_SCHEMA`)
that may hold one patient or a whole cohort: all steps are vectorised group-by operations, so a
cohort partition of a million rows is assessed in about a second.
:func:`assess_response` composes named steps: target selection, sum of diameters and nadir, target,
non-target and overall response (with reappearance after CR), volumetric response, best response.

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
  reappears counts its diameter again. A target that is ``out_of_fov`` makes the session not
  evaluable (NE) unless the evaluable targets alone already show progression.
* **Nadir**: the smallest SoD before the session, baseline included.
* Target response: **CR** all targets gone (SoD 0 mm); **PD** SoD >= nadir * 1.2 and SoD - nadir
  >= 5 mm; **PR** SoD <= baseline * 0.7; **SD** otherwise (checked in this order).
* Non-target lesions (baseline lesions that are not targets): CR when all are gone, NE when one is
  out of the field of view, else NON-CR/NON-PD ("unequivocal progression" of non-targets needs a
  reader and is not assessed).
* **New lesions**: a lesion with voxels at a follow-up that had none at baseline (a lesion first
  seen after baseline) or whose tracking status is ``new_candidate``. Any new lesion is PD.
* Overall response per follow-up session: RECIST 1.1 Table 1 (targets x non-targets x new lesions).
* **Reappearance after CR**: a lesion that disappeared and reappears is not PD by itself; it is
  measured again (a target's diameter rejoins the SoD) and the response follows from all lesions.
  Only once the patient's overall response was CR (every target and non-target gone, no new lesion)
  does the reappearance of any lesion make that session PD, and its target and non-target responses
  PD where those lesions reappear (RECIST 1.1 as the RECIST Working Group clarifies it: lesions that
  disappear and reappear are not PD by themselves unless overall CR was assigned at the previous
  assessment; recist.eortc.org, FAQ "Does a new lesion always result in PD?"). CR holds until
  something reappears, so "after CR" is any later follow-up (an NE in between does not end it). CR
  confirmation is not applied (see below): the CR that reappearance ends may be unconfirmed.
* **Best overall response**: the best response (CR > PR > SD > NON-CR/NON-PD > PD > NE) among
  follow-ups up to and including the first PD. Confirmation of CR/PR (>= 4 weeks) and the SD
  minimum duration are not applied, since acquisition times are optional.

Volumetric response uses the summed volume of the same target lesions with thresholds equivalent to
RECIST for a sphere (V ~ d^3): PR <= -65 % from baseline (0.7^3 = 0.343) and PD >= +73 % from the
volume nadir (1.2^3 = 1.728), CR at zero volume, PD for new lesions; a nadir of zero followed by any
regrowth is PD. Thresholds are the ``metrics`` section of the config (:class:`~lesionlocator.core.config.MetricsConfig`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from lesionlocator.core.config import MetricsConfig

RESPONSES = ("CR", "PR", "SD", "NON-CR/NON-PD", "PD", "NE")
_RANK = {name: rank for rank, name in enumerate(RESPONSES)}

#: Tracking states a reviewer should look at.
FLAGGED_STATUSES = ("new_candidate", "merged", "split")


def flagged_for_review(lesions: pd.DataFrame) -> pd.Series:
    """Rows of a lesions frame to review: a flagged status, or a mask the fallback segmenter made."""
    return lesions["status"].isin(FLAGGED_STATUSES) | lesions["by_fallback"].eq(True)

#: One row per patient x session.
SESSION_SCHEMA = pa.schema(
    [
        pa.field("patient", pa.string(), nullable=False),
        pa.field("session", pa.string(), nullable=False),
        pa.field("session_index", pa.int32(), nullable=False),
        pa.field("is_baseline", pa.bool_(), nullable=False),
        pa.field("n_lesions", pa.int32(), nullable=False),
        pa.field("n_new_lesions", pa.int32(), nullable=False),
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
    needed = ["patient", "session", "session_index", "lesion_id", "status", "by_fallback", "organ", "voxel_count",
              "volume_ml", "longest_diameter_mm", "slice_thickness_mm"]  # fmt: skip
    lesions = lesions.reindex(columns=needed).reset_index(drop=True)
    names = [lesions["patient"]] + ([sessions["patient"]] if sessions is not None else [])
    codes, patient_names = pd.factorize(pd.concat(names, ignore_index=True), sort=True)
    lesions["patient"] = codes[: len(lesions)]
    for column in ("session", "status", "organ"):
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


def new_lesions(lesions: pd.DataFrame) -> pd.Series:
    """Per lesion row (with ``baseline_index``): a new lesion, i.e. a follow-up row with voxels of a
    lesion first seen after baseline or of status ``new_candidate``."""
    has_voxels = lesions["voxel_count"] > 0
    first_seen = lesions[has_voxels].groupby(["patient", "lesion_id"], sort=False)["session_index"].min()
    first_seen = lesions.join(first_seen.rename("first_seen"), on=["patient", "lesion_id"])["first_seen"]
    is_new = has_voxels & ((first_seen > lesions["baseline_index"]) | (lesions["status"] == "new_candidate"))
    return is_new & (lesions["session_index"] > lesions["baseline_index"])


def count_lesions(frame: pd.DataFrame, lesions: pd.DataFrame) -> pd.DataFrame:
    """Adds n_lesions (with voxels), n_new_lesions (:func:`new_lesions`) and total_volume_ml per session."""
    has_voxels = lesions["voxel_count"] > 0
    per_session = (
        lesions.assign(_present=has_voxels, _new=new_lesions(lesions), _vol=lesions["volume_ml"].where(has_voxels, 0.0))
        .groupby(KEY, sort=False)
        .agg(n_lesions=("_present", "sum"), n_new_lesions=("_new", "sum"), total_volume_ml=("_vol", "sum"))
    )
    frame = frame.join(per_session, on=KEY)
    for column in ("n_lesions", "n_new_lesions"):
        frame[column] = frame[column].fillna(0).astype("int32")
    frame["total_volume_ml"] = frame["total_volume_ml"].fillna(0.0).astype(float)
    return frame


def sum_of_diameters(frame: pd.DataFrame, lesions: pd.DataFrame, targets: pd.DataFrame) -> pd.DataFrame:
    """Adds the targets' sums per session: n_targets, has_targets, evaluable (no target out of the
    field of view), sum_diameters_mm and target_volume_ml (evaluable sessions only), and the recorded
    sums in tenths of a mm: sod_tenths (evaluable sessions only), sod_all_tenths (every target),
    sod_evaluable_tenths (the evaluable targets). A target without a row or voxels counts 0 mm, 0 mL."""
    grid = frame[["patient", "session_index"]].merge(targets[["patient", "lesion_id"]], on="patient")
    grid = grid.merge(
        lesions[["patient", "session_index", "lesion_id", "status", "longest_diameter_mm", "volume_ml"]],
        on=["patient", "session_index", "lesion_id"],
        how="left",
    )
    grid["_d10"] = tenths_mm(grid["longest_diameter_mm"].fillna(0.0))  # recorded diameters, 0.1 mm
    grid["volume_ml"] = grid["volume_ml"].fillna(0.0)
    grid["unevaluable"] = grid["status"].eq("out_of_fov")
    grid["_d10_ok"] = grid["_d10"].where(~grid["unevaluable"], 0)
    sums = grid.groupby(KEY, sort=False).agg(
        n_targets=("lesion_id", "size"),
        sod_all_tenths=("_d10", "sum"),
        sod_evaluable_tenths=("_d10_ok", "sum"),
        _vol=("volume_ml", "sum"),
        _unevaluable=("unevaluable", "sum"),
    )
    frame = frame.join(sums, on=KEY)
    frame["n_targets"] = frame["n_targets"].fillna(0).astype("int32")
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
    target out of the field of view unless the evaluable targets already progress; CR, PD, PR, SD.
    Exact: integer tenths of a mm times integer factors in units of 1e-4."""
    nadir, sod_evaluable = frame["nadir_tenths"], frame["sod_evaluable_tenths"]
    progression = (
        (sod_evaluable * 10_000 >= nadir * _pct_factor(criteria.pd_pct))
        & (sod_evaluable - nadir >= int(tenths_mm(criteria.pd_min_increase_mm)))
        & nadir.notna()
    )
    partial = frame["has_targets"] & ~frame["evaluable"]
    response = np.select(
        [~frame["has_targets"], partial & progression, partial, frame["sod_all_tenths"] == 0, progression,
         frame["sod_all_tenths"] * 10_000 <= frame["baseline_sod_tenths"] * _pct_factor(criteria.pr_pct)],
        [None, "PD", "NE", "CR", "PD", "PR"],
        default="SD",
    )  # fmt: skip
    return pd.Series(response, index=frame.index, dtype=object).where(~frame["is_baseline"], None)


def non_target_response(frame: pd.DataFrame, lesions: pd.DataFrame, targets: pd.DataFrame) -> pd.Series:
    """Non-target response per follow-up (None at baseline and without non-targets): NE when one is out
    of the field of view, CR when all are gone, else NON-CR/NON-PD."""
    baseline_present = lesions[(lesions["session_index"] == lesions["baseline_index"]) & (lesions["voxel_count"] > 0)]
    non_targets = baseline_present[["patient", "lesion_id"]].merge(
        targets[["patient", "lesion_id"]], how="left", indicator=True
    )
    non_targets = non_targets[non_targets["_merge"] == "left_only"][["patient", "lesion_id"]]
    grid = frame[KEY].merge(non_targets, on="patient")
    grid = grid.merge(lesions[["patient", "session_index", "lesion_id", "status", "voxel_count"]], how="left")
    grid["_present"] = grid["voxel_count"].fillna(0) > 0
    grid["_ne"] = grid["status"].eq("out_of_fov")
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
    the module docstring): every follow-up after the first overall CR is PD where any lesion has
    voxels, its target response where a target does, its non-target response where a non-target does."""
    patient = frame["patient"]
    was_cr = overall.eq("CR").groupby(patient).cummax()
    after_cr = was_cr.groupby(patient).shift(fill_value=False).astype(bool) & ~frame["is_baseline"]
    target, non_target, overall = frame["target_response"].copy(), frame["non_target_response"].copy(), overall.copy()
    target[after_cr & (frame["sod_all_tenths"] > 0)] = "PD"
    non_target[after_cr & frame["non_target_response"].eq("NON-CR/NON-PD")] = "PD"
    overall[after_cr & (frame["n_lesions"] > 0)] = "PD"
    return target, non_target, overall


def volumetric_response(frame: pd.DataFrame, criteria: MetricsConfig = MetricsConfig()) -> pd.Series:
    """Volumetric response per follow-up (None at baseline): PD for new lesions, NE with a target out
    of the field of view, CR at 0 mL, PD at ``volume_pd_pct`` over a nadir it exceeds, PR at
    ``volume_pr_pct`` from baseline, SD otherwise."""
    volume, nadir = frame["target_volume_ml"], frame["nadir_volume_ml"]
    progression = (volume >= nadir * (1 + criteria.volume_pd_pct / 100.0)) & (volume > nadir)
    response = np.select(
        [frame["n_new_lesions"] > 0, ~frame["has_targets"], frame["has_targets"] & ~frame["evaluable"], volume == 0,
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

    ``lesions`` has the columns of :data:`~lesionlocator.measure.lesions.LESION_SCHEMA`; ``sessions``
    (optional; columns patient, session, session_index) adds sessions that hold no lesion rows.
    Returns ``(sessions, patients)`` frames with the columns of :data:`SESSION_SCHEMA` and
    :data:`PATIENT_SCHEMA`, sorted by patient and session_index.
    """
    lesions, sessions, names = _encode_patients(lesions, sessions)
    frame = session_frame(lesions, sessions)
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
    """One row per patient (:data:`PATIENT_SCHEMA`): counts, baseline sum, best changes and best responses."""
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
    with_voxels = lesions[lesions["voxel_count"] > 0]
    patients["n_lesions"] = with_voxels.groupby("patient")["lesion_id"].nunique()
    flagged = lesions[flagged_for_review(lesions)]
    patients["n_flagged"] = flagged.groupby("patient")["lesion_id"].nunique()
    ids = targets.sort_values(["patient", "lesion_id"]).groupby("patient")["lesion_id"].agg(list)
    patients["target_lesion_ids"] = pd.Series([list(ids.get(p, [])) for p in patients.index], index=patients.index, dtype=object)
    for column in ("n_sessions", "n_targets", "n_lesions", "n_flagged"):
        patients[column] = patients[column].fillna(0).astype("int32")
    patients["first_pd_session_index"] = patients["first_pd_session_index"].astype("Int32")
    patients = patients.reset_index()
    return patients[PATIENT_SCHEMA.names]


def session_table(frame: pd.DataFrame) -> pa.Table:
    """Arrow table of a sessions frame with exactly :data:`SESSION_SCHEMA`."""
    return pa.Table.from_pandas(frame[SESSION_SCHEMA.names], schema=SESSION_SCHEMA, preserve_index=False).replace_schema_metadata(None)


def patient_table(frame: pd.DataFrame) -> pa.Table:
    """Arrow table of a patients frame with exactly :data:`PATIENT_SCHEMA`."""
    return pa.Table.from_pandas(frame[PATIENT_SCHEMA.names], schema=PATIENT_SCHEMA, preserve_index=False).replace_schema_metadata(None)
