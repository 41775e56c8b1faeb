"""Test-retest repeatability: how far a lesion's measurements move on scans where nothing changed.

On a patient whose sessions repeat one scan (unchanged, or rigidly repositioned:
:mod:`synthetic.retest`), every lesion's volume and longest diameter should equal its baseline value
and every response should be SD. :func:`retest_changes` gives, per lesion and session, the change
from baseline: volume in % of the baseline volume, longest diameter in mm (both as measured in the
lesion table, :data:`lesionlocator.measure.lesions.LESION_SCHEMA`); :func:`retest_summary` the worst
of them with the responses. Only lesions prompted at baseline count (new lesions have no baseline).
"""

from __future__ import annotations

import pandas as pd


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
