"""Transform chaining in track_followup: a lesion not seen at t-1 is propagated from its last-seen session;
the reader reads only the label maps that tracking uses."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from lesionlocator.core.config import RegisterConfig, TrackConfig
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
from tests.helpers import OBLIQUE_DIRECTION


class MaskEcho:
    """A segmenter that returns each mask prompt as the lesion's mask (isolates the propagation)."""

    def __init__(self, by_fallback=frozenset()):
        self.calls = []
        self.by_fallback = frozenset(by_fallback)

    def segment(self, image, prompts):
        self.calls.append(sorted(int(p.lesion_id) for p in prompts))
        labels = np.zeros(image.GetSize()[::-1], np.uint32)
        for prompt in prompts:
            labels[prompt.mask] = prompt.lesion_id
        return SegmentationResult(labels, {int(p.lesion_id): 1.0 for p in prompts}, by_fallback=self.by_fallback)


def _image(seed: int) -> sitk.Image:
    array = np.random.default_rng(seed).normal(0, 5, (24, 40, 36)).astype(np.float32)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((2.0, 1.5, 3.0))
    image.SetOrigin((-30.0, 12.0, 5.0))
    image.SetDirection(OBLIQUE_DIRECTION)
    return image


def _centroid(labels: np.ndarray, lesion_id: int, geometry: Geometry) -> np.ndarray:
    return geometry.index_to_world(np.argwhere(labels == lesion_id).mean(0))


def test_lesion_out_of_view_at_previous_session_is_propagated_from_last_seen(tmp_path):
    images = [_image(s) for s in range(3)]
    geometry = Geometry.of(images[0])
    scans = []
    for s, image in enumerate(images):
        scans.append(SessionScan(f"0{s + 1}", s, write_image(image, tmp_path / f"ses-{s}.nii.gz")))
    base = np.zeros(geometry.shape_zyx, np.uint32)
    base[10:14, 14:20, 12:18] = 1
    base[8:12, 24:30, 20:26] = 2
    # each transform maps world points of session s to session s-1; a rotation then a translation,
    # which do not commute, so composing them in the wrong order puts the lesion ~3 mm off
    centre = geometry.index_to_world(np.array([12.0, 20.0, 18.0]))
    first = sitk.Euler3DTransform(centre.tolist(), 0.0, 0.0, np.deg2rad(15.0), (1.0, -2.0, 0.5))
    second = sitk.TranslationTransform(3, (-8.0, 9.0, 3.0))
    transform_paths = [None, save_transform(first, tmp_path / "t1.tfm"), save_transform(second, tmp_path / "t2.tfm")]
    labels_paths = [write_labels(base, images[0], tmp_path / "l0.nii.gz")]
    rows = baseline_rows("P1", scans[0], base, geometry, [1, 2], {1: 1.0, 2: 1.0})
    # session 1: lesion 1 was out of the field of view (no voxels), lesion 2 present where expected
    at1 = np.zeros_like(base)
    at1[base == 2] = 2  # the content is irrelevant to the check; only lesion 2 comes from here
    labels_paths.append(write_labels(at1, images[1], tmp_path / "l1.nii.gz"))
    rows += lesion_rows(at1, geometry, [1, 2], {1: "out_of_fov", 2: "present"}, {}, {1: 0.0}, {}, "P1", scans[1])

    tracking_paths = [write_tracking([r for r in rows if r["session_index"] == s], tmp_path / f"t{s}.parquet") for s in (0, 1)]

    segmenter = MaskEcho(by_fallback={2})  # as if the network had left lesion 2 to the classical fallback
    track = TrackConfig(candidates=False, vanish_contrast_fraction=0.0, prompt_source="previous_mask")
    inputs = read_followup_inputs(scans, 2, labels_paths, transform_paths, tracking_paths, track)
    assert sorted(inputs.labels) == [0, 1] and inputs.previous_image is None and inputs.baseline_image is None
    result = track_followup("P1", scans, 2, inputs, segmenter, track, RegisterConfig().min_fraction_inside)

    assert segmenter.calls == [[1, 2]]
    by_id = {r["lesion_id"]: r for r in result.rows}
    assert by_id[1]["prompt_session"] == "01" and by_id[2]["prompt_session"] == "02"
    assert by_id[1]["status"] == "present"
    assert by_id[2]["by_fallback"] is True and by_id[1]["by_fallback"] is False
    # x2 -> T2 -> x1 -> T1 -> x0: the baseline centroid mapped back through both inverses
    expected = np.asarray(second.GetInverse().TransformPoint(first.GetInverse().TransformPoint(_centroid(base, 1, geometry).tolist())))
    np.testing.assert_allclose(_centroid(result.labels, 1, geometry), expected, atol=1.0)
    wrong = np.asarray(first.GetInverse().TransformPoint(second.GetInverse().TransformPoint(_centroid(base, 1, geometry).tolist())))
    assert np.linalg.norm(wrong - expected) > 2.5  # the check above can tell the order apart
    expected_2 = np.asarray(second.GetInverse().TransformPoint(_centroid(at1, 2, geometry).tolist()))
    np.testing.assert_allclose(_centroid(result.labels, 2, geometry), expected_2, atol=1.0)
