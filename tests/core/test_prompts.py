import json

import numpy as np
import pytest

from lesionlocator.core.errors import InputError
from lesionlocator.core.io import Geometry
from lesionlocator.core.prompts import PromptFile, check_lesion_labels, check_prompts_inside, read_prompts, write_prompts
from tests.helpers import make_image


def _write(tmp_path, data):
    path = tmp_path / "prompts.json"
    path.write_text(json.dumps(data))
    return path


def test_world_voxel_round_trip(tmp_path):
    geometry = Geometry.of(make_image())
    voxel = PromptFile(frame="voxel", lesions=[{"id": 300, "point": (3.0, 4.5, 7.25), "box": {"min": (1, 2, 3), "max": (5, 8, 11)}}])
    world = voxel.in_world_frame(geometry)
    assert world.frame == "world"
    back = world.in_voxel_frame(geometry)
    assert np.allclose(back.lesions[0].point, (3.0, 4.5, 7.25), atol=1e-9)
    # A world box around a rotated voxel box is larger; it still contains the original corners.
    assert np.all(np.asarray(back.lesions[0].box.min) <= np.asarray((1, 2, 3)) + 1e-9)
    assert np.all(np.asarray(back.lesions[0].box.max) >= np.asarray((5, 8, 11)) - 1e-9)
    path = write_prompts(world, tmp_path / "p.json")
    assert read_prompts(path) == world


def test_point_maps_like_simpleitk():
    image = make_image()
    world = image.TransformContinuousIndexToPhysicalPoint((7.0, 4.0, 2.0))  # x, y, z index
    prompts = PromptFile(frame="world", lesions=[{"id": 1, "point": world}])
    assert np.allclose(prompts.in_voxel_frame(Geometry.of(image)).lesions[0].point, (2.0, 4.0, 7.0))


@pytest.mark.parametrize(
    "data, problem",
    [
        ({"frame": "world", "lesions": [{"id": 1, "point": [0, 0, 0]}], "extra": 1}, "extra: unknown key"),
        ({"frame": "world", "lesions": [{"id": 1, "pointt": [0, 0, 0]}]}, "unknown key"),
        ({"frame": "world", "lesions": [{"id": 1, "box": {"min": [0, 5, 0], "max": [1, 1, 1]}}]}, "min > max on axis 1"),
        ({"frame": "world", "lesions": [{"id": 1}]}, "neither a point, a box nor a review"),
        ({"frame": "mm", "lesions": [{"id": 1, "point": [0, 0, 0]}]}, "frame"),
        ({"frame": "world", "lesions": [{"id": 0, "point": [0, 0, 0]}]}, "lesions[0].id: Input should be greater than or equal to 1 (got 0)"),
        ({"frame": "world", "lesions": [{"id": True, "point": [0, 0, 0]}]}, "lesions[0].id: Input should be a valid integer (got true)"),
        ({"frame": "world", "lesions": [{"id": "7", "point": [0, 0, 0]}]}, 'lesions[0].id: Input should be a valid integer (got "7")'),
        ({"frame": "world", "lesions": [{"id": 7.0, "point": [0, 0, 0]}]}, "lesions[0].id: Input should be a valid integer (got 7.0)"),
        ({"frame": "world", "lesions": [{"id": 1, "point": [0, "1", 0]}]}, 'lesions[0].point[1]: Input should be a valid number (got "1")'),
        ({"frame": "world", "lesions": [{"id": 1, "box": {"min": [0, 0, 0], "max": [1, 1, False]}}]}, "lesions[0].box.max[2]: Input should be a valid number"),
        ({"frame": "world", "lesions": [{"id": 2, "point": [0, 0, 0]}, {"id": 2, "point": [1, 1, 1]}]}, "repeated"),
        ({"frame": "world", "lesions": []}, "lesions"),
    ],
)
def test_bad_prompt_files(tmp_path, data, problem):
    path = _write(tmp_path, data)
    with pytest.raises(InputError) as err:
        read_prompts(path)
    assert str(path) in str(err.value)
    assert problem in str(err.value)


def test_integer_coordinates_are_numbers(tmp_path):
    path = _write(tmp_path, {"frame": "voxel", "lesions": [{"id": 2, "point": [1, 2, 3]}]})
    assert read_prompts(path).lesions[0].point == (1.0, 2.0, 3.0)


def test_utf16_file_is_refused_and_a_utf8_bom_is_accepted(tmp_path):
    data = json.dumps({"frame": "voxel", "lesions": [{"id": 2, "point": [1, 2, 3]}]})
    path = tmp_path / "prompts.json"
    path.write_text(data, encoding="utf-16")
    with pytest.raises(InputError, match=r"prompts.json: not UTF-8 text \(it is UTF-16 text\): save it as UTF-8"):
        read_prompts(path)
    path.write_text(data, encoding="utf-8-sig")
    assert read_prompts(path).lesions[0].id == 2


def test_invalid_json(tmp_path):
    path = tmp_path / "prompts.json"
    path.write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        read_prompts(path)


