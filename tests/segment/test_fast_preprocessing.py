"""Preprocessing as nnU-Net does it, faster: the same crop, normalisation and resampling, the same masks."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
from nnunetv2.preprocessing.cropping.cropping import crop_to_nonzero
from nnunetv2.preprocessing.resampling.default_resampling import compute_new_shape, resample_data_or_seg_to_shape

import lesionlocator.segment.nnunet as nnunet
from lesionlocator.core.config import BUNDLED_MODEL, SegmentConfig
from lesionlocator.segment.api import Prompt
from lesionlocator.segment.encode import GridMap
from lesionlocator.segment.nnunet import NnUNetSegmenter, Preprocessed, nonzero_crop
from lesionlocator.segment.normalization import body_mask, body_zscore
from lesionlocator.segment.resampling import is_nnunet_data_resampling, resample_like_nnunet
from tests.segment.compare import assert_same_masks, mixed_prompts


def reference_body_zscore(image: np.ndarray, eps: float = 1e-8) -> np.ndarray:
    """The scheme as first written: float64 arithmetic on the whole volume."""
    image = np.asarray(image, dtype=np.float32)
    body = image[body_mask(image)]
    lo, hi = np.percentile(body, [0.5, 99.5])
    inside = np.clip(body, lo, hi)
    return ((np.clip(image, lo, hi) - inside.mean()) / max(inside.std(), eps)).astype(np.float32)


def reference_preprocess(model, array_zyx, spacing_zyx, keep_normalised=False) -> Preprocessed:
    """nnU-Net's own functions, one after the other (the way ``preprocess`` was first written)."""
    pm, cm = model.plans_manager, model.configuration_manager
    transpose = tuple(int(t) for t in pm.transpose_forward)
    data = np.ascontiguousarray(np.transpose(array_zyx.astype(np.float32), transpose))[None]
    spacing = [float(spacing_zyx[t]) for t in transpose]
    data, _, bbox = crop_to_nonzero(data)
    crop_shape = tuple(int(s) for s in data.shape[1:])
    new_shape = tuple(int(s) for s in compute_new_shape(crop_shape, spacing, list(cm.spacing)))
    data[0] = reference_body_zscore(data[0])
    normalised = data[0].copy() if keep_normalised else None
    data = resample_data_or_seg_to_shape(data, new_shape, spacing, list(cm.spacing), **cm.resampling_fn_data.keywords)
    grid = GridMap(transpose=transpose, crop_start=tuple(int(b[0]) for b in bbox), crop_shape=crop_shape, net_shape=new_shape)
    return Preprocessed(data=np.ascontiguousarray(data[0], dtype=np.float32), grid=grid, normalised=normalised, spacing=tuple(spacing))


