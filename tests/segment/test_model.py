"""Loading nnU-Net v2 trained-model folders and the released LesionLocator layout; bad checkpoints."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from lesionlocator.core.config import SegmentConfig
from lesionlocator.core.errors import InputError
from lesionlocator.segment.model import load_checkpoint, load_model, resolve_model_folders
from lesionlocator.segment.nnunet import NnUNetSegmenter
from tests.segment.toy_model import toy_dataset_json, toy_plans, write_toy_lesionlocator_checkpoint, write_toy_model


def test_checkpoint_in_nnunet_format_loads_weights_only(toy_model):
    checkpoint = load_checkpoint(toy_model / "fold_0" / "checkpoint_final.pth")
    assert checkpoint["trainer_name"] == "LesionLocatorTrainerSegment"
    assert checkpoint["init_args"]["configuration"] == "3d_fullres"
    # The file really needs the numpy allow-list: plain weights_only loading refuses it.
    with pytest.raises(Exception):
        torch.load(toy_model / "fold_0" / "checkpoint_final.pth", weights_only=True)


def test_load_model_two_folds(toy_model):
    model = load_model(toy_model)
    assert model.folds == [0, 1] and len(model.networks) == 2
    assert model.patch_size == (16, 16, 16) and model.mirror_axes == (0, 1, 2)
    w0 = next(iter(model.networks[0].state_dict().values()))
    w1 = next(iter(model.networks[1].state_dict().values()))
    assert not torch.equal(w0, w1)  # each fold keeps its own weights
    assert len(load_model(toy_model, folds=[1]).networks) == 1


def test_released_layout_picks_model_by_prompt_kind(tmp_path):
    root = write_toy_lesionlocator_checkpoint(tmp_path / "LesionLocatorCheckpoint", plans=toy_plans(patch_size=(16, 16, 16), features=(4, 8)))
    folders = resolve_model_folders(root)
    assert folders["point"].name == "point_optimized" and folders["box"].name == "bbox_optimized"
    assert resolve_model_folders(root / "LesionLocatorSeg") == folders
    segmenter = NnUNetSegmenter(SegmentConfig(checkpoint=root, device="cpu"))
    assert segmenter._folder_for("point").name == "point_optimized"
    assert segmenter._folder_for("box").name == "bbox_optimized"
    assert segmenter._folder_for("mask").name == "bbox_optimized"


@pytest.mark.parametrize("encoding, released, as_box", [
    ("auto", True, True), ("auto", False, False), ("mask", True, False), ("box", False, True)])
def test_mask_prompts_enter_the_released_pair_as_their_box(tmp_path, monkeypatch, encoding, released, as_box):
    """segment.mask_prompt_encoding auto: a mask prompt reaches the released box model as its bounding box (the
    released pair was trained with points and boxes only), and a single trained-model folder (trained with
    masks) as the mask; the network's input channel is what the encoder made of it."""
    import SimpleITK as sitk

    import lesionlocator.segment.nnunet as nnunet
    from lesionlocator.segment.api import Prompt
    from lesionlocator.segment.encode import encode_prompt

    plans = toy_plans(patch_size=(16, 16, 16), features=(4, 8))
    root = (write_toy_lesionlocator_checkpoint(tmp_path / "released", plans=plans) if released
            else write_toy_model(tmp_path / "single", plans=plans))
    calls = []
    monkeypatch.setattr(nnunet, "encode_prompt", lambda *args, **kw: calls.append(kw["mask_as_box"]) or encode_prompt(*args, **kw))
    segmenter = NnUNetSegmenter(SegmentConfig(checkpoint=root, device="cpu", mirroring=False, mask_prompt_encoding=encoding))
    image = sitk.GetImageFromArray(np.random.default_rng(0).normal(0, 1, (24, 24, 24)).astype(np.float32))
    mask = np.zeros((24, 24, 24), bool)
    mask[8:14, 9:15, 10:13] = True
    segmenter.segment(image, [Prompt(3, "mask", mask=mask)])
    assert segmenter.mask_as_box is as_box and calls == [as_box]


def test_dataset_json_listing_the_prompt_channel_is_accepted(tmp_path):
    folder = write_toy_model(tmp_path / "m", plans=toy_plans(patch_size=(16, 16, 16), features=(4, 8)),
                             dataset_json=toy_dataset_json({"0": "CT", "1": "prompt"}))
    assert load_model(folder).num_image_channels == 1


@pytest.mark.parametrize("missing", ["plans.json", "dataset.json", "fold_0/checkpoint_final.pth"])
def test_missing_files(tmp_path, toy_model, missing):
    folder = tmp_path / "copy"
    shutil.copytree(toy_model, folder)
    (folder / missing).unlink()
    with pytest.raises(InputError) as err:
        NnUNetSegmenter(SegmentConfig(checkpoint=folder, folds=[0], device="cpu"))
    assert missing.split("/")[-1] in str(err.value)


def test_not_a_model_folder(tmp_path):
    with pytest.raises(InputError, match="not an nnU-Net trained-model folder"):
        resolve_model_folders(tmp_path)
    with pytest.raises(InputError, match="not found"):
        resolve_model_folders(tmp_path / "nope")


def test_wrong_number_of_input_channels(tmp_path):
    folder = write_toy_model(tmp_path / "m", input_channels=1, plans=toy_plans(patch_size=(16, 16, 16), features=(4, 8)))
    with pytest.raises(InputError, match="input channel"):
        load_model(folder)


def test_truncated_checkpoint(tmp_path, toy_model):
    folder = tmp_path / "copy"
    shutil.copytree(toy_model, folder)
    path = folder / "fold_1" / "checkpoint_final.pth"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(InputError, match="cannot read checkpoint") as err:
        load_model(folder)
    assert "fold_1" in str(err.value)


def test_weights_that_do_not_fit_the_plans(tmp_path, toy_model):
    folder = tmp_path / "copy"
    shutil.copytree(toy_model, folder)
    plans = json.loads((folder / "plans.json").read_text())
    plans["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]["features_per_stage"] = [6, 8]
    (folder / "plans.json").write_text(json.dumps(plans))
    with pytest.raises(InputError, match="do not fit"):
        load_model(folder)


def test_foreign_network_class_is_refused(tmp_path, toy_model):
    folder = tmp_path / "copy"
    shutil.copytree(toy_model, folder)
    plans = json.loads((folder / "plans.json").read_text())
    plans["configurations"]["3d_fullres"]["architecture"]["network_class_name"] = "os.system"
    (folder / "plans.json").write_text(json.dumps(plans))
    with pytest.raises(InputError, match="refused"):
        load_model(folder)


def test_pickled_code_is_never_run(tmp_path, toy_model):
    folder = tmp_path / "copy"
    shutil.copytree(toy_model, folder)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"network_weights": {}, "payload": Evil()}, folder / "fold_0" / "checkpoint_final.pth")
    with pytest.raises(InputError, match="cannot read checkpoint"):
        load_checkpoint(folder / "fold_0" / "checkpoint_final.pth")


def test_point_radius_comes_from_the_models_sidecar(tmp_path):
    folder = write_toy_model(tmp_path / "m", plans=toy_plans(patch_size=(16, 16, 16), features=(4, 8)))
    assert load_model(folder).point_radius is None  # not trained here: the engine's segment.point_radius
    (folder / "lesionlocator.json").write_text(json.dumps({"settings": {"point_radius": 2.0}}))
    assert load_model(folder).point_radius == 2.0
