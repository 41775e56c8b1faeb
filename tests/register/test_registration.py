"""The SimpleITK backend recovers known transforms of the real CT; transform files; bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from lesionlocator.core.config import RegisterConfig, validate_config
from lesionlocator.core.errors import ConfigError, InputError
from lesionlocator.core.io import write_image
from lesionlocator.register import (
    RegistrationError,
    build_registration,
    load_transform,
    register_pair,
    save_transform,
)
from tests.register.helpers import follow_up, known_transform, landmark_errors, real_ct

LINEAR = RegisterConfig(deformable=False)


@pytest.fixture(scope="module")
def ct() -> sitk.Image:
    return real_ct()


@pytest.mark.parametrize("kind", ["rigid", "affine"])
def test_linear_recovery_with_other_fov_spacing_direction(ct, kind):
    true = known_transform(ct, kind)
    fixed = follow_up(ct, true)  # 2.5 x 2.5 x 4 mm, rotated direction, upper 70% of the z FOV
    config = RegisterConfig(deformable=False, affine=(kind == "affine"))
    estimated = build_registration(config).register(fixed, ct)
    errors = landmark_errors(estimated, true, fixed)
    # Bound: one voxel of the 3 mm moving CT at worst, a third of it on average.
    assert errors.mean() < 1.5, errors.mean()
    assert errors.max() < 3.0, errors.max()


@pytest.mark.slow
def test_deformable_recovery_beats_affine(ct, tmp_path):
    true = known_transform(ct, "deformable")
    fixed = follow_up(ct, true)
    fixed_path, moving_path = write_image(fixed, tmp_path / "fixed.nii.gz"), write_image(ct, tmp_path / "moving.nii.gz")
    config = RegisterConfig()
    first = register_pair(fixed_path, moving_path, tmp_path / "a.tfm", config)
    estimated = load_transform(first)
    assert estimated.GetNthTransform(1).GetName() == "BSplineTransform"
    errors = landmark_errors(estimated, true, fixed)
    affine_only = landmark_errors(sitk.CompositeTransform([estimated.GetNthTransform(0)]), true, fixed)
    assert errors.mean() < 1.6, errors.mean()
    assert np.percentile(errors, 95) < 3.0, np.percentile(errors, 95)
    assert errors.mean() < 0.85 * affine_only.mean(), (errors.mean(), affine_only.mean())


def test_rerun_is_byte_identical_and_reuses_existing(ct, tmp_path):
    true = known_transform(ct, "deformable")
    fixed = follow_up(ct, true)
    fixed_path, moving_path = write_image(fixed, tmp_path / "f.nii.gz"), write_image(ct, tmp_path / "m.nii.gz")
    # Every stage, on a cheap coarse grid with few iterations.
    quick = RegisterConfig(grid_spacing_mm=8.0, iterations=20, deformable_iterations=5)
    a = register_pair(fixed_path, moving_path, tmp_path / "a.tfm", quick, report_path=tmp_path / "a.json")
    b = register_pair(fixed_path, moving_path, tmp_path / "b.tfm", quick, report_path=tmp_path / "b.json")
    assert load_transform(a).GetNumberOfTransforms() == 2
    assert a.read_bytes() == b.read_bytes()
    report_a, report_b = json.loads((tmp_path / "a.json").read_text()), json.loads((tmp_path / "b.json").read_text())
    assert report_a.pop("transform") != report_b.pop("transform")
    assert report_a == report_b and report_a["overlap"] > 0.9

    class Counting:
        calls = 0

        def register(self, fixed, moving):
            Counting.calls += 1
            return true  # an identity would fail the quality check (the pair is 15 mm apart)

    before = a.read_bytes()
    register_pair(fixed_path, moving_path, a, LINEAR, registration=Counting())
    assert Counting.calls == 0 and a.read_bytes() == before  # complete file reused
    a.write_text("#Insight Transform File V1.0\n#Transform 0\nTransform: Broken")  # unreadable: redone
    register_pair(fixed_path, moving_path, a, LINEAR, registration=Counting())
    assert Counting.calls == 1
    assert not list(tmp_path.glob(".*part*"))  # no temporary files left behind


def test_bspline_mesh_covers_the_body_not_the_field_of_view(ct):
    """A follow-up with 180 mm of air either side in x: the BSpline's mesh (and so the stage's cost)
    stays on the body's box, and the transform still composes [affine, bspline]."""
    true = known_transform(ct, "rigid")
    fixed = follow_up(ct, true, direction=(1, 0, 0, 0, 1, 0, 0, 0, 1))
    fixed = sitk.ConstantPad(fixed, [72, 0, 0], [72, 0, 0], -1024.0)  # 72 voxels of 2.5 mm each side
    quick = RegisterConfig(grid_spacing_mm=8.0, iterations=20, deformable_iterations=5, deformable_evaluations=5)
    estimated = build_registration(quick).register(fixed, ct)
    bspline = sitk.BSplineTransform(estimated.GetNthTransform(1))
    domain_x = bspline.GetTransformDomainPhysicalDimensions()[0]
    fov_x = fixed.GetSize()[0] * fixed.GetSpacing()[0]
    body = np.argwhere(sitk.GetArrayViewFromImage(fixed) > -300)
    body_x = (body[:, 2].max() - body[:, 2].min() + 1) * fixed.GetSpacing()[0]
    # the box is grown by one mesh spacing (8 voxels of 8 mm for 60 mm), the body mask is dilated by 2
    # voxels of the 8 mm grid, and each side may round out by one more
    assert body_x <= domain_x <= body_x + 2 * (8 + 3) * 8.0, (body_x, domain_x)
    assert domain_x <= fov_x - 2 * (180.0 - (8 + 3) * 8.0), (domain_x, fov_x)  # not the 180 mm of air each side


