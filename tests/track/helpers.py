"""Reading tracking outputs and matching them to the generator's ground truth."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

XYZ = ["centroid_x", "centroid_y", "centroid_z"]


def tracking_table(results: Path) -> pd.DataFrame:
    paths = sorted(Path(results).glob("patients/sub-*/ses-*/tracking.parquet"))
    return pd.concat([pd.read_parquet(p) for p in paths], ignore_index=True)


def matched(results: Path, truth: pd.DataFrame) -> pd.DataFrame:
    """Tracked (non-candidate) rows joined to the truth by patient, session and lesion ID, with the
    centroid distance in mm."""
    rows = tracking_table(results)
    rows = rows[~rows.is_candidate]
    merged = rows.merge(truth, on=["patient", "session", "lesion_id"], suffixes=("", "_gt"))
    merged["distance_mm"] = np.linalg.norm(merged[XYZ].to_numpy(float) - merged[[c + "_gt" for c in XYZ]].to_numpy(float), axis=1)
    return merged
