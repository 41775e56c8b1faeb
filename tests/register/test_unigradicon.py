"""The uniGradICON backend: weights only from a local file, the fixed -> moving convention, determinism.

Skipped without the optional extra lesionlocator[unigradicon]. The weights file is the state dict
of an untrained network's ``regis_net`` (283 MB, written once per session, deleted after).
"""

from __future__ import annotations

import urllib.request

import numpy as np
import pytest
import SimpleITK as sitk
import torch

pytest.importorskip("unigradicon", reason="the uniGradICON backend needs the optional extra lesionlocator[unigradicon]")

import icon_registration as icon  # noqa: E402
import unigradicon  # noqa: E402
from icon_registration import itk_wrapper  # noqa: E402
from icon_registration.network_wrappers import identity_map_multiN  # noqa: E402
from pydantic import ValidationError  # noqa: E402

from lesionlocator.core.config import RegisterConfig  # noqa: E402
from lesionlocator.core.errors import InputError  # noqa: E402
from lesionlocator.core.io import Geometry  # noqa: E402
from lesionlocator.register import unigradicon_backend as ugi  # noqa: E402
from lesionlocator.register.base import load_transform, save_transform  # noqa: E402
from lesionlocator.track.propagate import warp_mask  # noqa: E402
from tests.helpers import EMBEDDED_REAL, OBLIQUE_DIRECTION, make_image  # noqa: E402

IDENTITY = tuple(np.eye(3).ravel())
# itk's SWIG bindings and the package's deprecated itk calls warn on import and use: noise here.
pytestmark = [
    pytest.mark.filterwarnings("ignore:builtin type Swig"),
    pytest.mark.filterwarnings("ignore:WrapITK warning"),
]


@pytest.fixture(autouse=True)
def no_download(monkeypatch):
    """Any attempt to fetch weights fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"a download was attempted: {args[:1]}")

    monkeypatch.setattr(urllib.request, "urlretrieve", refuse)
    monkeypatch.setattr(unigradicon, "get_unigradicon", refuse)
    monkeypatch.setattr(unigradicon, "get_model_from_model_zoo", refuse)


@pytest.fixture(scope="session")
def untrained_weights(tmp_path_factory):
    """The released weights' format: ``torch.save(net.regis_net.state_dict())`` (untrained, 283 MB)."""
    path = tmp_path_factory.mktemp("unigradicon") / "Step_2_final.trch"
    torch.manual_seed(0)
    net = unigradicon.make_network([1, 1, 175, 175, 175], include_last_step=True)
    torch.save(net.regis_net.state_dict(), path)
    del net
    yield path
    path.unlink(missing_ok=True)


def _centre(image: sitk.Image) -> np.ndarray:
    return np.asarray(image.TransformContinuousIndexToPhysicalPoint([(s - 1) / 2 for s in image.GetSize()]))


def _blob_image(shape_zyx, spacing, origin, direction, centre_world, radius_mm=12.0) -> sitk.Image:
    """A CT-like image: air (-1000 HU) with one bright ball (1000 HU) at ``centre_world``."""
    image = sitk.Image([int(s) for s in shape_zyx[::-1]], sitk.sitkFloat32)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(direction)
    geometry = Geometry.of(image)
    index = np.indices(shape_zyx).reshape(3, -1).T.astype(float)
    world = geometry.index_to_world(index)
    inside = np.linalg.norm(world - np.asarray(centre_world), axis=1).reshape(shape_zyx) < radius_mm
    out = sitk.GetImageFromArray(np.where(inside, 1000.0, -1000.0).astype(np.float32))
    out.CopyInformation(image)
    return out


class CentroidShift(icon.RegistrationModule):
    """A stand-in network that registers by intensity centroids, following icon's definition of
    ``regis_net(A, B)``: a map phi with A(phi(x)) ~ B(x), i.e. phi(centroid of B) = centroid of A."""

    def forward(self, image_a, image_b):
        def centroid(image):
            weight = image.clamp(min=0)
            return (self.identity_map * weight).sum((2, 3, 4)) / weight.sum((2, 3, 4))

        shift = (centroid(image_a) - centroid(image_b))[:, :, None, None, None]
        return lambda coordinates: coordinates + shift


