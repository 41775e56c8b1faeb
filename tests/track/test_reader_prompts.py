"""A reader's prompts at follow-ups: a correction replaces propagation from that session on, a new ID adds a
lesion, a review confirms or rejects a new-lesion candidate (issue 24, item 4)."""

from __future__ import annotations

import json

import numpy as np
import SimpleITK as sitk

from lesionlocator.core.config import TrackConfig
from lesionlocator.core.io import Geometry, write_image
from lesionlocator.register.base import save_transform
from lesionlocator.segment.api import SegmentationResult
from lesionlocator.track.followup import (
    SessionScan,
    baseline_rows,
    lesion_rows,
    read_followup_inputs,
    track_followup,
    write_labels,
    write_tracking,
)
from lesionlocator.track.propagate import box_mask
from tests.helpers import OBLIQUE_DIRECTION


class PromptEcho:
    """A segmenter that returns each prompt's own region: a mask, a box's voxels, a 3x3x3 cube at a point."""

    def __init__(self):
        self.calls = []

    def segment(self, image, prompts):
        self.calls.append({int(p.lesion_id): p.kind for p in prompts})
        shape = image.GetSize()[::-1]
        labels = np.zeros(shape, np.uint32)
        for prompt in prompts:
            if prompt.kind == "mask":
                region = prompt.mask
            elif prompt.kind == "box":
                region = box_mask(prompt.box, shape)
            else:
                lo = np.maximum(np.round(prompt.point).astype(int) - 1, 0)
                region = np.zeros(shape, bool)
                region[lo[0] : lo[0] + 3, lo[1] : lo[1] + 3, lo[2] : lo[2] + 3] = True
            labels[region & (labels == 0)] = prompt.lesion_id
        return SegmentationResult(labels, {int(p.lesion_id): 1.0 for p in prompts})


def _image(seed: int) -> sitk.Image:
    image = sitk.GetImageFromArray(np.random.default_rng(seed).normal(0, 5, (24, 40, 36)).astype(np.float32))
    image.SetSpacing((2.0, 1.5, 3.0))
    image.SetOrigin((-30.0, 12.0, 5.0))
    image.SetDirection(OBLIQUE_DIRECTION)
    return image


def _voxel_prompts(path, lesions) -> None:
    path.write_text(json.dumps({"frame": "voxel", "lesions": lesions}))


def test_correction_addition_and_reviews(tmp_path):
    images = [_image(s) for s in range(3)]
    geometry = Geometry.of(images[0])
    folders = [tmp_path / f"ses-{s}" for s in range(3)]
    for folder in folders:
        folder.mkdir()
    # baseline: lesion 1 by a box; session 1: the reader moves lesion 1 and adds lesion 7;
    # session 2: the reader rejects the candidate found at session 1 and confirms none else
    _voxel_prompts(folders[0] / "prompts.json", [{"id": 1, "box": {"min": [10, 14, 12], "max": [13, 19, 17]}}])
    _voxel_prompts(folders[1] / "prompts.json", [{"id": 1, "box": {"min": [4, 26, 22], "max": [7, 31, 27]}},
                                                 {"id": 7, "point": [16, 8, 8]}])
    _voxel_prompts(folders[2] / "prompts.json", [{"id": 1_000_001, "review": "rejected"}])
    scans = [SessionScan(f"0{s + 1}", s, write_image(image, folders[s] / "image.nii.gz"), folders[s] / "prompts.json")
             for s, image in enumerate(images)]
    identity = sitk.TranslationTransform(3, (0.0, 0.0, 0.0))
    transform_paths = [None] + [save_transform(identity, tmp_path / f"t{s}.tfm") for s in (1, 2)]
    track = TrackConfig(candidates=False, vanish_contrast_fraction=0.0)
    segmenter = PromptEcho()

    base = segmenter.segment(images[0], [_baseline_box()]).labels
    labels_paths = [write_labels(base, images[0], tmp_path / "l0.nii.gz")]
    rows0 = baseline_rows("P1", scans[0], base, geometry, [1], {1: 1.0})
    tracking_paths = [write_tracking(rows0, tmp_path / "r0.parquet")]

    inputs = read_followup_inputs(scans, 1, labels_paths, transform_paths, tracking_paths, track)
    first = track_followup("P1", scans, 1, inputs, segmenter, track, 0.5)
    by_id = {r["lesion_id"]: r for r in first.rows}
    assert segmenter.calls[-1] == {1: "box", 7: "point"}  # the reader's prompts, not propagation
    moved = np.argwhere(first.labels == 1)
    assert moved.min(0).tolist() == [4, 26, 22] and moved.max(0).tolist() == [7, 31, 27]
    assert by_id[1]["reader"] == "corrected" and by_id[1]["prompt_session"] == "02" and not by_id[1]["is_new"]
    assert by_id[7]["reader"] == "added" and by_id[7]["is_new"] and by_id[7]["first_session_index"] == 1
    assert by_id[7]["status"] == "present" and by_id[7]["voxel_count"] == 27

    # as if the detector had found a candidate at session 1 (it is off here): a row and a blob in the map
    labels1 = first.labels.copy()
    labels1[18:21, 30:33, 4:7] = 1_000_001
    candidate = lesion_rows(labels1, geometry, [1_000_001], {1_000_001: "new_candidate"}, {1_000_001: 5.0}, {}, {}, "P1", scans[1],
                            details={1_000_001: {"is_new": True, "first_session_index": 1}})
    labels_paths.append(write_labels(labels1, images[1], tmp_path / "l1.nii.gz"))
    tracking_paths.append(write_tracking(first.rows + candidate, tmp_path / "r1.parquet"))

    inputs = read_followup_inputs(scans, 2, labels_paths, transform_paths, tracking_paths, track)
    second = track_followup("P1", scans, 2, inputs, segmenter, track, 0.5)
    by_id = {r["lesion_id"]: r for r in second.rows}
    assert set(segmenter.calls[-1]) == {1, 7}  # the rejected candidate is not segmented again
    assert by_id[1_000_001]["status"] == "rejected" and by_id[1_000_001]["reader"] == "rejected"
    assert by_id[1_000_001]["voxel_count"] == 0 and not (second.labels == 1_000_001).any()
    # the correction holds from its session on: lesion 1 is carried from session 1's box, not the baseline's
    carried = np.argwhere(second.labels == 1)
    assert carried.min(0).tolist() == [4, 26, 22] and carried.max(0).tolist() == [7, 31, 27]
    assert by_id[7]["status"] == "present" and by_id[7]["first_session_index"] == 1 and by_id[7]["reader"] is None


def _baseline_box():
    from lesionlocator.segment.api import Prompt

    return Prompt(1, "box", box=((10.0, 14.0, 12.0), (13.0, 19.0, 17.0)))
