"""The released LesionLocatorTrack checkpoint format as a backend pair (registration network + UNet).

The test writes a checkpoint in exactly that format: an nnU-Net trained-model folder whose
``network_weights`` hold a uniGradICON network under ``reg_net.``, a 2-channel ResidualEncoderUNet
(tiny plans) under ``unet.`` and ``unet_patch_size``. Skipped without lesionlocator[unigradicon].
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch

pytest.importorskip("unigradicon", reason="the LesionLocatorTrack registration network needs lesionlocator[unigradicon]")

import unigradicon  # noqa: E402
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans  # noqa: E402

from lesionlocator.core.config import RegisterConfig, SegmentConfig  # noqa: E402
from lesionlocator.core.errors import InputError  # noqa: E402
from lesionlocator.register.base import build_registration  # noqa: E402
from lesionlocator.register.official_track import build_track_registration  # noqa: E402
from lesionlocator.segment.api import Prompt  # noqa: E402
from lesionlocator.segment.official import TrackUNetSegmenter, read_track_checkpoint  # noqa: E402
from lesionlocator.segment.session import build_segmenter  # noqa: E402
from tests.helpers import OBLIQUE_DIRECTION  # noqa: E402
from tests.segment.toy_model import toy_dataset_json, toy_plans, write_toy_model  # noqa: E402

PATCH = (16, 16, 16)
# itk's SWIG bindings and the package's deprecated itk calls warn on import and use: noise here.
pytestmark = [
    pytest.mark.filterwarnings("ignore:builtin type Swig"),
    pytest.mark.filterwarnings("ignore:WrapITK warning"),
]


def write_track_checkpoint(root, seed: int = 0):
    """``root/LesionLocatorTrack`` in the released layout, untrained weights (the UNet kept tiny)."""
    folder = root / "LesionLocatorTrack"
    (folder / "fold_0").mkdir(parents=True)
    plans = toy_plans(patch_size=PATCH, spacing_zyx=(2.5, 2.0, 2.0), features=(4, 8))
    dataset_json = toy_dataset_json()
    (folder / "plans.json").write_text(json.dumps(plans))
    (folder / "dataset.json").write_text(json.dumps(dataset_json))
    arch = plans["configurations"]["3d_fullres"]["architecture"]
    torch.manual_seed(seed)
    unet = get_network_from_plans(
        arch["network_class_name"], arch["arch_kwargs"], arch["_kw_requires_import"], 2, 2,
        allow_init=True, deep_supervision=False,
    )
    reg_net = unigradicon.make_network([1, 1, 175, 175, 175], include_last_step=True)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # a non-zero last layer, so that the registration is not the identity
        for name, parameter in reg_net.named_parameters():
            if "lastConv" in name:
                parameter.copy_(0.05 * torch.randn(parameter.shape, generator=generator))
    weights = {f"reg_net.{k}": v for k, v in reg_net.state_dict().items()}
    weights.update({f"unet.{k}": v for k, v in unet.state_dict().items()})
    weights["unet_patch_size"] = torch.tensor(PATCH)
    checkpoint = {
        "network_weights": weights,
        "optimizer_state": {"state": {}, "param_groups": [{"lr": 0.01}]},
        "logging": {"mean_fg_dice": [np.float64(0.5)]},
        "current_epoch": 1,
        "init_args": {"plans": plans, "configuration": "3d_fullres", "fold": 0, "dataset_json": dataset_json},
        "trainer_name": "LesionLocatorTrainerTrack",
        "inference_allowed_mirroring_axes": (0, 1, 2),
    }
    torch.save(checkpoint, folder / "fold_0" / "checkpoint_final.pth")
    return root, weights


@pytest.fixture(scope="module")
def track_checkpoint(tmp_path_factory):
    root, weights = write_track_checkpoint(tmp_path_factory.mktemp("track") / "LesionLocatorCheckpoint")
    yield root, weights
    (root / "LesionLocatorTrack" / "fold_0" / "checkpoint_final.pth").unlink(missing_ok=True)


def _ct_pair():
    rng = np.random.default_rng(0)
    array = np.full((30, 36, 32), -1000.0, np.float32)
    array[5:25, 6:30, 5:27] = 40.0 + 20 * rng.standard_normal((20, 24, 22))
    array[12:18, 14:20, 12:18] = 300.0
    moving = sitk.GetImageFromArray(array)
    moving.SetSpacing((1.7, 2.2, 3.1))
    moving.SetOrigin((-20.0, 11.5, 100.0))
    moving.SetDirection(OBLIQUE_DIRECTION)
    fixed = sitk.GetImageFromArray(np.roll(array, 2, axis=1))
    fixed.CopyInformation(moving)
    return fixed, moving


def test_checkpoint_is_split_into_its_two_networks(track_checkpoint):
    root, weights = track_checkpoint
    checkpoint = read_track_checkpoint(root)  # the checkpoint root resolves to its LesionLocatorTrack folder
    assert checkpoint.folder.name == "LesionLocatorTrack"
    assert checkpoint.unet_patch_size == PATCH and checkpoint.folds == [0]
    reg, unet = checkpoint.reg_states[0], checkpoint.unet_states[0]
    assert set(reg) == {k.removeprefix("reg_net.") for k in weights if k.startswith("reg_net.")}
    assert all(k.startswith("regis_net.") for k in reg)
    assert all(torch.equal(unet[k.removeprefix("unet.")], v) for k, v in weights.items() if k.startswith("unet."))


@pytest.mark.slow
def test_registration_uses_its_network_and_nnunet_normalisation(track_checkpoint):
    root, weights = track_checkpoint
    config = RegisterConfig(backend="lesionlocator_track", track_checkpoint=root, device="cpu", min_overlap=0.0)
    registration = build_registration(config)  # the production path: 175^3, the checkpoint's reg_net
    assert registration.network_shape == (175, 175, 175)
    loaded = registration.network.regis_net.state_dict()
    assert all(torch.equal(loaded[k.removeprefix("reg_net.regis_net.")], v) for k, v in weights.items() if k.startswith("reg_net."))
    # The plans' CTNormalization (toy plans: clip -200..400, mean 60, std 80), not uniGradICON's HU window.
    values = np.array([[[-1000.0, 0.0, 60.0, 1000.0]]], np.float32)
    normalised, name = registration.normalize(values)
    assert name == "nnunet:CTNormalization"
    np.testing.assert_allclose(normalised, (np.clip(values, -200, 400) - 60) / 80, rtol=1e-6)
    del registration

    small = build_track_registration(config, network_shape=(128, 128, 128))  # a third of the 175^3 cost on CPU
    fixed, moving = _ct_pair()
    transform = small.register(fixed, moving)
    field = sitk.DisplacementFieldTransform(transform.GetNthTransform(1)).GetDisplacementField()
    assert np.abs(sitk.GetArrayViewFromImage(field)).max() > 0.1  # the seeded last layer moves points
    centre = fixed.TransformContinuousIndexToPhysicalPoint([(s - 1) / 2 for s in fixed.GetSize()])
    assert np.all(np.isfinite(transform.TransformPoint(centre)))
    assert small.last_report["network"] == "lesionlocator_track"


def test_unet_serves_as_a_segment_engine_model(track_checkpoint):
    root, weights = track_checkpoint
    config = SegmentConfig(
        segmenter="nnunet", checkpoint=root / "LesionLocatorTrack", device="cpu", mirroring=False, fallback="none"
    )
    segmenter = build_segmenter(config)
    assert isinstance(segmenter, TrackUNetSegmenter)
    assert not segmenter.mask_as_box  # the track UNet was trained with the warped mask as its prompt
    model = segmenter._model_for("mask")
    assert model.patch_size == PATCH and model.trainer_name == "LesionLocatorTrainerTrack"
    state = model.networks[0].state_dict()
    assert all(torch.equal(state[k.removeprefix("unet.")], v) for k, v in weights.items() if k.startswith("unet."))
    fixed, _ = _ct_pair()
    mask = np.zeros(sitk.GetArrayViewFromImage(fixed).shape, bool)
    mask[12:18, 16:22, 12:18] = True
    result = segmenter.segment(fixed, [Prompt(7, "mask", mask=mask)])
    assert result.labels.shape == mask.shape and result.labels.dtype == np.uint32


def test_a_plain_nnunet_folder_is_not_a_track_checkpoint(tmp_path):
    folder = write_toy_model(tmp_path / "LesionLocatorTrack", plans=toy_plans(patch_size=PATCH, features=(4, 8)))
    with pytest.raises(InputError, match="not a LesionLocatorTrack checkpoint") as err:
        read_track_checkpoint(folder)
    assert err.value.path == folder / "fold_0" / "checkpoint_final.pth"
