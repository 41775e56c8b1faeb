"""Treatment response from tracked lesion measurements: RECIST 1.1 and volumetric response.

Every function works on a lesions frame (columns of :data:`lesionlocator.measure.lesions.LESION_SCHEMA`)
that may hold one patient or a whole cohort: all steps are vectorised group-by operations, so a
cohort partition of a million rows is assessed in about a second.

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
  is :attr:`ResponseCriteria.min_measurable_mm`.
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
regrowth is PD. Thresholds are configurable (:class:`ResponseCriteria`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

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


@dataclass(frozen=True)
class ResponseCriteria:
    """Thresholds of RECIST 1.1 and of the volumetric criteria (percent and mm / mL)."""

    min_measurable_mm: float = 10.0  # floor; thick baseline slices raise it (measurable_minimum_mm)
    max_targets: int = 5
    max_targets_per_organ: int = 2
    pr_pct: float = -30.0
    pd_pct: float = 20.0
    pd_min_increase_mm: float = 5.0
    volume_pr_pct: float = -65.0
    volume_pd_pct: float = 73.0

    @classmethod
    def from_config(cls, config) -> "ResponseCriteria":
        """From a :class:`lesionlocator.core.config.MetricsConfig` (None: the defaults)."""
        if config is None:
            return cls()
        return cls(
            min_measurable_mm=config.min_measurable_mm,
            max_targets=config.max_targets,
            max_targets_per_organ=config.max_targets_per_organ,
            pr_pct=config.pr_pct,
            pd_pct=config.pd_pct,
            pd_min_increase_mm=config.pd_min_increase_mm,
            volume_pr_pct=config.volume_pr_pct,
            volume_pd_pct=config.volume_pd_pct,
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


def measurable_minimum_mm(slice_thickness_mm, criteria: ResponseCriteria = ResponseCriteria()) -> np.ndarray:
    """RECIST 1.1 measurable minimum (mm) per scan: max(floor, 2 x slice thickness); NaN thickness: floor."""
    thickness = np.nan_to_num(np.asarray(slice_thickness_mm, dtype=float), nan=0.0)
    return np.maximum(criteria.min_measurable_mm, SLICE_THICKNESS_FACTOR * thickness)


def select_targets(lesions: pd.DataFrame, criteria: ResponseCriteria = ResponseCriteria()) -> pd.DataFrame:
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


def _session_frame(lesions: pd.DataFrame, sessions: pd.DataFrame | None) -> pd.DataFrame:
    frames = [lesions[["patient", "session", "session_index"]]]
    if sessions is not None:
        frames.append(sessions[["patient", "session", "session_index"]])
    frame = pd.concat(frames, ignore_index=True).drop_duplicates(KEY)
    frame["session_index"] = frame["session_index"].astype("int32")
    return frame.sort_values(KEY, kind="mergesort").reset_index(drop=True)


def _pct(value: pd.Series, reference: pd.Series) -> pd.Series:
    ref = reference.where(reference > 0)
    return (value - ref) / ref * 100.0


def assess_response(
    lesions: pd.DataFrame,
    sessions: pd.DataFrame | None = None,
    criteria: ResponseCriteria = ResponseCriteria(),
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """RECIST 1.1 and volumetric response of every patient and session.

    ``lesions`` has the columns of :data:`~lesionlocator.measure.lesions.LESION_SCHEMA`; ``sessions``
    (optional; columns patient, session, session_index) adds sessions that hold no lesion rows.
    Returns ``(sessions, patients)`` frames with the columns of :data:`SESSION_SCHEMA` and
    :data:`PATIENT_SCHEMA`, sorted by patient and session_index.
    """
    needed = ["patient", "session", "session_index", "lesion_id", "status", "by_fallback", "organ", "voxel_count",
              "volume_ml", "longest_diameter_mm", "slice_thickness_mm"]  # fmt: skip
    lesions = lesions.reindex(columns=needed).reset_index(drop=True)
    # work on integer patient codes: merging and taking string columns costs most of the time
    names = [lesions["patient"]] + ([sessions["patient"]] if sessions is not None else [])
    codes, patient_names = pd.factorize(pd.concat(names, ignore_index=True), sort=True)
    lesions["patient"] = codes[: len(lesions)]
    for column in ("session", "status", "organ"):
        lesions[column] = lesions[column].astype(object)
    if sessions is not None:
        sessions = sessions[["session", "session_index"]].assign(patient=codes[len(lesions) :])
    frame = _session_frame(lesions, sessions)
    frame["baseline_index"] = frame.groupby("patient", sort=False)["session_index"].transform("min")
    frame["is_baseline"] = frame["session_index"] == frame["baseline_index"]
    lesions = lesions.merge(frame[["patient", "baseline_index"]].drop_duplicates("patient"), on="patient", how="left")
    has_voxels = lesions["voxel_count"] > 0

    # all lesions: counts, volume, new lesions
    first_seen = lesions[has_voxels].groupby(["patient", "lesion_id"], sort=False)["session_index"].min()
    lesions = lesions.join(first_seen.rename("first_seen"), on=["patient", "lesion_id"])
    is_new = has_voxels & ((lesions["first_seen"] > lesions["baseline_index"]) | (lesions["status"] == "new_candidate"))
    is_new &= lesions["session_index"] > lesions["baseline_index"]
    per_session = (
        lesions.assign(_present=has_voxels, _new=is_new, _vol=lesions["volume_ml"].where(has_voxels, 0.0))
        .groupby(KEY, sort=False)
        .agg(n_lesions=("_present", "sum"), n_new_lesions=("_new", "sum"), total_volume_ml=("_vol", "sum"))
    )
    frame = frame.join(per_session, on=KEY)
    for column in ("n_lesions", "n_new_lesions"):
        frame[column] = frame[column].fillna(0).astype("int32")
    frame["total_volume_ml"] = frame["total_volume_ml"].fillna(0.0).astype(float)

    # targets: the cross product targets x sessions, absent rows count 0 mm
    targets = select_targets(lesions, criteria)
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
    target_sums = grid.groupby(KEY, sort=False).agg(
        n_targets=("lesion_id", "size"),
        _sod=("_d10", "sum"),
        _sod_evaluable=("_d10_ok", "sum"),
        _vol=("volume_ml", "sum"),
        _unevaluable=("unevaluable", "sum"),
    )
    frame = frame.join(target_sums, on=KEY)
    frame["n_targets"] = frame["n_targets"].fillna(0).astype("int32")
    has_targets = frame["n_targets"] > 0
    evaluable = has_targets & (frame["_unevaluable"].fillna(0) == 0)
    # sums of diameters in integer tenths of a mm (held as floats, exact far beyond any real sum)
    sod = frame["_sod"].where(evaluable)
    frame["sum_diameters_mm"] = sod / 10.0
    frame["target_volume_ml"] = frame["_vol"].where(evaluable)

    by_patient = frame.groupby("patient", sort=False)
    baseline_sod = sod.where(frame["is_baseline"]).groupby(frame["patient"]).transform("max")
    baseline_vol = frame["target_volume_ml"].where(frame["is_baseline"]).groupby(frame["patient"]).transform("max")
    nadir = sod.groupby(frame["patient"]).cummin().groupby(frame["patient"]).shift()
    nadir_vol = by_patient["target_volume_ml"].cummin().groupby(frame["patient"]).shift()
    # a session after an unevaluable one keeps the nadir of the sessions before
    nadir = nadir.groupby(frame["patient"]).ffill()
    nadir_vol = nadir_vol.groupby(frame["patient"]).ffill()
    frame["nadir_sum_mm"] = nadir / 10.0
    frame["pct_change_baseline"] = _pct(frame["sum_diameters_mm"], baseline_sod / 10.0)
    frame["pct_change_nadir"] = _pct(frame["sum_diameters_mm"], frame["nadir_sum_mm"])
    frame["pct_volume_change_baseline"] = _pct(frame["target_volume_ml"], baseline_vol)
    frame["pct_volume_change_nadir"] = _pct(frame["target_volume_ml"], nadir_vol)

    follow_up = ~frame["is_baseline"]
    new = frame["n_new_lesions"] > 0
    sod_any = frame["_sod_evaluable"]
    # exact comparisons: integer tenths of a mm times integer factors in units of 1e-4
    progression = (
        (sod_any * 10_000 >= nadir * _pct_factor(criteria.pd_pct))
        & (sod_any - nadir >= int(tenths_mm(criteria.pd_min_increase_mm)))
        & nadir.notna()
    )
    partial = has_targets & ~evaluable
    target = np.select(
        [~has_targets, partial & progression, partial, frame["_sod"] == 0, progression,
         frame["_sod"] * 10_000 <= baseline_sod * _pct_factor(criteria.pr_pct)],
        [None, "PD", "NE", "CR", "PD", "PR"],
        default="SD",
    )  # fmt: skip
    frame["target_response"] = pd.Series(target, index=frame.index, dtype=object).where(follow_up, None)

    non_target = _non_target_response(lesions, targets, frame)
    frame["non_target_response"] = non_target.where(follow_up, None)

    t, nt = frame["target_response"], frame["non_target_response"]
    overall = np.select(
        [new | t.eq("PD"), t.eq("CR") & (nt.eq("CR") | nt.isna()), t.eq("CR"), t.eq("PR"), t.eq("SD"), t.eq("NE"),
         t.isna() & nt.eq("CR"), t.isna() & nt.eq("NON-CR/NON-PD"), t.isna() & nt.eq("NE")],
        ["PD", "CR", "PR", "PR", "SD", "NE", "CR", "NON-CR/NON-PD", "NE"],
        default=None,
    )  # fmt: skip
    overall = pd.Series(overall, index=frame.index, dtype=object).where(follow_up, None)
    # after an overall CR, any lesion with voxels again is PD (RECIST 1.1, see the module docstring)
    was_cr = overall.eq("CR").groupby(frame["patient"]).cummax()
    after_cr = was_cr.groupby(frame["patient"]).shift(fill_value=False).astype(bool) & follow_up
    frame.loc[after_cr & (frame["_sod"] > 0), "target_response"] = "PD"
    frame.loc[after_cr & nt.eq("NON-CR/NON-PD"), "non_target_response"] = "PD"
    overall[after_cr & (frame["n_lesions"] > 0)] = "PD"
    frame["recist_response"] = overall

    volume, vol_nadir = frame["target_volume_ml"], nadir_vol
    vol_progression = (volume >= vol_nadir * (1 + criteria.volume_pd_pct / 100.0)) & (volume > vol_nadir)
    volumetric = np.select(
        [new, ~has_targets, partial, volume == 0, vol_progression,
         volume <= baseline_vol * (1 + criteria.volume_pr_pct / 100.0)],
        ["PD", None, "NE", "CR", "PD", "PR"],
        default="SD",
    )  # fmt: skip
    frame["volumetric_response"] = pd.Series(volumetric, index=frame.index, dtype=object).where(follow_up, None)

    patients = _patients(frame, lesions, targets)
    names = np.asarray(patient_names, dtype=object)
    frame["patient"] = names[frame["patient"].to_numpy()]
    patients["patient"] = names[patients["patient"].to_numpy()]
    return frame[SESSION_SCHEMA.names].reset_index(drop=True), patients


def _non_target_response(lesions: pd.DataFrame, targets: pd.DataFrame, frame: pd.DataFrame) -> pd.Series:
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
    return pd.Series(result, index=frame.index, dtype=object)


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


def _patients(frame: pd.DataFrame, lesions: pd.DataFrame, targets: pd.DataFrame) -> pd.DataFrame:
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