def test_prompt_outside_image(tmp_path):
    geometry = Geometry.of(make_image(shape_zyx=(12, 16, 20)))
    inside = PromptFile(frame="voxel", lesions=[{"id": 1, "point": (11, 15, 19)}])
    check_prompts_inside(inside, geometry, "p.json")
    outside = PromptFile(frame="voxel", lesions=[{"id": 1, "point": (12.6, 0, 0)}])
    with pytest.raises(InputError, match="lesion 1: point .* outside the image"):
        check_prompts_inside(outside, geometry, "p.json")
    box = PromptFile(frame="voxel", lesions=[{"id": 4, "box": {"min": (0, 0, 0), "max": (3, 3, 25)}}])
    with pytest.raises(InputError, match="lesion 4: box .* outside"):
        check_prompts_inside(box, geometry, "p.json")
    far_world = PromptFile(frame="world", lesions=[{"id": 9, "point": (1e4, 0, 0)}])
    with pytest.raises(InputError, match="world frame"):
        check_prompts_inside(far_world, geometry, "p.json")


@pytest.mark.parametrize(
    "values, dtype, problem",
    [
        ([0, 1, -1], np.int16, r"negative label\(s\) \(minimum -1\)"),
        ([0, 2, 1.5], np.float32, r"1 non-integer value\(s\) \(e\.g\. 1\.5\)"),
        ([0, 2, -2.0], np.float64, r"negative label\(s\) \(minimum -2\)"),
        ([0, 2**31], np.int64, r"above 2147483647"),
        ([0, 1], np.complex64, "voxel type complex64"),
    ],
)
def test_lesion_labels_are_non_negative_integers(values, dtype, problem):
    with pytest.raises(InputError, match=problem) as err:
        check_lesion_labels(np.asarray(values, dtype=dtype), "gt.nii.gz", "ground-truth mask")
    assert str(err.value).startswith("gt.nii.gz: ground-truth mask ")


@pytest.mark.parametrize("values, dtype", [([0, 1, 7], np.uint8), ([0.0, 3.0], np.float32), ([0, 2**31 - 1], np.uint32), ([], np.int16)])
def test_valid_lesion_labels(values, dtype):
    check_lesion_labels(np.asarray(values, dtype=dtype), "gt.nii.gz")


def test_the_released_lesionlocator_prompt_format_is_read_as_voxel_prompts(tmp_path):
    """{"<id>": {"point": [z, y, x]}} and {"<id>": {"box": [z0, z1, y0, y1, x0, x1]}} (half-open, numbers or
    numeric strings, as the released tools write them) become voxel-frame prompts; a box from a mask's
    half-open extent gives the mask's inclusive voxel bounding box, and both files give
    the same segmenter prompts."""
    from lesionlocator.core.io import image_from_array
    from lesionlocator.segment.session import load_session_prompts

    mask = np.zeros((20, 30, 40), bool)
    mask[5:9, 10:17, 20:31] = True
    where = np.argwhere(mask)
    lo, hi = where.min(0), where.max(0) + 1  # half-open, as the released tools compute it
    upstream = {
        "2": {"box": [str(int(v)) for v in (lo[0], hi[0], lo[1], hi[1], lo[2], hi[2])]},
        "10": {"point": ["6.5", "12.25", 25]},
    }
    prompts = read_prompts(_write(tmp_path, upstream))
    assert prompts.frame == "voxel" and [lesion.id for lesion in prompts.lesions] == [2, 10]
    assert prompts.lesions[0].box.min == tuple(float(v) for v in lo) and prompts.lesions[0].box.max == tuple(float(v) for v in hi - 1)
    assert prompts.lesions[1].point == (6.5, 12.25, 25.0)

    ours = tmp_path / "ours.json"
    ours.write_text(json.dumps({"frame": "voxel", "lesions": [
        {"id": 2, "box": {"min": lo.tolist(), "max": (hi - 1).tolist()}}, {"id": 10, "point": [6.5, 12.25, 25]}]}))
    image = image_from_array(np.where(mask, 100.0, 0.0).astype(np.float32), Geometry.of(make_image(shape_zyx=(20, 30, 40))))
    def fields(path):
        return [(p.lesion_id, p.kind, p.point, p.box) for p in load_session_prompts(image, path)]

    assert fields(tmp_path / "prompts.json") == fields(ours)


@pytest.mark.parametrize(
    "data, problem",
    [
        ({"1": {"box": [1, 2, 3, 4]}}, '"1".box: expects a list of 6 numbers'),
        ({"1": {"box": [5, 5, 0, 4, 0, 4]}}, "each max must exceed its min"),
        ({"1": {"point": ["a", 2, 3]}}, '"1".point: "a" is not a finite number'),
        ({"1": {"point": [1, True, 3]}}, "true is not a finite number"),
        ({"3": {"mask": "x.nii.gz"}}, "unknown key(s) ['mask']"),
        ({"0": {"point": [1, 2, 3]}}, "lesions[0].id"),
    ],
)
def test_bad_released_format_prompt_files(tmp_path, data, problem):
    with pytest.raises(InputError) as err:
        read_prompts(_write(tmp_path, data))
    assert "prompts.json" in str(err.value) and problem in str(err.value)
