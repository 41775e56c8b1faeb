"""Test-retest repeatability: how far a lesion's measurements move on scans where nothing changed.

On a patient whose sessions repeat one scan (unchanged, or rigidly repositioned:
:mod:`synthetic.retest`), every lesion's volume and longest diameter should equal its baseline value
and every response should be SD. :func:`retest_changes` gives, per lesion and session, the change
from baseline: volume in % of the baseline volume, longest diameter in mm (both as measured in the
lesion table, :data:`lesionlocator.measure.lesions.LESION_SCHEMA`); :func:`retest_summary` the worst
of them with the responses. Only lesions prompted at baseline count (new lesions have no baseline).
:func:`carried_dice` compares a session's masks with the baseline's carried there through the known
repositioning (how much the masks themselves move, beyond the measurements).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import SimpleITK as sitk

from lesionlocator.core.regions import dice


def retest_changes(lesions: pd.DataFrame) -> pd.DataFrame:
    """Per baseline lesion and follow-up: columns patient, lesion_id, session_index, status, volume_ml,
    longest_diameter_mm, volume_change_pct, diameter_change_mm (from the lesion's baseline row)."""
    is_new = lesions["is_new"].fillna(False).astype(bool) if "is_new" in lesions else pd.Series(False, index=lesions.index)
    frame = lesions[~is_new][["patient", "lesion_id", "session_index", "status", "volume_ml", "longest_diameter_mm"]]
    first = frame.groupby("patient")["session_index"].transform("min")
    baseline = frame[frame["session_index"] == first][["patient", "lesion_id", "volume_ml", "longest_diameter_mm"]]
    follow = frame[frame["session_index"] > first].merge(baseline, on=["patient", "lesion_id"], how="left", suffixes=("", "_baseline"))
    follow = follow.assign(
        volume_change_pct=(follow["volume_ml"] - follow["volume_ml_baseline"]) / follow["volume_ml_baseline"] * 100.0,
        diameter_change_mm=follow["longest_diameter_mm"] - follow["longest_diameter_mm_baseline"],
    )
    return follow.drop(columns=["volume_ml_baseline", "longest_diameter_mm_baseline"]).reset_index(drop=True)


def retest_summary(lesions: pd.DataFrame, sessions: pd.DataFrame | None = None) -> dict:
    """The worst changes over every baseline lesion and follow-up (``max_abs_volume_change_pct``,
    ``max_abs_diameter_change_mm``), the lesion-sessions counted, the statuses reported, and (with the
    sessions table of :func:`lesionlocator.measure.response.assess_response`) the RECIST responses."""
    changes = retest_changes(lesions)
    summary = {
        "lesion_sessions": int(len(changes)),
        "max_abs_volume_change_pct": float(changes["volume_change_pct"].abs().max()) if len(changes) else 0.0,
        "max_abs_diameter_change_mm": float(changes["diameter_change_mm"].abs().max()) if len(changes) else 0.0,
        "statuses": sorted(changes["status"].unique().tolist()),
    }
    if sessions is not None:
        follow = sessions[~sessions["is_baseline"]]
        summary["recist_responses"] = sorted(follow["recist_response"].dropna().unique().tolist())
    return summary


def carried_dice(baseline: sitk.Image, session: sitk.Image, transform: sitk.Transform) -> dict[int, float]:
    """Per lesion ID of ``baseline`` (an instance label map), the Dice of ``session``'s mask of that ID
    against the baseline's mask carried onto ``session``'s grid through ``transform`` (world points of
    the session to the baseline's, mm LPS, as :func:`synthetic.retest.repositioning` gives): the binary
    mask interpolated linearly and kept where it is at least 0.5, so that a mask carried onto its own
    grid by the identity is itself (a point a rounding error outside the baseline's grid takes its
    nearest voxel). Geometries (spacing, origin, direction) of both maps are honoured."""
    base = sitk.GetArrayViewFromImage(baseline)
    moved = sitk.GetArrayViewFromImage(session)
    resampler = sitk.ResampleImageFilter()
    resampler.SetReferenceImage(session)
    resampler.SetTransform(transform)
    resampler.SetInterpolator(sitk.sitkLinear)
    resampler.SetOutputPixelType(sitk.sitkFloat32)
    resampler.SetUseNearestNeighborExtrapolator(True)
    result = {}
    for lesion_id in (int(i) for i in np.unique(base) if i != 0):
        mask = sitk.GetImageFromArray((base == lesion_id).astype(np.float32))
        mask.CopyInformation(baseline)
        carried = sitk.GetArrayFromImage(resampler.Execute(mask))  # a copy: the image is a temporary
        result[lesion_id] = dice(carried >= 0.5, moved == lesion_id)
    return result
