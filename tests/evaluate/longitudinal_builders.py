"""A hand-built three-session patient for the status and new-lesion metrics: label maps on an oblique,
anisotropic grid, the tracking tables the tracker would write and the generator's GT status table.

Ground truth (GT IDs): lesion 1 present throughout; lesion 2 present, then gone at session 2
(``vanished``, expected where it was); lesion 7 new at session 1, present at session 2.
The tracker's answers: lesion 1 ``vanished`` at session 1 (wrong: truly present), ``uncertain`` at
session 2 (flagged); lesion 2 ``present`` at session 2 on other anatomy ~30 mm away (a lost lesion
called present); new lesion 1_000_001 at session 1, two slices (5 mm) off lesion 7, then on it;
a false new candidate 2_000_001 at session 2.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage

from lesionlocator.evaluate.longitudinal import SessionFiles
from tests.lesion_builders import ellipsoid, oblique_geometry, write_labels

SESSIONS = ["01", "02", "03"]
CENTRES = {1: (10, 20, 20), 2: (10, 50, 22), 7: (16, 30, 55), "elsewhere": (20, 54, 40), "false": (6, 58, 60)}  # z y x
RADII_MM = {1: 6.0, 2: 5.0, 7: 4.0, "elsewhere": 4.0, "false": 3.0}


def geometry():
    return oblique_geometry(size=(80, 72, 32))


def ball(geometry, key, shift_z: int = 0) -> np.ndarray:
    z, y, x = CENTRES[key]
    return ellipsoid(geometry, (z + shift_z, y, x), (RADII_MM[key],) * 3)


def world_centroid(geometry, mask: np.ndarray) -> np.ndarray:
    """scipy's centre of mass through the image geometry (world mm)."""
    return geometry.index_to_world(np.array(ndimage.center_of_mass(mask)))


def maps(geometry):
    """GT and predicted label maps per session index (uint32, z y x)."""
    shape = geometry.shape_zyx
    gt = [np.zeros(shape, np.uint32) for _ in SESSIONS]
    pred = [np.zeros(shape, np.uint32) for _ in SESSIONS]
    for t in range(3):
        gt[t][ball(geometry, 1)] = 1
    gt[0][ball(geometry, 2)] = 2
    gt[1][ball(geometry, 2)] = 2
    gt[1][ball(geometry, 7)] = 7
    gt[2][ball(geometry, 7)] = 7
    pred[0][ball(geometry, 1)] = 1
    pred[0][ball(geometry, 2)] = 2
    pred[1][ball(geometry, 2)] = 2
    pred[1][ball(geometry, 7, shift_z=2)] = 1_000_001
    pred[2][ball(geometry, 1)] = 1  # uncertain: mask kept
    pred[2][ball(geometry, "elsewhere")] = 2  # lost, called present
    pred[2][ball(geometry, 7)] = 1_000_001
    pred[2][ball(geometry, "false")] = 2_000_001
    return gt, pred


#: (session index, lesion ID, status, is_new, first_session_index) of the tracking tables
TRACKED = [
    (0, 1, "present", False, 0), (0, 2, "present", False, 0),
    (1, 1, "vanished", False, 0), (1, 2, "present", False, 0), (1, 1_000_001, "new_candidate", True, 1),
    (2, 1, "uncertain", False, 0), (2, 2, "present", False, 0), (2, 1_000_001, "present", True, 1),
    (2, 2_000_001, "new_candidate", True, 2),
]  # fmt: skip

#: (session index, GT lesion ID, status) of the GT table
TRUTH = [(0, 1, "present"), (0, 2, "present"), (1, 1, "present"), (1, 2, "present"), (1, 7, "new"),
         (2, 1, "present"), (2, 2, "vanished"), (2, 7, "present")]  # fmt: skip


def write_patient(folder: Path, patient: str = "P1", new_lesions_apart: bool = False, old_tracking: bool = False):
    """Write the maps and tables; returns (sessions, truth, geometry, gt maps, predicted maps).

    ``new_lesions_apart``: the new lesions of session 1 go to a candidates map, not the lesions map
    (what the tracker wrote before new lesions joined it); ``old_tracking``: tracking tables without
    ``is_new`` and ``first_session_index``.
    """
    g = geometry()
    gt, pred = maps(g)
    sessions, truth_rows = [], []
    for t, session in enumerate(SESSIONS):
        lesions = pred[t]
        candidates = None
        if new_lesions_apart and t == 1:
            lesions = np.where(pred[t] >= 1_000_000, 0, pred[t])
            candidates = write_labels(np.where(pred[t] >= 1_000_000, pred[t], 0), g, folder / f"{session}_candidates.nii.gz")
        rows = []
        for index, lesion_id, status, is_new, first in TRACKED:
            if index != t:
                continue
            mask = pred[t] == lesion_id
            centre = world_centroid(g, mask) if mask.any() else np.full(3, np.nan)
            row = {"patient": patient, "session": session, "session_index": t, "lesion_id": lesion_id, "status": status,
                   "is_candidate": status == "new_candidate", "voxel_count": int(mask.sum()),
                   "centroid_x": centre[0], "centroid_y": centre[1], "centroid_z": centre[2]}  # fmt: skip
            if not old_tracking:
                row |= {"is_new": is_new, "first_session_index": first}
            rows.append(row)
        tracking = folder / f"{session}_tracking.parquet"
        pd.DataFrame(rows).astype({"session_index": "int32"}).to_parquet(tracking)
        sessions.append(
            SessionFiles(session, t, write_labels(lesions, g, folder / f"{session}_pred.nii.gz"),
                         write_labels(gt[t], g, folder / f"{session}_gt.nii.gz"), tracking, candidates)
        )  # fmt: skip
        for index, lesion_id, status in TRUTH:
            if index == t:
                # where a lesion is not visible, the generator gives its expected position: where it was
                mask = gt[t] == lesion_id if (gt[t] == lesion_id).any() else gt[t - 1] == lesion_id
                truth_rows.append((patient, session, t, lesion_id, status, *world_centroid(g, mask)))
    columns = ["patient", "session", "session_index", "lesion_id", "status", "centroid_x", "centroid_y", "centroid_z"]
    return sessions, pd.DataFrame(truth_rows, columns=columns), g, gt, pred
