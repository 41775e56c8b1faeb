"""repositioned_truth: the baseline's lesion shapes sampled on a repositioned grid."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from lesionlocator.core.config import SyntheticConfig
from lesionlocator.core.io import Geometry, read_image
from lesionlocator.measure.lesions import measure_labels
from synthetic.cohort import generate_cohort
from synthetic.retest import repositioned_truth


def test_session_zero_is_the_baseline_mask_and_later_sessions_keep_each_lesion(tmp_path):
    config = SyntheticConfig(seed=2, n_patients=1, n_sessions=1, sources=["phantom:64x56x40"], lesions_per_patient=(2, 2),
                             diameter_mm=(18.0, 24.0))
    generate_cohort(config, tmp_path / "cohort")
    truth = read_image(tmp_path / "cohort" / "derivatives" / "groundtruth" / "sub-P001" / "ses-01" / "lesions.nii.gz")
    first = repositioned_truth(tmp_path / "cohort", config, "P001", 0)
    assert np.array_equal(sitk.GetArrayViewFromImage(first), sitk.GetArrayViewFromImage(truth))
    moved = repositioned_truth(tmp_path / "cohort", config, "P001", 2)
    assert (moved.GetSpacing(), moved.GetOrigin(), moved.GetDirection()) == (truth.GetSpacing(), truth.GetOrigin(), truth.GetDirection())
    geometry = Geometry.of(truth)
    before = measure_labels(sitk.GetArrayFromImage(truth).astype(np.int64), geometry).set_index("lesion_id")
    after = measure_labels(sitk.GetArrayFromImage(moved).astype(np.int64), geometry).set_index("lesion_id")
    assert list(after.index) == list(before.index) == [1, 2]
    assert not np.array_equal(sitk.GetArrayViewFromImage(moved), sitk.GetArrayViewFromImage(truth))
    assert (after["volume_ml"] / before["volume_ml"] - 1).abs().max() < 0.1  # the same shapes, another sampling
