"""``lesionlocator train`` end to end on a tiny dataset, and the model it writes in the engine."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from lesionlocator.cli import main
from lesionlocator.errors import InputError
from lesionlocator.train.run import check_dataset


@pytest.mark.slow
def test_train_cli_writes_a_model_the_engine_loads(raw_dataset, tmp_path):
    run = tmp_path / "run"
    args = ["train", "--dataset", str(raw_dataset), "-o", str(run), "--epochs", "1", "--iterations-per-epoch", "2",
            "--patch-size", "16", "32", "32", "--num-threads", "2", "--device", "cpu"]
    assert main(args) == 0
    model = run / "model"
    for name in ("plans.json", "dataset.json", "lesionlocator.json", "fold_all/checkpoint_final.pth"):
        assert (model / name).is_file(), name
    checkpoint = torch.load(model / "fold_all" / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert checkpoint["trainer_name"] == "nnUNetTrainerLesionLocator"
    assert checkpoint["init_args"]["configuration"] == "3d_fullres"
    assert checkpoint["optimizer_state"] is None
    first = next(v for v in checkpoint["network_weights"].values() if v.ndim == 5)
    assert first.shape[1] == 2  # image + prompt
    plans = json.loads((model / "plans.json").read_text())
    assert plans["configurations"]["3d_fullres"]["normalization_schemes"] == ["BodyZScoreNormalization"]
    assert plans["configurations"]["3d_fullres"]["preprocessor_name"] == "LesionLocatorPreprocessor"

    from lesionlocator.segment.api import Prompt
    from lesionlocator.segment.nnunet import NnUNetSegmenter

    image = sitk.ReadImage(str(raw_dataset / "imagesTr" / "case000_0000.nii.gz"))
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(raw_dataset / "labelsTr" / "case000.nii.gz")))
    where = np.argwhere(labels)
    segmenter = NnUNetSegmenter(model, device="cpu", mirroring=False)
    result = segmenter.segment(image, [Prompt(3, "box", box=(tuple(map(float, where.min(0))), tuple(map(float, where.max(0)))))])
    assert result.labels.shape == labels.shape and result.labels.dtype == np.uint32
    assert set(np.unique(result.labels)) <= {0, 3}

    # --resume continues the run (one more epoch) without planning again.
    assert main(args[:5] + ["--epochs", "2"] + args[7:] + ["--resume"]) == 0
    resumed = torch.load(model / "fold_all" / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert resumed["current_epoch"] == 2


def test_dataset_checks_name_labels_and_cases(raw_dataset, tmp_path):
    assert check_dataset(raw_dataset)[:2] == (990, "Dataset990_TinyLesions")
    bad_name = raw_dataset.rename(tmp_path / "lesions")
    with pytest.raises(InputError, match="DatasetNNN_Name"):
        check_dataset(bad_name)
    good = bad_name.rename(tmp_path / "Dataset991_X")
    meta = json.loads((good / "dataset.json").read_text())
    (good / "dataset.json").write_text(json.dumps({**meta, "labels": {"background": 0, "liver": 1, "tumor": 2}}))
    with pytest.raises(InputError, match="labels must be"):
        check_dataset(good)


def test_train_config_rejects_bad_settings():
    from lesionlocator.config import ConfigError, validate_config

    assert validate_config({"train": {"epochs": 3}}).train.epochs == 3
    for bad in ({"patch_size": [32, 32]}, {"prompt_mix": {"point": 0.0}}, {"prompt_mix": {"click": 1.0}},
                {"features_base": 32, "features_max": 16}, {"architecture": "huge"}):
        with pytest.raises(ConfigError):
            validate_config({"train": bad})
