"""Fixtures of the segmentation tests: a real CT with simulated lesions, tiny nnU-Net folders."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from tests.helpers import EMBEDDED_REAL, OBLIQUE_DIRECTION
from tests.segment.simulate import insert_lesions
from tests.segment.toy_model import toy_plans, write_toy_model


@pytest.fixture(scope="session")
def real_ct() -> sitk.Image:
    return sitk.ReadImage(str(EMBEDDED_REAL / "example_ct.nii.gz"))


@pytest.fixture(scope="session")
def lesion_case(real_ct):
    """The real CT with 5 simulated lesions whose IDs are non-consecutive and exceed 255."""
    return insert_lesions(real_ct, n_lesions=5, seed=3, ids=[7, 300, 70000, 2**31 - 1, 12])


@pytest.fixture(scope="session")
def small_ct(real_ct) -> sitk.Image:
    """A 40x48x44 cut of the real CT with anisotropic spacing and an oblique direction."""
    array = sitk.GetArrayFromImage(real_ct)[40:80, 30:78, 40:84]
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((1.7, 2.2, 3.1))
    image.SetOrigin((-20.0, 11.5, 100.0))
    image.SetDirection(OBLIQUE_DIRECTION)
    return image


@pytest.fixture(scope="session")
def toy_model(tmp_path_factory):
    """A 2-fold promptable ResEnc nnU-Net folder, patch 16^3, target spacing 2.5 x 2 x 2 mm (z, y, x)."""
    folder = tmp_path_factory.mktemp("model") / "Dataset999"
    plans = toy_plans(patch_size=(16, 16, 16), spacing_zyx=(2.5, 2.0, 2.0), features=(4, 8))
    return write_toy_model(folder, folds=(0, 1), plans=plans)


def centre_box(shape, half=4):
    c = np.asarray(shape) // 2
    return tuple(map(float, c - half)), tuple(map(float, c + half))