def test_conversion_equals_the_itk_transform():
    """itk_to_sitk_transform reproduces icon_registration's ITK transform, inside and outside the grid."""
    shape = np.array([1, 1, 14, 16, 18])
    identity = torch.from_numpy(identity_map_multiN(shape, 1.0 / (shape[2:] - 1)))
    phi = identity + 0.03 * torch.randn(identity.shape, generator=torch.Generator().manual_seed(0))
    moving = make_image((30, 25, 20), (1.5, 0.9, 3.0), (5.0, 6.0, 7.0), OBLIQUE_DIRECTION, seed=1)
    fixed = make_image((18, 40, 33), (1.1, 2.0, 2.5), (-30.0, 16.0, 40.0), IDENTITY, seed=2)
    moving_itk = ugi.to_itk(sitk.GetArrayFromImage(moving), moving)
    fixed_itk = ugi.to_itk(sitk.GetArrayFromImage(fixed), fixed)
    expected = itk_wrapper.create_itk_transform(phi, identity, moving_itk, fixed_itk)
    converted = ugi.itk_to_sitk_transform(expected)
    rng = np.random.default_rng(0)
    for index in rng.uniform(-4, np.asarray(fixed.GetSize()) + 3, size=(300, 3)):
        point = fixed.TransformContinuousIndexToPhysicalPoint(index.tolist())
        np.testing.assert_allclose(converted.TransformPoint(point), expected.TransformPoint(point), atol=1e-6)
    # The displacement part is not trivial (the check above would then only test the affine).
    field = sitk.DisplacementFieldTransform(converted.GetNthTransform(1)).GetDisplacementField()
    assert np.abs(sitk.GetArrayViewFromImage(field)).max() > 0.1


def test_transform_maps_follow_up_points_to_previous_points():
    """Through the backend (pre-processing, register_pair, conversion): fixed blob -> moving blob."""
    network = unigradicon.GradientICONSparse(CentroidShift(), icon.LNCC(sigma=2), lmbda=1.5)
    network.assign_identity_map([1, 1, 40, 40, 40])
    registration = ugi.UniGradICONRegistration(RegisterConfig(min_overlap=0.0, device="cpu"), network=network)
    fixed_probe = _blob_image((40, 50, 45), (2.0, 1.6, 2.5), (-40.0, -30.0, -50.0), OBLIQUE_DIRECTION, (0, 0, 0))
    moving_probe = _blob_image((36, 44, 50), (1.8, 1.9, 2.8), (-50.0, -40.0, -45.0), IDENTITY, (0, 0, 0))
    fixed_centre = _centre(fixed_probe) + np.array([5.0, -8.0, 10.0])
    moving_centre = _centre(moving_probe) + np.array([-6.0, 4.0, -9.0])
    fixed = _blob_image((40, 50, 45), (2.0, 1.6, 2.5), (-40.0, -30.0, -50.0), OBLIQUE_DIRECTION, fixed_centre)
    moving = _blob_image((36, 44, 50), (1.8, 1.9, 2.8), (-50.0, -40.0, -45.0), IDENTITY, moving_centre)

    transform = registration.register(fixed, moving)

    np.testing.assert_allclose(transform.TransformPoint(fixed_centre.tolist()), moving_centre, atol=1.0)
    assert registration.last_report["modality"] == {"fixed": "ct", "moving": "ct"}
    # The previous-session ball, warped onto the follow-up, lands on the follow-up ball.
    moving_mask = sitk.GetArrayFromImage(moving) > 0
    warped = warp_mask(transform, moving_mask, Geometry.of(moving), Geometry.of(fixed))
    fixed_mask = sitk.GetArrayFromImage(fixed) > 0
    overlap = (warped.full(fixed_mask.shape) & fixed_mask).sum() / fixed_mask.sum()
    assert overlap > 0.8


def test_intensities_match_the_package_preprocessing():
    ct = sitk.ReadImage(str(EMBEDDED_REAL / "example_ct_sm.nii.gz"))
    mr = sitk.ReadImage(str(EMBEDDED_REAL / "example_mr_sm.nii.gz"))
    for image, modality, package_name in ((ct, "ct", "ct"), (mr, "mr", "mri")):
        array = sitk.GetArrayFromImage(image).astype(np.float32)
        assert ugi.guess_modality(array) == modality
        ours, chosen = ugi.modality_normalizer("auto")(array)
        theirs = np.asarray(unigradicon.preprocess(ugi.to_itk(array, image), modality=package_name))
        assert chosen == modality
        np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_config_refuses_unigradicon_without_weights(tmp_path):
    with pytest.raises(ValidationError, match="unigradicon_weights"):
        RegisterConfig(backend="unigradicon")
    with pytest.raises(ValidationError, match="does not exist"):
        RegisterConfig(backend="unigradicon", unigradicon_weights=tmp_path / "missing.trch")
    with pytest.raises(ValidationError, match="track_checkpoint"):
        RegisterConfig(backend="lesionlocator_track")


