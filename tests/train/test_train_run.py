"""``lesionlocator train`` end to end on a tiny dataset, and the model it writes in the engine."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch

from lesionlocator.cli import main
from lesionlocator.core.errors import InputError
from lesionlocator.train.run import check_dataset, read_initial_model
from tests.train.conftest import make_raw_dataset, segment_first_case


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

    result, labels = segment_first_case(model, raw_dataset)
    assert result.labels.shape == labels.shape and result.labels.dtype == np.uint32
    assert set(np.unique(result.labels)) <= {0, 3}

    # --resume continues the run (one more epoch) without planning again.
    assert main(args[:5] + ["--epochs", "2"] + args[7:] + ["--resume"]) == 0
    resumed = torch.load(model / "fold_all" / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert resumed["current_epoch"] == 2

    # --init-from fine-tunes that model on another dataset (other spacing, fewer cases): the run takes
    # the model's plans (the patch size given here is ignored) and starts from its weights, which a
    # tiny learning rate leaves as they were.
    other = make_raw_dataset(tmp_path / "raw2", n_cases=2, seed=1, name="Dataset992_MoreLesions", spacing=(1.0, 1.0, 3.0))
    tuned = tmp_path / "tuned"
    assert main(["train", "--dataset", str(other), "-o", str(tuned), "--init-from", str(model), "--epochs", "1",
                 "--iterations-per-epoch", "1", "--initial-lr", "1e-9", "--patch-size", "8", "8", "8",
                 "--box-noise", "0.1", "--box-shrink", "0.2", "--mask-morph", "1", "--mask-warp", "0.5",
                 "--mask-shift", "0", "--num-threads", "2", "--device", "cpu"]) == 0
    tuned_plans = json.loads((tuned / "model" / "plans.json").read_text())
    assert tuned_plans == {**plans, "dataset_name": "Dataset992_MoreLesions"}
    start = resumed["network_weights"]
    weights = torch.load(tuned / "model" / "fold_all" / "checkpoint_final.pth", map_location="cpu",
                         weights_only=False)["network_weights"]
    assert weights.keys() == start.keys()
    assert all(torch.allclose(weights[k].float(), start[k].float(), atol=1e-5) for k in start)
    sidecar = json.loads((tuned / "model" / "lesionlocator.json").read_text())
    assert sidecar["settings"]["init_from"] == str(model)
    assert (sidecar["settings"]["box_noise"], sidecar["settings"]["box_shrink"]) == (0.1, 0.2)
    assert [sidecar["settings"][k] for k in ("mask_morph", "mask_warp", "mask_shift")] == [1, 0.5, 0]
    logs = list((tuned / "nnUNet_results").rglob("training_log_*.txt"))
    assert logs and ("'box_noise': 0.1, 'box_shrink': 0.2, 'mask_morph': 1, 'mask_warp': 0.5, 'mask_shift': 0"
                     in logs[0].read_text())  # the trainer simulated with them
    started_from = model / "fold_all" / "checkpoint_final.pth"
    assert sidecar["init_checkpoint"] == {"path": str(started_from),
                                          "sha256": hashlib.sha256(started_from.read_bytes()).hexdigest()}
    assert "init_checkpoint" not in json.loads((model / "lesionlocator.json").read_text())

    # Resuming the fine-tuning run keeps its lineage: the weights still came from that checkpoint.
    assert main(["train", "--dataset", str(other), "-o", str(tuned), "--init-from", str(model), "--epochs", "2",
                 "--iterations-per-epoch", "1", "--initial-lr", "1e-9", "--num-threads", "2", "--device", "cpu",
                 "--resume"]) == 0
    resumed_tuned = json.loads((tuned / "model" / "lesionlocator.json").read_text())
    assert resumed_tuned["init_checkpoint"] == sidecar["init_checkpoint"]


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
    from lesionlocator.core.config import ConfigError, validate_config

    assert validate_config({"train": {"epochs": 3}}).train.epochs == 3
    for bad in ({"patch_size": [32, 32]}, {"prompt_mix": {"point": 0.0}}, {"prompt_mix": {"click": 1.0}},
                {"features_base": 32, "features_max": 16}, {"architecture": "huge"}, {"box_shrink": 0.5},
                {"box_noise": -0.1}, {"mask_morph": -1}, {"mask_shift": 1.5}, {"mask_warp": -0.5}):
        with pytest.raises(ConfigError):
            validate_config({"train": bad})


def test_init_from_checks_the_model_folder_before_any_work(raw_dataset, tmp_path):
    meta = json.loads((raw_dataset / "dataset.json").read_text())
    with pytest.raises(InputError, match="trained-model folder not found"):
        read_initial_model(tmp_path / "nope", "all", meta, raw_dataset)
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "plans.json").write_text(json.dumps({"plans_name": "nnUNetPlans", "configurations": {"3d_fullres": {}}}))
    (folder / "dataset.json").write_text(json.dumps({**meta, "channel_names": {"0": "T1", "1": "T2"}}))
    with pytest.raises(InputError, match="channel_names") as err:
        read_initial_model(folder, "all", meta, raw_dataset)
    assert str(raw_dataset / "dataset.json") in str(err.value)
    (folder / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match="no fold_"):
        read_initial_model(folder, "all", meta, raw_dataset)
