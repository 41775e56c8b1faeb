"""evaluate-model plumbing: cases, prompts per lesion, Dice per prompt type, summary."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from lesionlocator.segment.api import SegmentationResult
from lesionlocator.train.evaluate_model import (
    dataset_cases,
    evaluate_segmenters,
    lesion_prompts,
    size_class,
    summarize,
    summarize_by_size,
)


def _key(image: sitk.Image) -> bytes:
    return sitk.GetArrayViewFromImage(image).tobytes()


class OracleFromLabels:
    """Returns, per prompt, the connected component of the ground truth the prompt hits (box: all of it)."""

    def __init__(self, labels_by_image):
        self.labels_by_image = labels_by_image

    def segment(self, image, prompts):
        truth = self.labels_by_image[_key(image)]
        out = np.zeros(truth.shape, np.uint32)
        for p in prompts:
            lo, hi = p.extent()
            region = tuple(slice(int(a), int(b) + 1) for a, b in zip(lo, hi))
            if p.kind == "point":
                out[truth == truth[tuple(int(v) for v in p.point)]] = p.lesion_id
            else:
                hit = np.zeros(truth.shape, bool)
                hit[region] = True
                ids = set(np.unique(truth[hit & (truth > 0)]))
                out[np.isin(truth, list(ids))] = p.lesion_id
        return SegmentationResult(labels=out, scores={p.lesion_id: 1.0 for p in prompts})


def test_every_lesion_gets_three_prompts(raw_dataset):
    cases = dataset_cases(raw_dataset)
    assert len(cases) == 3 and {c[3] for c in cases} == {"CT"}
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(cases[0][2])))
    lesions = lesion_prompts(labels, np.random.default_rng(0))
    assert len(lesions) >= 2
    for lesion_id, mask, prompts in lesions:
        assert mask[tuple(int(v) for v in prompts["point"].point)]
        lo, hi = (np.asarray(c) for c in prompts["box"].box)
        where = np.argwhere(mask)
        assert np.all(lo == where.min(0)) and np.all(hi == where.max(0))
        assert (prompts["mask"].mask & mask).any()


def test_box_grow_moves_box_faces(raw_dataset):
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(dataset_cases(raw_dataset)[0][2])))
    tight = {i: p["box"].box for i, _, p in lesion_prompts(labels, np.random.default_rng(0))}
    shape = np.asarray(labels.shape)
    for grow in (2, -1, -50):
        for lesion_id, mask, prompts in lesion_prompts(labels, np.random.default_rng(0), box_grow=grow):
            lo, hi = (np.asarray(c) for c in prompts["box"].box)
            t_lo, t_hi = (np.asarray(c) for c in tight[lesion_id])
            assert np.all(lo <= hi)
            if grow > 0:  # every face out by `grow` voxels, unless the image ends first
                assert np.all(lo == np.maximum(t_lo - grow, 0)) and np.all(hi == np.minimum(t_hi + grow, shape - 1))
            else:  # inside the tight box, never smaller than its middle voxel(s)
                assert np.all(lo >= t_lo) and np.all(hi <= t_hi)
                assert np.all(lo <= (t_lo + t_hi) // 2) and np.all(hi >= (t_lo + t_hi + 1) // 2)
                if grow == -1:
                    assert np.all(lo == np.minimum(t_lo + 1, (t_lo + t_hi) // 2))


def test_dice_table_and_summary(raw_dataset):
    import cc3d

    truths = {}
    for _, image_path, label_path, _ in dataset_cases(raw_dataset):
        labels = sitk.GetArrayFromImage(sitk.ReadImage(str(label_path)))
        truths[_key(sitk.ReadImage(str(image_path)))] = cc3d.connected_components(labels, connectivity=26)
    table = evaluate_segmenters([raw_dataset], {"oracle": lambda: OracleFromLabels(truths)}, seed=1)
    assert set(table.prompt) == {"point", "box", "mask"} and set(table.segmenter) == {"oracle"}
    assert (table[table.prompt == "point"].dice == 1.0).all()
    points = table[table.prompt == "point"]
    assert (points.predicted_voxels == points.voxels).all()  # the oracle's point answer is the lesion
    # Dice can reach no higher than the two sizes allow.
    bound = 2 * np.minimum(table.predicted_voxels, table.voxels) / (table.predicted_voxels + table.voxels)
    assert (table.dice <= bound + 1e-6).all() and (table.predicted_voxels != table.voxels).any()
    assert table.dice.between(0, 1).all()
    summary = summarize(table)
    assert list(summary.columns[:3]) == ["cohort", "modality", "segmenter"]
    assert summary.loc[0, "point"] == 1.0 and summary.loc[0, "lesions"] == len(table) // 3
    again = evaluate_segmenters([raw_dataset], {"oracle": lambda: OracleFromLabels(truths)}, seed=1)
    pd.testing.assert_frame_equal(table, again)
    # size: the diameter of a ball of the lesion's volume in mm, from the case's voxel volume
    spacing = np.prod(sitk.ReadImage(str(dataset_cases(raw_dataset)[0][1])).GetSpacing())
    first = table.iloc[0]
    np.testing.assert_allclose(first.diameter_mm, (6 * first.voxels * spacing / np.pi) ** (1 / 3), atol=1e-3)
    by_size = summarize_by_size(table)
    assert set(by_size["size"]) <= {"<=10 mm", "10-30 mm", ">30 mm", "all"}
    whole = by_size[by_size["size"] == "all"]
    assert int(whole.lesions.sum()) == len(table) // 3
    assert int(by_size[by_size["size"] != "all"].lesions.sum()) == len(table) // 3


def test_size_classes_include_their_upper_edge():
    assert list(size_class([3.0, 10.0, 10.01, 30.0, 30.5])) == ["<=10 mm", "<=10 mm", "10-30 mm", "10-30 mm", ">30 mm"]


def test_modality_from_cases_json_then_case_name(raw_dataset):
    import json

    (raw_dataset / "cases.json").write_text(json.dumps({"case000": {"modality": "MR"}}))
    assert [c[3] for c in dataset_cases(raw_dataset)] == ["MR", "CT", "CT"]
    (raw_dataset / "labelsTr" / "case001.nii.gz").rename(raw_dataset / "labelsTr" / "mr_case001.nii.gz")
    (raw_dataset / "imagesTr" / "case001_0000.nii.gz").rename(raw_dataset / "imagesTr" / "mr_case001_0000.nii.gz")
    assert dict((c[0], c[3]) for c in dataset_cases(raw_dataset))["mr_case001"] == "MR"


def test_box_margin_option(raw_dataset, tmp_path, capsys):
    from lesionlocator.cli import main
    from lesionlocator.cli.train import _box_margin

    assert _box_margin("none") is None and _box_margin("2.5") == 2.5 and _box_margin("0") == 0.0
    for bad in ("-1", "wide", "nan"):
        with pytest.raises(SystemExit):
            main(["evaluate-model", str(raw_dataset), "-o", str(tmp_path / "x.parquet"), "--box-margin-mm", bad])
        assert "not a margin in mm" in capsys.readouterr().err
    assert not (tmp_path / "x.parquet").exists()
    with pytest.raises(SystemExit):
        main(["evaluate-model", str(raw_dataset), "-o", str(tmp_path / "x.parquet"), "--box-grow", "1.5"])
    assert not (tmp_path / "x.parquet").exists()