def test_bad_weights_files_name_the_file(tmp_path):
    weights = tmp_path / "weights.trch"
    weights.write_bytes(b"not a torch file")
    config = RegisterConfig(backend="unigradicon", unigradicon_weights=weights, device="cpu")
    with pytest.raises(InputError, match="cannot read weights") as err:
        ugi.UniGradICONRegistration(config)
    assert err.value.path == weights
    torch.save({"conv.weight": torch.zeros(2, 2, 3, 3, 3)}, weights)
    with pytest.raises(InputError, match="do not fit the uniGradICON network") as err:
        ugi.UniGradICONRegistration(config)
    assert err.value.path == weights
    weights.unlink()  # gone after the config was validated
    with pytest.raises(InputError, match="weights file not found") as err:
        ugi.UniGradICONRegistration(config)
    assert err.value.path == weights


def test_instance_optimisation_is_refused_on_cpu_unless_forced(tmp_path):
    weights = tmp_path / "weights.trch"
    weights.write_bytes(b"never read: the refusal comes first")
    config = RegisterConfig(backend="unigradicon", unigradicon_weights=weights, device="cpu", unigradicon_instance_optimization=True)
    with pytest.raises(InputError, match="refused on CPU") as err:
        ugi.UniGradICONRegistration(config)
    assert "unigradicon_instance_optimization" in str(err.value.path)
    forced = config.model_copy(update={"unigradicon_force_cpu_instance_optimization": True})
    with pytest.raises(InputError, match="cannot read weights"):  # got past the refusal
        ugi.UniGradICONRegistration(forced)


@pytest.mark.slow
def test_weights_file_loads_at_175_and_reruns_are_identical(untrained_weights, tmp_path):
    """The production path (config -> weights file -> 175^3 network), then determinism on a real CT pair.

    Registering runs at 128^3 (the smallest size the network's five poolings take after its two
    downsamplings, a third of the 175^3 cost) with the same weights and a seeded last layer, so
    that the displacement is not zero; bench/bench_unigradicon.py times the 175^3 case.
    """
    config = RegisterConfig(backend="unigradicon", unigradicon_weights=untrained_weights, device="cpu")
    registration = ugi.UniGradICONRegistration(config)
    assert registration.network_shape == (175, 175, 175)
    loaded = registration.network.regis_net.state_dict()
    saved = torch.load(untrained_weights, weights_only=True)
    assert all(torch.equal(loaded[k], saved[k]) for k in saved)
    del registration, loaded

    state = dict(saved)
    generator = torch.Generator().manual_seed(1)
    for key in [k for k in state if "lastConv" in k]:
        state[key] = 0.02 * torch.randn(state[key].shape, generator=generator)
    backend = ugi.UniGradICONRegistration(config, network=ugi.build_network(state, untrained_weights, shape=(128, 128, 128)))
    moving = sitk.ReadImage(str(EMBEDDED_REAL / "example_ct.nii.gz"))
    fixed = sitk.Resample(moving, moving, sitk.TranslationTransform(3, (6.0, -4.0, 9.0)), sitk.sitkLinear, -1000.0)
    runs = [backend.register(fixed, moving) for _ in range(2)]
    assert backend.last_report["overlap"] >= config.min_overlap
    # Identical numbers, every parameter (HDF5 .h5 files carry write times, so bytes are compared
    # on the text .tfm form below, which holds the same numbers).
    for part in range(2):
        a, b = runs[0].GetNthTransform(part), runs[1].GetNthTransform(part)
        assert a.GetParameters() == b.GetParameters() and a.GetFixedParameters() == b.GetFixedParameters()
    field = sitk.DisplacementFieldTransform(runs[0].GetNthTransform(1)).GetDisplacementField()
    assert np.abs(sitk.GetArrayViewFromImage(field)).max() > 0.1
    saved_h5 = load_transform(save_transform(runs[0], tmp_path / "run.h5"))
    assert saved_h5.GetNthTransform(1).GetParameters() == runs[0].GetNthTransform(1).GetParameters()
