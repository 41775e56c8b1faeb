"""The trainer's batch hook: prompt channel appended, targets cut to the prompted lesion at every scale."""

from __future__ import annotations

import types

import cc3d
import numpy as np
import pytest
import torch
from torch.nn.functional import interpolate

from lesionlocator.core.config import PromptNoise
from lesionlocator.train.trainer import nnUNetTrainerLesionLocator


def fake_trainer(mix):
    return types.SimpleNamespace(prompt_mix=mix, simulation=PromptNoise(), point_radius=5.0)


def batch_of(segs):
    seg = torch.from_numpy(np.stack(segs)[:, None].astype(np.float32))
    scales = [seg, interpolate(seg, scale_factor=0.5, mode="nearest-exact"),
              interpolate(seg, scale_factor=0.25, mode="nearest-exact")]
    data = torch.randn(seg.shape)
    return {"data": data, "target": scales, "keys": ["a"] * len(segs)}


@pytest.mark.parametrize("kind", ["point", "box", "mask"])
def test_add_prompts_cuts_every_scale_to_one_lesion(kind, two_lesions):
    segs = [two_lesions(0), two_lesions(1), np.zeros_like(two_lesions(0))]
    batch = batch_of(segs)
    out = nnUNetTrainerLesionLocator.add_prompts(fake_trainer({kind: 1.0}), batch, np.random.default_rng(0))
    assert out["data"].shape == (3, 2, *segs[0].shape)
    assert torch.equal(out["data"][:, :1], batch["data"])
    assert [t.shape for t in out["target"]] == [t.shape for t in batch["target"]]
    for b in range(2):
        full = out["target"][0][b, 0].numpy() > 0
        assert cc3d.connected_components(full, connectivity=26).max() == 1
        assert (segs[b][full] == 1).all() and full.sum() < segs[b].sum()
        assert out["data"][b, 1].numpy()[full].any()
        for t in out["target"][1:]:
            expected = interpolate(torch.from_numpy(full[None, None].astype(np.float32)), size=t.shape[2:],
                                   mode="nearest-exact")
            assert torch.equal(t[b:b + 1], expected)
    # A patch without lesion: empty prompt, empty target.
    assert not out["data"][2, 1].any() and not out["target"][0][2].any()


def test_network_gets_one_prompt_channel_more(two_lesions):
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    arch = {
        "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
        "arch_kwargs": {"n_stages": 3, "features_per_stage": [4, 8, 16], "conv_op": "torch.nn.modules.conv.Conv3d",
                        "kernel_sizes": [[3, 3, 3]] * 3, "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2]],
                        "n_conv_per_stage": [1, 1, 1], "n_conv_per_stage_decoder": [1, 1], "conv_bias": True,
                        "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
                        "norm_op_kwargs": {"eps": 1e-5, "affine": True}, "dropout_op": None,
                        "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True}},
        "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
    }
    plans = {"dataset_name": "x", "plans_name": "p", "configurations": {"3d_fullres": {
        "data_identifier": "x", "preprocessor_name": "DefaultPreprocessor", "batch_size": 2, "patch_size": [16, 16, 16],
        "spacing": [1, 1, 1], "normalization_schemes": ["ZScoreNormalization"], "use_mask_for_norm": [False],
        "architecture": arch, "batch_dice": False}},
        "original_median_spacing_after_transp": [1, 1, 1], "image_reader_writer": "SimpleITKIO",
        "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2], "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {}}
    pm = PlansManager(plans)
    net = nnUNetTrainerLesionLocator.build_network_architecture(pm, pm.get_configuration("3d_fullres"), 1, 2, False)
    assert net(torch.zeros(1, 2, 16, 16, 16)).shape == (1, 2, 16, 16, 16)


def test_time_budget_shrinks_and_regrows_the_epoch_count():
    logs = []
    fake = types.SimpleNamespace(time_limit_s=100.0, num_epochs=50, current_epoch=2,
                                 lr_scheduler=types.SimpleNamespace(max_steps=50), print_to_log_file=logs.append)
    fit = nnUNetTrainerLesionLocator._fit_time_budget
    fit(fake, 0, 40.0)  # 20 s/epoch, 60 s left -> 3 more epochs
    assert fake.num_epochs == 5 and fake.lr_scheduler.max_steps == 5
    fake.current_epoch = 4
    fit(fake, 0, 44.0)  # 11 s/epoch, 56 s left -> 5 more epochs
    assert fake.num_epochs == 9
    fake.current_epoch = 9
    fit(fake, 0, 99.0)  # over budget: stop now, never below the epochs done
    assert fake.num_epochs == 9
    fake.current_epoch, fake.time_limit_s = 10, 1e6
    fit(fake, 0, 10.0)  # plenty of time: back to the configured count, not beyond
    assert fake.num_epochs == 50
    assert logs


def test_light_augmentation_drops_only_the_intensity_degradations():
    from lesionlocator.train.trainer import LIGHT_AUGMENTATION_DROPS

    trainer = nnUNetTrainerLesionLocator.__new__(nnUNetTrainerLesionLocator)
    args = dict(patch_size=(16, 16, 16), rotation_for_DA=(-0.5, 0.5), deep_supervision_scales=None,
                mirror_axes=(0, 1, 2), do_dummy_2d_data_aug=False)

    def names(augmentation):
        trainer.augmentation = augmentation
        return [type(getattr(t, "transform", t)).__name__ for t in trainer.get_training_transforms(**args).transforms]

    full, light = names("nnunet"), names("light")
    assert set(LIGHT_AUGMENTATION_DROPS) <= set(full)
    assert not set(LIGHT_AUGMENTATION_DROPS) & set(light)
    assert [n for n in full if n not in LIGHT_AUGMENTATION_DROPS] == light
    assert {"SpatialTransform", "MirrorTransform", "MultiplicativeBrightnessTransform", "ContrastTransform"} <= set(light)
