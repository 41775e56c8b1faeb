"""carried_dice: a lesion mask carried through a known rigid transform, on oblique anisotropic grids."""

from __future__ import annotations

import numpy as np
import pandas as pd
import SimpleITK as sitk

from lesionlocator.core.io import Geometry, image_from_array
from lesionlocator.evaluate.retest import carried_dice, retest_changes
from tests.lesion_builders import oblique_geometry


def _balls(geometry: Geometry, centres_mm: dict[int, np.ndarray], radius_mm: float) -> np.ndarray:
    index = np.stack(np.meshgrid(*[np.arange(n) for n in geometry.shape_zyx], indexing="ij"), axis=-1)
    world = geometry.index_to_world(index)
    labels = np.zeros(geometry.shape_zyx, np.uint32)
    for lesion_id, centre in centres_mm.items():
        labels[np.linalg.norm(world - centre, axis=-1) <= radius_mm] = lesion_id
    return labels


def test_identity_carries_each_mask_onto_itself():
    geometry = oblique_geometry()
    centre = geometry.index_to_world(np.array([12.0, 28.0, 32.0]))
    labels = image_from_array(_balls(geometry, {3: centre, 7: centre + [14.0, 0.0, 0.0]}, 6.0), geometry)
    assert carried_dice(labels, labels, sitk.Euler3DTransform()) == {3: 1.0, 7: 1.0}


def test_a_known_rigid_motion_is_undone_on_another_oblique_grid():
    baseline_grid = oblique_geometry(spacing=(0.8, 0.9, 2.5))
    session_grid = oblique_geometry(spacing=(1.0, 0.7, 2.0), degrees=-20.0)
    centre = baseline_grid.index_to_world(np.array([12.0, 28.0, 32.0]))
    transform = sitk.Euler3DTransform(tuple(centre.tolist()), 0.1, -0.05, 0.2, (4.0, -3.0, 2.0))  # session world -> baseline's
    moved_centre = np.asarray(transform.GetInverse().TransformPoint(tuple(centre.tolist())))
    baseline = image_from_array(_balls(baseline_grid, {5: centre}, 7.0), baseline_grid)
    session = image_from_array(_balls(session_grid, {5: moved_centre}, 7.0), session_grid)
    assert carried_dice(baseline, session, transform)[5] > 0.85
    assert carried_dice(baseline, session, sitk.Euler3DTransform())[5] < 0.6  # without the motion it does not fit
    empty = image_from_array(np.zeros(session_grid.shape_zyx, np.uint32), session_grid)
    assert carried_dice(baseline, empty, transform) == {5: 0.0}


def test_retest_changes_are_relative_to_each_lesions_baseline():
    lesions = pd.DataFrame({
        "patient": "P1", "lesion_id": [1, 1, 2, 2], "session_index": [0, 1, 0, 1], "status": "present",
        "volume_ml": [2.0, 2.1, 4.0, 3.0], "longest_diameter_mm": [10.0, 10.5, 20.0, 19.0],
    })  # fmt: skip
    changes = retest_changes(lesions)
    assert changes["volume_change_pct"].round(6).tolist() == [5.0, -25.0]
    assert changes["diameter_change_mm"].tolist() == [0.5, -1.0]
