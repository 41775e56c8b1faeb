"""BodyZScoreNormalization: CT soft-tissue contrast survives, MR is normalised on tissue, nnU-Net finds it."""

from __future__ import annotations

from os.path import join

import numpy as np
import SimpleITK as sitk

from lesionlocator.core.config import REPO_ROOT
from lesionlocator.segment.normalization import BodyZScoreNormalization, body_mask, body_zscore


def _array(name: str) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(REPO_ROOT / "data" / "real" / name))).astype(np.float32)


def test_ct_soft_tissue_contrast_is_kept_unlike_a_plain_zscore():
    ct = _array("example_ct.nii.gz")
    body = body_mask(ct)
    assert 0.3 < body.mean() < 0.9 and ct[body].min() > -700  # air and lungs are outside
    normalised = body_zscore(ct)
    lo, hi = np.percentile(ct[body], [0.5, 99.5])
    per_50_hu = 50 * (normalised.max() - normalised.min()) / (hi - lo)  # a 50 HU lesion, in normalised units
    plain_per_50_hu = 50 / ct.std()  # the same with a plain per-image z-score (air dominates its std)
    assert per_50_hu > 0.25 and per_50_hu > 2.5 * plain_per_50_hu
    inside = normalised[body]
    assert abs(float(inside.mean())) < 0.1 and 0.8 < float(inside.std()) < 1.2


def test_mr_is_normalised_on_tissue_and_result_is_deterministic():
    mr = _array("example_mr_sm.nii.gz")
    first, second = body_zscore(mr), body_zscore(mr)
    assert first.dtype == np.float32 and np.array_equal(first, second)
    assert abs(float(first[body_mask(mr)].mean())) < 0.1


def test_flat_image_gives_zeros_not_nans():
    out = body_zscore(np.full((4, 5, 6), 7.0, np.float32))
    assert np.isfinite(out).all() and not out.any()


def test_nnunet_finds_the_scheme_and_the_preprocessor_by_name():
    import nnunetv2
    from nnunetv2.utilities.find_class_by_name import recursive_find_python_class

    found = recursive_find_python_class(join(nnunetv2.__path__[0], "preprocessing", "normalization"),
                                        "BodyZScoreNormalization", "nnunetv2.preprocessing.normalization")
    assert found is BodyZScoreNormalization
    preprocessor = recursive_find_python_class(join(nnunetv2.__path__[0], "preprocessing"),
                                               "LesionLocatorPreprocessor", "nnunetv2.preprocessing")
    assert preprocessor is not None and preprocessor.__module__ == "lesionlocator.segment.normalization"
    ct = _array("example_ct_sm.nii.gz")
    scheme = found(use_mask_for_norm=False, intensityproperties={})
    np.testing.assert_array_equal(scheme.run(ct.copy()), body_zscore(ct))
