"""segment_session / CLI: files in, one uint32 label map (+ per-lesion masks) out; bad inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from lesionlocator.cli import main
from lesionlocator.core.config import SegmentConfig, validate_config
from lesionlocator.core.errors import ConfigError, InputError
from lesionlocator.core.io import Geometry, image_from_array, same_geometry
from lesionlocator.core.prompts import PromptFile
from lesionlocator.segment import Prompt, check_prompts, prompts_from_file, prompts_from_label_array, segment_session
from lesionlocator.segment.api import LesionPrediction, combine_predictions


@pytest.fixture
def case_files(tmp_path, lesion_case):
    image_path = tmp_path / "image.nii.gz"
    sitk.WriteImage(lesion_case.image, str(image_path))
    geometry = Geometry.of(lesion_case.image)
    lesions = []
    for lesion_id, (lo, hi) in lesion_case.boxes.items():
        corners = geometry.index_to_world(np.array([lo, hi]))
        lesions.append({"id": lesion_id, "box": {"min": corners.min(0).tolist(), "max": corners.max(0).tolist()}})
    prompts_path = tmp_path / "prompts.json"
    prompts_path.write_text(json.dumps({"frame": "world", "lesions": lesions}))
    mask_path = tmp_path / "mask.nii.gz"
    sitk.WriteImage(image_from_array(lesion_case.labels, lesion_case.image), str(mask_path))
    return image_path, prompts_path, mask_path


def test_world_prompts_to_label_map(tmp_path, case_files, lesion_case):
    image_path, prompts_path, _ = case_files
    out = segment_session(image_path, prompts_json=prompts_path, output_path=tmp_path / "out" / "labels.nii.gz",
                          per_lesion_dir=tmp_path / "out" / "lesions")
    written = sitk.ReadImage(str(out.labels_path))
    assert written.GetPixelID() == sitk.sitkUInt32
    assert same_geometry(Geometry.of(written), Geometry.of(lesion_case.image))
    labels = sitk.GetArrayFromImage(written)
    assert set(np.unique(labels)) - {0} == set(lesion_case.boxes)
    assert sorted(p.name for p in (tmp_path / "out" / "lesions").iterdir()) == sorted(f"lesion_{i}.nii.gz" for i in lesion_case.boxes)
    big = max(lesion_case.boxes)
    lesion = sitk.GetArrayFromImage(sitk.ReadImage(str(out.lesion_paths[big])))
    assert np.array_equal(lesion.astype(bool), labels == big)
    assert not list((tmp_path / "out").glob(".*part*"))


def test_mask_prompt_file_and_cli(tmp_path, case_files, lesion_case, capsys):
    image_path, _, mask_path = case_files
    output = tmp_path / "cli.nii.gz"
    assert main(["segment", "--image", str(image_path), "--prompt-mask", str(mask_path), "-o", str(output)]) == 0
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(output)))
    for lesion_id in lesion_case.boxes:
        truth = lesion_case.labels == lesion_id
        assert 2 * np.sum((labels == lesion_id) & truth) / (np.sum(labels == lesion_id) + truth.sum()) > 0.8
    assert "lesion 2147483647" in capsys.readouterr().out


def test_byte_identical_outputs(tmp_path, case_files):
    image_path, prompts_path, _ = case_files
    a = segment_session(image_path, prompts_json=prompts_path, output_path=tmp_path / "a.nii.gz")
    b = segment_session(image_path, prompts_json=prompts_path, output_path=tmp_path / "b.nii.gz")
    assert a.labels_path.read_bytes() == b.labels_path.read_bytes()


def test_prompt_outside_the_image_fails_before_work(tmp_path, case_files):
    image_path, _, _ = case_files
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"frame": "voxel", "lesions": [{"id": 1, "point": [500, 10, 10]}]}))
    with pytest.raises(InputError, match="outside the image"):
        segment_session(image_path, prompts_json=bad, output_path=tmp_path / "o.nii.gz")
    assert not (tmp_path / "o.nii.gz").exists()
    assert main(["segment", "--image", str(image_path), "--prompts", str(bad), "-o", str(tmp_path / "o.nii.gz")]) == 2


def test_repeated_id_across_prompt_file_and_mask(tmp_path, case_files, lesion_case):
    image_path, prompts_path, mask_path = case_files
    with pytest.raises(InputError, match="repeated"):
        segment_session(image_path, prompts_json=prompts_path, prompt_mask=mask_path, output_path=tmp_path / "o.nii.gz")
    with pytest.raises(InputError, match="repeated"):
        check_prompts([Prompt(5, "point", point=(1.0, 1.0, 1.0)), Prompt(5, "point", point=(2.0, 2.0, 2.0))], (4, 4, 4))


def test_mask_with_other_geometry_is_refused(tmp_path, case_files, lesion_case):
    image_path, _, _ = case_files
    moved = image_from_array(lesion_case.labels, lesion_case.image)
    moved.SetOrigin((0.0, 0.0, 0.0))
    sitk.WriteImage(moved, str(tmp_path / "moved.nii.gz"))
    with pytest.raises(InputError, match="geometry differs"):
        segment_session(image_path, prompt_mask=tmp_path / "moved.nii.gz", output_path=tmp_path / "o.nii.gz")


def test_bad_prompt_values():
    with pytest.raises(ValueError):
        Prompt(0, "point", point=(1.0, 1.0, 1.0))
    with pytest.raises(ValueError):
        Prompt(2**31, "point", point=(1.0, 1.0, 1.0))
    with pytest.raises(ValueError):
        Prompt(1, "box", box=((3.0, 1.0, 1.0), (2.0, 4.0, 4.0)))
    with pytest.raises(ValueError):
        Prompt(1, "point", box=((1.0, 1.0, 1.0), (2.0, 4.0, 4.0)))
    with pytest.raises(InputError, match="mask shape"):
        check_prompts([Prompt(1, "mask", mask=np.ones((2, 2, 2), bool))], (4, 4, 4))
    with pytest.raises(InputError, match="outside"):
        check_prompts([Prompt(1, "box", box=((10.0, 10.0, 10.0), (12.0, 12.0, 12.0)))], (4, 4, 4))


def test_prompts_from_file_prefers_box_and_maps_world_to_voxel(small_image):
    geometry = Geometry.of(small_image)
    world = geometry.index_to_world(np.array([3.0, 4.0, 5.0]))
    prompt_file = PromptFile.model_validate({"frame": "world", "lesions": [
        {"id": 1000, "point": world.tolist(), "box": {"min": (world - 2).tolist(), "max": (world + 2).tolist()}},
        {"id": 3, "point": world.tolist()},
    ]})
    prompts = prompts_from_file(prompt_file, geometry)
    assert [p.kind for p in prompts] == ["box", "point"]
    np.testing.assert_allclose(prompts[1].point, [3.0, 4.0, 5.0], atol=1e-9)
    lo, hi = np.array(prompts[0].box)
    assert np.all(lo <= [3, 4, 5]) and np.all(hi >= [3, 4, 5])
    assert [p.kind for p in prompts_from_file(prompt_file, geometry, kinds=("point",))] == ["point", "point"]


def test_prompts_from_label_array_large_and_sparse_ids():
    labels = np.zeros((6, 7, 8), np.uint32)
    labels[1:3, 1:3, 1:3] = 70000
    labels[4, 5, 6] = 2**31 - 1
    prompts = {p.lesion_id: p for p in prompts_from_label_array(labels, "mask")}
    assert set(prompts) == {70000, 2**31 - 1} and prompts[70000].mask.sum() == 8
    boxes = {p.lesion_id: p.box for p in prompts_from_label_array(labels, "box")}
    assert boxes[70000] == ((1.0, 1.0, 1.0), (2.0, 2.0, 2.0))
    points = {p.lesion_id: p.point for p in prompts_from_label_array(labels, "point")}
    assert points[2**31 - 1] == (4.0, 5.0, 6.0)


def test_overlaps_go_to_the_higher_probability():
    a = LesionPrediction(1, (slice(0, 4), slice(0, 4), slice(0, 4)), np.full((4, 4, 4), 0.7, np.float32))
    prob_b = np.full((4, 4, 4), 0.6, np.float32)
    prob_b[2:, 2:, 2:] = 0.9
    b = LesionPrediction(300, (slice(2, 6), slice(2, 6), slice(2, 6)), prob_b)
    result = combine_predictions((6, 6, 6), [a, b], [1, 300, 5])
    assert result.labels[1, 1, 1] == 1 and result.labels[3, 3, 3] == 1  # 0.7 beats 0.6
    assert result.labels[5, 5, 5] == 300 and result.labels.dtype == np.uint32
    assert result.scores[5] == 0.0 and result.scores[1] == pytest.approx(0.7)


def test_config_requires_an_existing_checkpoint_for_nnunet(tmp_path):
    from lesionlocator.core.config import BUNDLED_MODEL

    with pytest.raises(ConfigError, match="does not exist"):
        validate_config({"segment": {"segmenter": "nnunet", "checkpoint": str(tmp_path / "none")}})
    given = validate_config({"segment": {"segmenter": "nnunet", "checkpoint": str(tmp_path)}}).segment
    assert given.checkpoint == tmp_path and given.model_folder == tmp_path
    assert SegmentConfig(segmenter="nnunet").model_folder == BUNDLED_MODEL  # no checkpoint: the bundled model
    assert SegmentConfig(segmenter="classical").model_folder is None


def test_nnunet_session_with_released_layout(tmp_path, case_files):
    from tests.segment.toy_model import toy_plans, write_toy_lesionlocator_checkpoint

    root = write_toy_lesionlocator_checkpoint(tmp_path / "LesionLocatorCheckpoint",
                                              plans=toy_plans(patch_size=(16, 16, 16), features=(4, 8)))
    image_path, prompts_path, _ = case_files
    config = SegmentConfig(segmenter="nnunet", checkpoint=root, device="cpu", mirroring=False)
    out = segment_session(image_path, prompts_json=prompts_path, config=config, output_path=tmp_path / "nn.nii.gz")
    assert sitk.ReadImage(str(out.labels_path)).GetPixelID() == sitk.sitkUInt32
