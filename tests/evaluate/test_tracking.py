"""Evaluation metrics against independent references: MONAI's Dice and brute-force matching."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from scipy import ndimage

from lesionlocator.core.errors import InputError
from lesionlocator.core.io import Geometry
from lesionlocator.evaluate.tracking import EVALUATION_SCHEMA, evaluate_labels, evaluate_patient, lesion_outcomes, session_metrics
from tests.lesion_builders import oblique_geometry, write_labels

monai_metrics = pytest.importorskip("monai.metrics", reason="monai (test extra) is not installed")
torch = pytest.importorskip("torch")


def random_instances(rng, shape, n, ids):
    labels = np.zeros(shape, np.int64)
    for lesion_id in ids[:n]:
        centre = rng.integers([2, 4, 4], np.array(shape) - [2, 4, 4])
        radius = rng.uniform(1.5, 4.5, 3)
        zz, yy, xx = np.ogrid[: shape[0], : shape[1], : shape[2]]
        blob = ((zz - centre[0]) / radius[0] * 2) ** 2 + ((yy - centre[1]) / radius[1]) ** 2 + ((xx - centre[2]) / radius[2]) ** 2 <= 1
        labels[blob & (labels == 0)] = lesion_id
    return labels


def perturb(rng, labels):
    """A prediction: each lesion shifted by a voxel or two; one dropped; one false positive added."""
    pred = np.zeros_like(labels)
    ids = [i for i in np.unique(labels) if i]
    for lesion_id in ids[1:]:
        shift = rng.integers(-2, 3, 3)
        pred[np.roll(labels == lesion_id, shift, axis=(0, 1, 2)) & (pred == 0)] = lesion_id
    pred[1:3, 1:4, 1:4] = 99
    return pred


def brute_force_matching(iou: np.ndarray, threshold: float) -> float:
    """Best summed IoU of a one-to-one matching using only pairs with IoU > threshold, and its size."""
    n_gt, n_pred = iou.shape
    best = (0.0, 0)
    for k in range(min(n_gt, n_pred) + 1):
        for rows in itertools.combinations(range(n_gt), k):
            for cols in itertools.permutations(range(n_pred), k):
                values = [iou[r, c] for r, c in zip(rows, cols)]
                if all(v > threshold for v in values):
                    best = max(best, (round(sum(values), 12), k))
    return best


@pytest.mark.parametrize("seed", range(6))
def test_random_masks_against_references(seed):
    rng = np.random.default_rng(seed)
    geometry = oblique_geometry(size=(30, 28, 12), spacing=(0.9, 1.2, 2.5))
    gt = random_instances(rng, geometry.shape_zyx, 5, [2, 5, 7, 8, 2**31 - 1])
    pred = perturb(rng, gt)
    frame = evaluate_labels(pred, gt, geometry)
    gt_rows = frame[frame.gt_lesion_id.notna()].set_index("gt_lesion_id")
    gt_ids = [int(i) for i in np.unique(gt) if i]
    pred_ids = [int(i) for i in np.unique(pred) if i]
    assert sorted(gt_rows.index) == gt_ids

    # Dice per lesion: MONAI on one-hot masks of the same-ID pair
    for lesion_id in gt_ids:
        y = torch.from_numpy((gt == lesion_id)[None, None].astype(np.float32))
        y_pred = torch.from_numpy((pred == lesion_id)[None, None].astype(np.float32))
        expected = monai_metrics.compute_dice(y_pred, y, include_background=True, ignore_empty=False).item()
        assert gt_rows.loc[lesion_id, "dice"] == pytest.approx(expected, abs=1e-6)

    # centre distance: scipy centre of mass through the image geometry
    for lesion_id in gt_ids:
        if lesion_id not in pred_ids:
            assert pd.isna(gt_rows.loc[lesion_id, "centre_distance_mm"])
            continue
        a = geometry.index_to_world(np.array(ndimage.center_of_mass(gt == lesion_id)))
        b = geometry.index_to_world(np.array(ndimage.center_of_mass(pred == lesion_id)))
        assert gt_rows.loc[lesion_id, "centre_distance_mm"] == pytest.approx(np.linalg.norm(a - b), abs=1e-6)

    # detection: brute-force optimal matching with IoU > 0.1
    iou = np.array([[((gt == g) & (pred == p)).sum() / ((gt == g) | (pred == p)).sum() for p in pred_ids] for g in gt_ids])
    best_sum, best_n = brute_force_matching(iou, 0.1)
    tp = (frame.detection == "tp").sum()
    assert tp == best_n
    assert frame.det_iou.sum() == pytest.approx(best_sum, abs=1e-9)
    assert (frame.detection == "fp").sum() == len(pred_ids) - best_n
    assert (frame.detection == "fn").sum() == len(gt_ids) - best_n

    # session metrics against a hand computation
    e = frame.assign(patient="P", session="s", session_index=0)
    metrics = session_metrics(e, radius_mm=3.0).iloc[0]
    voxel_ml = geometry.voxel_volume_ml()
    distances = gt_rows["centre_distance_mm"]
    radius = (3 * np.array([(gt == i).sum() * voxel_ml * 1000 for i in gt_rows.index]) / (4 * np.pi)) ** (1 / 3)
    within = (distances <= 3.0).to_numpy()
    assert metrics.precision == pytest.approx(best_n / len(pred_ids))
    assert metrics.recall == pytest.approx(best_n / len(gt_ids))
    assert metrics.f1 == pytest.approx(2 * best_n / (len(pred_ids) + len(gt_ids)))
    assert metrics.cpm_at_r == pytest.approx(within.mean())
    assert metrics.cpm_at_radius == pytest.approx((distances.to_numpy() <= radius).mean())
    expected_dice_r = gt_rows["dice"].to_numpy()[within].mean() if within.any() else np.nan
    assert metrics.dice_at_r == pytest.approx(expected_dice_r, nan_ok=True)
    assert metrics.mean_centre_distance_mm == pytest.approx(distances.dropna().mean())
    matched_pred = set(frame.det_pred_lesion_id.dropna().astype(int))
    fp_voxels = sum((pred == p).sum() for p in pred_ids if p not in matched_pred)
    matched_gt = set(frame.loc[frame.detection == "tp", "gt_lesion_id"].astype(int))
    fn_voxels = sum((gt == g).sum() for g in gt_ids if g not in matched_gt)
    assert metrics.fp_volume_ml == pytest.approx(fp_voxels * voxel_ml)
    assert metrics.fn_volume_ml == pytest.approx(fn_voxels * voxel_ml)


def test_overlap_correspondence_pairs_by_detection():
    geometry = Geometry((10, 10, 4), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), tuple(np.eye(3).ravel()))
    gt = np.zeros(geometry.shape_zyx, np.int64)
    gt[1:3, 2:6, 2:6] = 1
    pred = np.zeros_like(gt)
    pred[1:3, 2:6, 3:7] = 42  # same lesion, other ID
    by_id = evaluate_labels(pred, gt, geometry, correspondence="id")
    by_overlap = evaluate_labels(pred, gt, geometry, correspondence="overlap")
    assert by_id.loc[by_id.gt_lesion_id == 1, "dice"].item() == 0.0
    assert by_overlap.loc[by_overlap.gt_lesion_id == 1, "dice"].item() == pytest.approx(2 * 24 / 64)
    assert by_overlap.loc[by_overlap.gt_lesion_id == 1, "pred_lesion_id"].item() == 42


def test_evaluate_patient_schema_and_geometry_check(tmp_path, geometry):
    gt = np.zeros(geometry.shape_zyx, np.uint32)
    gt[10:14, 20:26, 20:26] = 3
    pred = np.roll(gt, 1, axis=2)
    sessions = [("s0", write_labels(pred, geometry, tmp_path / "p.nii.gz"), write_labels(gt, geometry, tmp_path / "g.nii.gz"))]
    out = tmp_path / "eval.parquet"
    evaluate_patient("P", sessions, out)
    assert pq.read_schema(out).equals(EVALUATION_SCHEMA)
    later = evaluate_patient("P", [(*sessions[0], 3)]).to_pandas()
    assert (later.session_index == 3).all() and later.dice.item() == pytest.approx(5 / 6)
    other = Geometry(geometry.size, (1.0, 1.0, 1.0), geometry.origin, geometry.direction)
    bad = [("s0", write_labels(pred, other, tmp_path / "q.nii.gz"), sessions[0][2])]
    with pytest.raises(InputError, match="spacing"):
        evaluate_patient("P", bad, tmp_path / "bad.parquet")
    assert not (tmp_path / "bad.parquet").exists()


def test_lesion_outcomes_rules():
    evaluation = pd.DataFrame(
        {
            "gt_lesion_id": pd.array([1, 2, 3, None], dtype="Int64"),
            "detection": ["tp", "tp", "fn", "fp"],
            "dice": [0.8, 0.5, 0.0, None],
            "centre_distance_mm": [3.0, 30.0, None, None],
            "gt_equivalent_radius_mm": [5.0, 40.0, 2.0, None],
            "gt_volume_ml": [1.0, 2.0, 0.5, None],
            "pred_volume_ml": [1.1, 2.5, None, 0.7],
        }
    )
    rows = lesion_outcomes(evaluation, radius_mm=25.0)
    assert rows["is_gt"].tolist() == [True, True, True, False]
    assert rows["within_r"].tolist() == [True, False, False, False]
    assert rows["within_radius"].tolist() == [True, True, False, False]
    assert rows["dice"].tolist()[:3] == [0.8, 0.5, 0.0] and np.isnan(rows["dice"].iloc[3])
    assert rows["dice_within_r"].notna().tolist() == [True, False, False, False]
    assert rows["centre_distance_mm"].notna().tolist() == [True, True, False, False]
    assert rows["fp_volume_ml"].tolist() == [0.0, 0.0, 0.0, 0.7] and rows["fn_volume_ml"].tolist() == [0.0, 0.0, 0.5, 0.0]