@pytest.mark.parametrize("shape, spacing, target, separate", [
    ((20, 30, 40), (2.0, 0.8, 0.8), (3.0, 3.0, 3.0), None),   # down-sampling, a cubic spline over the volume
    ((20, 30, 40), (1.0, 1.0, 1.0), (0.7, 1.3, 1.0), None),   # up along z, down along y, x unchanged
    ((12, 30, 40), (6.0, 0.8, 0.8), (3.0, 1.5, 1.5), None),   # anisotropic: in plane per slice, then z (order 0)
    ((12, 30, 40), (6.0, 0.8, 0.8), (2.5, 0.8, 0.8), None),   # anisotropic, in plane unchanged
    ((20, 30, 40), (2.0, 1.0, 1.0), (3.0, 1.5, 1.5), True),   # separate z forced
])
def test_resampling_matches_nnunet(shape, spacing, target, separate):
    rng = np.random.default_rng(1)
    data = rng.standard_normal((1, *shape)).astype(np.float32) * 100
    data[0, :, :4] = -1000.0  # a flat region next to texture: where a spline overshoots and skimage clips
    new_shape = tuple(int(s) for s in compute_new_shape(shape, spacing, target))
    settings = {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": separate}
    reference = resample_data_or_seg_to_shape(data, new_shape, spacing, target, **settings)
    fast = resample_like_nnunet(data, new_shape, spacing, target, **settings)
    assert fast.shape == reference.shape == (1, *new_shape) and fast.dtype == np.float32
    assert float(np.abs(fast - reference).max()) <= 1e-5 * float(np.ptp(data))
    # The comparison can tell: without skimage's clip to the input's range the spline's overshoot shows.
    assert float(fast.min()) >= float(data.min()) and float(reference.min()) >= float(data.min())


def test_only_nnunets_image_resampling_is_replaced():
    assert is_nnunet_data_resampling(partial(resample_data_or_seg_to_shape, is_seg=False, order=3, order_z=0, force_separate_z=None))
    assert not is_nnunet_data_resampling(partial(resample_data_or_seg_to_shape, is_seg=True, order=1))
    assert not is_nnunet_data_resampling(partial(lambda data, *a, **k: data, order=3))


def test_nonzero_crop_matches_nnunet():
    data = np.zeros((1, 30, 40, 50), np.float32)
    data[0, 5:20, 8:35, 3:41] = 7.0
    data[0, 9:12, 15:20, 10:20] = 0.0  # a hole: nnU-Net's mask fills it
    data[0, 5:20, 8:12, 30:41] = 0.0  # a notch open to the outside: not filled
    ref_data, ref_seg, bbox = crop_to_nonzero(data.copy())
    cropped, seg, start = nonzero_crop(data, with_mask=True)
    assert start == tuple(int(b[0]) for b in bbox) and np.array_equal(cropped, ref_data)
    assert np.array_equal(seg, ref_seg) and (seg == -1).any()
    assert nonzero_crop(data, with_mask=False)[1] is None


def test_body_zscore_matches_the_float64_scheme(real_ct):
    import SimpleITK as sitk

    image = sitk.GetArrayFromImage(real_ct)
    out = body_zscore(image)
    assert out.dtype == np.float32 and image.dtype != np.float32  # the caller's array untouched
    assert float(np.abs(out - reference_body_zscore(image)).max()) <= 1e-5


def test_preprocessing_matches_nnunets_functions(lesion_case):
    import SimpleITK as sitk

    segmenter = NnUNetSegmenter(SegmentConfig(checkpoint=BUNDLED_MODEL, device="cpu"))
    model = segmenter._model_for("box")
    array = sitk.GetArrayFromImage(lesion_case.image)
    spacing = tuple(lesion_case.image.GetSpacing())[::-1]
    fast, reference = nnunet.preprocess(model, array, spacing), reference_preprocess(model, array, spacing)
    assert fast.grid == reference.grid
    assert float(np.abs(fast.data - reference.data).max()) <= 1e-4


@pytest.mark.parametrize("mirroring", [False, True])
def test_bundled_model_masks_unchanged_by_fast_preprocessing(lesion_case, monkeypatch, mirroring):
    ids, prompts = mixed_prompts(lesion_case)
    config = SegmentConfig(checkpoint=BUNDLED_MODEL, device="cpu", mirroring=mirroring)
    fast = NnUNetSegmenter(config).segment(lesion_case.image, prompts)
    monkeypatch.setattr(nnunet, "preprocess", reference_preprocess)
    reference = NnUNetSegmenter(config).segment(lesion_case.image, prompts)
    assert_same_masks(fast, reference, ids)


def test_a_scan_segmented_again_is_preprocessed_once(lesion_case, monkeypatch):
    """The segmenter keeps the last scan's preprocessing: segmenting the same scan again (a tracking job's
    tracked lesions, then its new-lesion candidates) does not preprocess it again and gives the same mask;
    a scan with one voxel changed, or the same voxels at another spacing, is preprocessed anew."""
    import SimpleITK as sitk

    calls = []
    real = nnunet.preprocess
    monkeypatch.setattr(nnunet, "preprocess", lambda *args, **kwargs: calls.append(1) or real(*args, **kwargs))
    segmenter = NnUNetSegmenter(SegmentConfig(checkpoint=BUNDLED_MODEL, device="cpu", mirroring=False))
    lesion_id = next(iter(lesion_case.boxes))
    prompt = [Prompt(lesion_id, "box", box=lesion_case.boxes[lesion_id])]
    first = segmenter.segment(lesion_case.image, prompt)
    again = segmenter.segment(sitk.Image(lesion_case.image), prompt)  # a copy: same voxels, same geometry
    assert len(calls) == 1 and np.array_equal(first.labels, again.labels)
    changed = sitk.Image(lesion_case.image)
    changed[0, 0, 0] = changed[0, 0, 0] + 1
    segmenter.segment(changed, prompt)
    respaced = sitk.Image(lesion_case.image)
    respaced.SetSpacing([s * 1.01 for s in respaced.GetSpacing()])
    segmenter.segment(respaced, prompt)
    assert len(calls) == 3