@pytest.mark.parametrize("suffix", [".tfm", ".h5"])
def test_saved_transform_reloads_identically(ct, tmp_path, suffix):
    transform = known_transform(ct, "deformable", seed=3)
    path = save_transform(transform, tmp_path / f"t{suffix}")
    loaded = load_transform(path)
    rng = np.random.default_rng(1)
    for point in rng.uniform(-150, 150, (20, 3)):
        assert loaded.TransformPoint(point.tolist()) == transform.TransformPoint(point.tolist())


def test_transform_file_errors(tmp_path):
    with pytest.raises(InputError, match="transform file not found"):
        load_transform(tmp_path / "missing.tfm")
    with pytest.raises(InputError, match="not a transform file name"):
        save_transform(sitk.AffineTransform(3), tmp_path / "t.nii.gz")


def test_constant_image_is_an_input_error(ct, tmp_path):
    blank = sitk.Image(ct.GetSize(), sitk.sitkFloat32)
    blank.CopyInformation(ct)
    blank_path, ct_path = write_image(blank, tmp_path / "blank.nii.gz"), write_image(ct, tmp_path / "ct.nii.gz")
    with pytest.raises(InputError, match="blank.nii.gz: cannot register.*constant"):
        register_pair(blank_path, ct_path, tmp_path / "t.tfm", LINEAR)
    assert not (tmp_path / "t.tfm").exists()


def test_scans_without_common_anatomy_raise(ct):
    """A previous scan of five slices cannot hold most of the follow-up's body: documented error."""
    slab = ct[:, :, 50:55]
    with pytest.raises(RegistrationError, match="do not cover the same anatomy"):
        build_registration(RegisterConfig(deformable=False, affine=False)).register(ct, slab)


def test_unigradicon_needs_weights(tmp_path):
    with pytest.raises(ConfigError, match="register: unigradicon_weights: required"):
        validate_config({"register": {"backend": "unigradicon"}})
    with pytest.raises(ConfigError, match="does not exist"):
        validate_config({"register": {"backend": "unigradicon", "unigradicon_weights": str(tmp_path / "none.pth")}})
    with pytest.raises(ConfigError, match="same length"):
        validate_config({"register": {"shrink_factors": [4, 2], "smoothing_sigmas": [1.0]}})


def test_real_cut_with_reset_origin_is_found_by_the_z_search():
    """example_ct_sm holds slices 82..111 of example_ct. As published, its header carries the full
    scan's origin (data/real/SOURCE.md; the embedded copy has the corrected origin): given that
    origin back, the true fixed->moving map is a z shift of 82 slices x 3 mm = 246 mm, far beyond a
    centroid alignment."""
    from tests.helpers import EMBEDDED_REAL

    full = sitk.ReadImage(str(EMBEDDED_REAL / "example_ct.nii.gz"))
    cut = sitk.ReadImage(str(EMBEDDED_REAL / "example_ct_sm.nii.gz"))
    assert np.allclose(cut.GetOrigin(), full.TransformIndexToPhysicalPoint((0, 0, 82)))
    cut.SetOrigin(full.GetOrigin())  # the published header's origin (slice 0 of the full scan)
    estimated = build_registration(RegisterConfig(deformable=False, affine=False)).register(cut, full)
    for index in ([20, 20, 5], [61, 50, 15], [100, 80, 25]):
        point = np.asarray(cut.TransformIndexToPhysicalPoint(index))
        expected = point + np.array([0.0, 0.0, 246.0])
        assert np.linalg.norm(np.asarray(estimated.TransformPoint(point.tolist())) - expected) < 3.0
