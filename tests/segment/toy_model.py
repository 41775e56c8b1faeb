"""Tiny nnU-Net v2 trained-model folders with random weights, in exactly the released format.

For tests and benchmarks only: the folder holds ``plans.json``, ``dataset.json`` and
``fold_N/checkpoint_final.pth`` (a dict with ``network_weights``, ``trainer_name``, ``init_args``,
``inference_allowed_mirroring_axes`` and an nnU-Net-like training log with numpy scalars), and the
network takes two input channels (image + prompt), as the released LesionLocator models do.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

ARCHITECTURES = {
    "ResidualEncoderUNet": "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet",
    "PlainConvUNet": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
}


def toy_plans(
    patch_size: Sequence[int] = (32, 32, 32),
    spacing_zyx: Sequence[float] = (3.0, 3.0, 3.0),
    architecture: str = "ResidualEncoderUNet",
    features: Sequence[int] = (8, 16, 32),
    normalization: str = "CTNormalization",
    transpose_forward: Sequence[int] = (0, 1, 2),
) -> dict:
    n_stages = len(features)
    strides = [[1, 1, 1]] + [[2, 2, 2]] * (n_stages - 1)
    arch_kwargs = {
        "n_stages": n_stages,
        "features_per_stage": list(features),
        "conv_op": "torch.nn.modules.conv.Conv3d",
        "kernel_sizes": [[3, 3, 3]] * n_stages,
        "strides": strides,
        "n_conv_per_stage_decoder": [1] * (n_stages - 1),
        "conv_bias": True,
        "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
        "norm_op_kwargs": {"eps": 1e-05, "affine": True},
        "dropout_op": None,
        "dropout_op_kwargs": None,
        "nonlin": "torch.nn.LeakyReLU",
        "nonlin_kwargs": {"inplace": True},
    }
    if architecture == "ResidualEncoderUNet":
        arch_kwargs["n_blocks_per_stage"] = [1] * n_stages
    else:
        arch_kwargs["n_conv_per_stage"] = [1] * n_stages
    resampling = {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None}
    return {
        "dataset_name": "Dataset999_ToyLesions",
        "plans_name": "nnUNetResEncUNetPlans",
        "original_median_spacing_after_transp": list(spacing_zyx),
        "original_median_shape_after_transp": [100, 100, 100],
        "image_reader_writer": "SimpleITKIO",
        "transpose_forward": list(transpose_forward),
        "transpose_backward": [int(i) for i in np.argsort(transpose_forward)],
        "configurations": {
            "3d_fullres": {
                "data_identifier": "nnUNetPlans_3d_fullres",
                "preprocessor_name": "DefaultPreprocessor",
                "batch_size": 2,
                "patch_size": list(patch_size),
                "median_image_size_in_voxels": [100, 100, 100],
                "spacing": list(spacing_zyx),
                "normalization_schemes": [normalization],
                "use_mask_for_norm": [False],
                "resampling_fn_data": "resample_data_or_seg_to_shape",
                "resampling_fn_seg": "resample_data_or_seg_to_shape",
                "resampling_fn_data_kwargs": resampling,
                "resampling_fn_seg_kwargs": {**resampling, "is_seg": True, "order": 1},
                "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
                "resampling_fn_probabilities_kwargs": {**resampling, "order": 1},
                "architecture": {
                    "network_class_name": ARCHITECTURES[architecture],
                    "arch_kwargs": arch_kwargs,
                    "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
                },
                "batch_dice": False,
            }
        },
        "experiment_planner_used": "ResEncUNetPlanner",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {
            "0": {"max": 3000.0, "mean": 60.0, "median": 55.0, "min": -1000.0,
                  "percentile_00_5": -200.0, "percentile_99_5": 400.0, "std": 80.0}
        },
    }


def toy_dataset_json(channel_names: dict | None = None) -> dict:
    return {
        "channel_names": channel_names or {"0": "CT"},
        "labels": {"background": 0, "lesion": 1},
        "numTraining": 1,
        "file_ending": ".nii.gz",
    }


def write_toy_model(
    folder: str | Path,
    folds: Sequence[int] = (0,),
    seed: int = 0,
    input_channels: int = 2,
    plans: dict | None = None,
    dataset_json: dict | None = None,
    trainer_name: str = "LesionLocatorTrainerSegment",
) -> Path:
    """Write an nnU-Net v2 trained-model folder with random (seeded) weights; returns the folder."""
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    plans = plans or toy_plans()
    dataset_json = dataset_json or toy_dataset_json()
    (folder / "plans.json").write_text(json.dumps(plans, indent=2))
    (folder / "dataset.json").write_text(json.dumps(dataset_json, indent=2))
    arch = plans["configurations"]["3d_fullres"]["architecture"]
    for fold in folds:
        torch.manual_seed(seed + int(fold))
        network = get_network_from_plans(
            arch["network_class_name"], arch["arch_kwargs"], arch["_kw_requires_import"],
            input_channels, 2, allow_init=True, deep_supervision=False,
        )
        checkpoint = {
            "network_weights": network.state_dict(),
            "optimizer_state": {"state": {}, "param_groups": [{"lr": 0.01, "momentum": 0.99}]},
            "grad_scaler_state": None,
            "logging": {"mean_fg_dice": [np.float64(0.5), np.float32(0.6)], "ema_fg_dice": [np.float64(0.55)]},
            "_best_ema": np.float64(0.55),
            "current_epoch": 1,
            "init_args": {
                "plans": plans,
                "configuration": "3d_fullres",
                "fold": int(fold),
                "dataset_json": dataset_json,
                "device": torch.device("cpu"),
            },
            "trainer_name": trainer_name,
            "inference_allowed_mirroring_axes": (0, 1, 2),
        }
        (folder / f"fold_{fold}").mkdir(exist_ok=True)
        torch.save(checkpoint, folder / f"fold_{fold}" / "checkpoint_final.pth")
    return folder


def write_toy_lesionlocator_checkpoint(root: str | Path, folds: Sequence[int] = (0,), **kwargs) -> Path:
    """The released layout: ``root/LesionLocatorSeg/{point_optimized,bbox_optimized}/``."""
    root = Path(root)
    for i, name in enumerate(("point_optimized", "bbox_optimized")):
        write_toy_model(root / "LesionLocatorSeg" / name, folds=folds, seed=100 * i, **kwargs)
    return root
