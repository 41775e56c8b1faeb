"""Status accuracy and new-lesion metrics against hand-built label maps and tables (oblique, anisotropic grid)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from lesionlocator.core.errors import InputError
from lesionlocator.core.regions import dice_of_counts
from lesionlocator.evaluate.longitudinal import (
    FAR_MM,
    NONE,
    STATUS_EVALUATION_SCHEMA,
    confusion_matrix,
    evaluate_patient_longitudinal,
    groundtruth_table_path,
    headline_from_tables,
    match_new_lesions,
    new_lesion_detection,
    predicted_class,
    predicted_lesions,
    status_confusion,
    status_counts,
    status_counts_by_session,
    status_rows,
    true_class,
    truth_from_masks,
)
from lesionlocator.evaluate.tracking import evaluate_labels, label_overlap
from tests.evaluate.longitudinal_builders import world_centroid, write_patient
from tests.lesion_builders import ellipsoid, oblique_geometry


def test_classes():
    assert [true_class(s) for s in ("present", "split", "merged", "new", "vanished", "out_of_fov", None)] == [
        "present", "present", "present", "new", "vanished", "out_of_fov", "none"]  # fmt: skip
    assert predicted_class("new_candidate") == "new"
    assert predicted_class("present", is_new=True, first_sighting=True) == "new"  # a lesion a reader added
    assert predicted_class("present", is_new=True, first_sighting=False) == "present"
    assert predicted_class("split") == predicted_class("merged") == "present"
    assert [predicted_class(s) for s in ("uncertain", "lost", "not_found", "vanished", None)] == [
        "uncertain", "lost", "not_found", "vanished", "none"]  # fmt: skip


# --- status rows from tables alone ---------------------------------------------------------------


def _truth(rows):
    return pd.DataFrame(rows, columns=["session_index", "lesion_id", "status", "centroid_x", "centroid_y", "centroid_z"])


def _tracking(rows):
    frame = pd.DataFrame(rows, columns=["session_index", "lesion_id", "status", "is_new", "first_session_index",
                                        "centroid_x", "centroid_y", "centroid_z"])  # fmt: skip
    return predicted_lesions(frame)


def test_status_rows_correspondence_classes_and_counts():
    truth = _truth([
        (0, 1, "present", 0, 0, 0), (1, 1, "split", 1, 0, 0),  # split: present, reported merged
        (0, 2, "present", 50, 0, 0), (1, 2, "out_of_fov", 50, 0, 0),  # reported lost: flagged, not correct
        (0, 3, "present", 0, 50, 0), (1, 3, "present", 0, 50, 0),  # reported uncertain: flagged, not vanished
        (0, 4, "present", 0, 0, 50), (1, 4, "vanished", 0, 0, 50),  # reported present 30 mm away
        (1, 9, "new", 80, 80, 0),  # new, found by 1_000_002
        (1, 10, "new", 0, 80, 80),  # new, missed
    ])  # fmt: skip
    predicted = _tracking([
        (0, 1, "present", False, 0, 0, 0, 0), (1, 1, "merged", False, 0, 1, 0, 0),
        (0, 2, "present", False, 0, 50, 0, 0), (1, 2, "lost", False, 0, np.nan, np.nan, np.nan),
        (0, 3, "present", False, 0, 0, 50, 0), (1, 3, "uncertain", False, 0, 0, 52, 0),
        (0, 4, "present", False, 0, 0, 0, 50), (1, 4, "present", False, 0, 0, 30, 50),
        (1, 1_000_001, "new_candidate", True, 1, 20, 20, 20),  # false candidate
        (1, 1_000_002, "new_candidate", True, 1, 81, 80, 0),
        (1, 9, "present", False, 0, 80, 80, 0),  # same ID as the GT new lesion, but a tracked lesion: no pair
    ])  # fmt: skip
    rows = status_rows(truth, predicted, {9: 1_000_002}).assign(patient="P")
    by_gt = rows[rows.gt_lesion_id.notna()].set_index(["session_index", "gt_lesion_id"])
    assert by_gt.loc[(1, 1), ["pred_class", "correct", "centroid_distance_mm"]].tolist() == ["present", True, 0.0]
    assert by_gt.loc[(1, 2), ["true_class", "pred_class", "correct", "flagged"]].tolist() == ["out_of_fov", "lost", False, True]
    assert by_gt.loc[(1, 3), ["pred_class", "correct", "flagged"]].tolist() == ["uncertain", False, True]
    assert by_gt.loc[(1, 4), ["true_class", "pred_class"]].tolist() == ["vanished", "present"]
    assert by_gt.loc[(1, 4), "centroid_distance_mm"] == pytest.approx(30.0)
    assert by_gt.loc[(1, 9), ["pred_lesion_id", "pred_class", "correct", "gt_is_new"]].tolist() == [1_000_002, "new", True, True]
    assert by_gt.loc[(1, 9), "centroid_distance_mm"] == pytest.approx(1.0)
    assert by_gt.loc[(1, 10), ["pred_class", "correct"]].tolist() == ["none", False] and pd.isna(by_gt.loc[(1, 10), "pred_lesion_id"])
    alone = rows[rows.gt_lesion_id.isna()].set_index("pred_lesion_id")
    assert sorted(alone.index) == [9, 1_000_001]
    assert (alone.true_class == "none").all() and alone.loc[1_000_001, "new_candidate"] and not alone.loc[9, "new_candidate"]
    assert len(rows) == len(truth) + 2

    figures = headline_from_tables(rows, pd.DataFrame({"session_index": [], "gt_lesion_id": [], "detection": [], "dice": [],
                                                       "centre_distance_mm": [], "gt_equivalent_radius_mm": [],
                                                       "gt_volume_ml": [], "pred_volume_ml": []}))  # fmt: skip
    # follow-up, truly present: 1 (correct), 3 (uncertain) -> 1/2; 2 is out_of_fov, 4 vanished
    assert figures["status_accuracy_present"] == 0.5 and figures["n_present_flagged"] == 1
    assert figures["n_present_reported_vanished"] == 0  # uncertain and lost are no "vanished" call
    assert figures["n_reported_present_far"] == 1  # lesion 4; the tracked 9 has no truth to be far from
    assert figures["new_lesion_recall"] == 0.5  # 9 found, 10 missed
    assert figures["n_new_candidates"] == 2 and figures["false_new_candidates_per_scan"] == 1.0  # one follow-up scan
    assert np.isnan(figures["cpm_at_r"])


def test_a_present_lesion_called_vanished_is_counted_at_any_session():
    truth = _truth([(0, 1, "present", 0, 0, 0), (1, 1, "merged", 0, 0, 0), (2, 1, "present", 0, 0, 0),
                    (0, 2, "present", 0, 9, 0), (1, 2, "merged", 0, 9, 0), (2, 2, "present", 0, 9, 0)])  # fmt: skip
    predicted = _tracking([(0, 1, "present", False, 0, 0, 0, 0), (1, 1, "vanished", False, 0, np.nan, np.nan, np.nan),
                           (2, 1, "present", False, 0, 0, 0, 25),
                           (0, 2, "present", False, 0, 0, 9, 0), (1, 2, "merged", False, 0, 0, 30, 0),  # flagged already
                           (2, 2, "split", False, 0, 0, 9, 1)])  # fmt: skip
    rows = status_rows(truth, predicted, {}).assign(patient="P")
    figures = headline_from_tables(rows, pd.DataFrame(columns=["session_index", "gt_lesion_id", "detection", "dice",
                                   "centre_distance_mm", "gt_equivalent_radius_mm", "gt_volume_ml", "pred_volume_ml"]))  # fmt: skip
    assert figures["n_present_reported_vanished"] == 1 and figures["n_reported_present_far"] == 1
    assert figures["status_accuracy_present"] == 0.75  # 1: wrong, right; 2: merged and split both "present"
    assert np.isnan(figures["new_lesion_recall"]) and figures["false_new_candidates_per_scan"] == 0.0


def test_a_lesion_mostly_outside_the_field_of_view_may_be_reported_out_of_fov():
    truth = _truth([(0, 1, "present", 0, 0, 0), (1, 1, "present", 0, 0, 0),  # 20 % of it in view at 1
                    (0, 2, "present", 0, 40, 0), (1, 2, "present", 0, 40, 0),  # 80 % in view at 1
                    (0, 3, "present", 0, 80, 0), (1, 3, "present", 0, 80, 0)])  # 20 % in view, reported present
    truth["fraction_in_fov"] = [1.0, 0.2, 1.0, 0.8, 1.0, 0.2]
    predicted = _tracking([(0, 1, "present", False, 0, 0, 0, 0), (1, 1, "out_of_fov", False, 0, np.nan, np.nan, np.nan),
                           (0, 2, "present", False, 0, 0, 40, 0), (1, 2, "out_of_fov", False, 0, np.nan, np.nan, np.nan),
                           (0, 3, "present", False, 0, 0, 80, 0), (1, 3, "present", False, 0, 0, 80, 0)])  # fmt: skip
    rows = status_rows(truth, predicted, {}).set_index(["session_index", "gt_lesion_id"])
    assert rows.loc[(1, 1), ["true_class", "pred_class", "correct"]].tolist() == ["present", "out_of_fov", True]
    assert rows.loc[(1, 2), ["true_class", "pred_class", "correct"]].tolist() == ["present", "out_of_fov", False]
    assert rows.loc[(1, 3), ["pred_class", "correct"]].tolist() == ["present", True]


def test_a_new_lesion_never_takes_a_tracked_lesions_id_pairing():
    # a reader added lesion 5 at session 1 with the ID of a GT lesion of the baseline: not that lesion
    truth = _truth([(0, 5, "present", 0, 0, 0), (1, 5, "present", 0, 0, 0)])
    predicted = _tracking([(0, 5, "not_found", False, 0, np.nan, np.nan, np.nan), (1, 5, "present", True, 1, 40, 0, 0)])
    rows = status_rows(truth, predicted, {}).set_index(["session_index", "gt_lesion_id"], drop=False)
    assert rows.loc[(0, 5), "pred_class"] == "not_found" and not rows.loc[(0, 5), "correct"]
    assert rows.loc[(1, 5), "pred_class"] == "none"
    alone = rows[rows.gt_lesion_id.isna()]
    assert alone[["pred_lesion_id", "pred_class", "new_candidate"]].values.tolist() == [[5, "new", True]]


def test_old_tracking_tables_call_lesions_first_seen_after_baseline_new():
    frame = pd.DataFrame({"session_index": [0, 1, 1, 2, 2], "lesion_id": [1, 1, 1_000_001, 1_000_001, 2_000_001],
                          "status": ["present", "present", "new_candidate", "present", "new_candidate"]})  # fmt: skip
    out = predicted_lesions(frame)
    assert out.is_new.tolist() == [False, False, True, True, True]
    assert out.first_session_index.tolist() == [0, 0, 1, 1, 2]
    assert out.first_sighting.tolist() == [True, False, True, False, True]


# --- new lesions on label maps -------------------------------------------------------------------


def test_new_lesions_pair_by_world_distance_radius_or_overlap():
    g = oblique_geometry(size=(96, 96, 40))  # spacing 0.8 x 0.9 x 2.5 mm, rotated and tilted
    gt = np.zeros(g.shape_zyx, np.uint32)
    pred = np.zeros_like(gt)
    gt[ellipsoid(g, (8, 20, 20), (3, 3, 3))] = 5
    pred[ellipsoid(g, (11, 20, 20), (3, 3, 3))] = 1_000_001  # 3 slices: 7.5 mm, no overlap
    gt[ellipsoid(g, (8, 70, 20), (3, 3, 3))] = 6
    pred[ellipsoid(g, (13, 70, 20), (3, 3, 3))] = 1_000_002  # 5 slices: 12.5 mm (5 voxels: near in index units)
    gt[ellipsoid(g, (24, 45, 60), (13, 13, 13))] = 8
    pred[ellipsoid(g, (24, 45, 74), (3, 3, 3))] = 1_000_003  # 14 columns: 11.2 mm, within 8's radius, IoU ~0.01
    gt[ellipsoid(g, (32, 80, 80), (3, 3, 3))] = 1  # a baseline lesion: never paired with a new one
    pred[ellipsoid(g, (32, 80, 80), (3, 3, 3))] = 1_000_004
    overlap = label_overlap(pred, gt, g)
    distance = {(int(a), int(b)): d for a, row in zip(overlap.gt_ids, overlap.distance) for b, d in zip(overlap.pred_ids, row)}
    assert distance[5, 1_000_001] == pytest.approx(7.5, abs=0.05)
    assert distance[6, 1_000_002] == pytest.approx(12.5, abs=0.05)
    c8, c3 = world_centroid(g, gt == 8), world_centroid(g, pred == 1_000_003)
    assert 10.0 < np.linalg.norm(c8 - c3) < overlap.gt_radius_mm()[list(overlap.gt_ids).index(8)]
    assert overlap.iou[list(overlap.gt_ids).index(8), list(overlap.pred_ids).index(1_000_003)] < 0.1
    new_pred = {1: {1_000_001, 1_000_002, 1_000_003, 1_000_004}}
    pairs = match_new_lesions({1: overlap}, gt_new={5, 6, 8}, pred_new=new_pred)
    assert pairs == {5: 1_000_001, 8: 1_000_003}

    # by overlap alone, far from the centre: a long GT lesion and a prediction at one end
    gt2 = np.zeros_like(gt)
    pred2 = np.zeros_like(gt)
    gt2[ellipsoid(g, (20, 48, 48), (40, 4, 4))] = 5  # 40 mm half-length, equivalent radius ~10 mm
    pred2[ellipsoid(g, (20, 48, 48), (40, 4, 4)) & (np.arange(g.shape_zyx[2]) > 58)[None, None, :]] = 1_000_001
    pred2[ellipsoid(g, (20, 48, 48), (40, 4, 4)) & (np.arange(g.shape_zyx[2]) < 38)[None, None, :]] = 1_000_002
    o2 = label_overlap(pred2, gt2, g)
    assert (o2.distance > np.maximum(10.0, o2.gt_radius_mm())[:, None]).all() and (o2.iou > 0.1).all()
    pairs = match_new_lesions({1: o2}, {5}, {1: {1_000_001, 1_000_002}})
    assert len(pairs) == 1 and pairs[5] in (1_000_001, 1_000_002)  # one to one


def test_a_pair_is_made_once_and_holds():
    g = oblique_geometry(size=(64, 64, 24))
    gt = np.zeros(g.shape_zyx, np.uint32)
    gt[ellipsoid(g, (12, 30, 30), (4, 4, 4))] = 7
    near = np.where(gt > 0, 1_000_001, 0).astype(np.uint32)
    far = np.zeros_like(gt)
    far[ellipsoid(g, (12, 30, 10), (4, 4, 4))] = 1_000_001
    far[ellipsoid(g, (12, 30, 30), (4, 4, 4))] = 2_000_001  # a second new lesion on it later: the pair holds
    sessions = {0: label_overlap(np.zeros_like(gt), np.zeros_like(gt), g), 1: label_overlap(near, gt, g), 2: label_overlap(far, gt, g)}
    assert match_new_lesions(sessions, {7}, {1: {1_000_001}, 2: {1_000_001, 2_000_001}}) == {7: 1_000_001}
    # not called new at session 1 (e.g. rejected by a reader): paired at session 2 with what is there
    assert match_new_lesions(sessions, {7}, {1: set(), 2: {1_000_001, 2_000_001}}) == {7: 2_000_001}


def test_truth_from_masks():
    g = oblique_geometry(size=(40, 40, 12))
    maps = [np.zeros(g.shape_zyx, np.uint32) for _ in range(3)]
    maps[0][ellipsoid(g, (6, 10, 10), (4, 4, 4))] = 1
    maps[1][ellipsoid(g, (6, 28, 28), (4, 4, 4))] = 3
    maps[2][ellipsoid(g, (6, 10, 10), (4, 4, 4))] = 1
    truth = truth_from_masks({k: label_overlap(m, m, g) for k, m in enumerate(maps)})
    assert list(truth.itertuples(index=False, name=None))[:1][0][:3] == (0, 1, "present")
    assert [(r.session_index, r.lesion_id, r.status) for r in truth.itertuples()] == [
        (0, 1, "present"), (1, 3, "new"), (1, 1, "vanished"), (2, 1, "present"), (2, 3, "vanished")]  # fmt: skip
    row = truth.iloc[0]
    assert np.allclose(row[["centroid_x", "centroid_y", "centroid_z"]].astype(float), world_centroid(g, maps[0] == 1))
    assert truth.loc[truth.status == "vanished", "centroid_x"].isna().all()


# --- one patient end to end ----------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["table", "candidates_apart", "old_tracking"])
def test_evaluate_patient_longitudinal(tmp_path, variant):
    sessions, truth, g, gt, pred = write_patient(tmp_path, new_lesions_apart=variant == "candidates_apart",
                                                 old_tracking=variant == "old_tracking")  # fmt: skip
    evaluation, status = evaluate_patient_longitudinal(
        "P1", sessions, truth, evaluation_output=tmp_path / "e.parquet", status_output=tmp_path / "s.parquet"
    )
    assert pq.read_schema(tmp_path / "s.parquet").equals(STATUS_EVALUATION_SCHEMA)
    s = status.to_pandas()
    key = s.set_index(["session_index", "gt_lesion_id"])
    assert key.loc[(1, 7), ["pred_lesion_id", "true_class", "pred_class", "correct"]].tolist() == [1_000_001, "new", "new", True]
    assert key.loc[(1, 7), "centroid_distance_mm"] == pytest.approx(5.0, abs=0.05)  # 2 slices of 2.5 mm
    assert key.loc[(2, 7), ["pred_lesion_id", "pred_class", "correct"]].tolist() == [1_000_001, "present", True]
    assert key.loc[(1, 1), "pred_class"] == "vanished" and key.loc[(2, 1), ["pred_class", "flagged"]].tolist() == ["uncertain", True]
    lost = key.loc[(2, 2)]
    assert (lost.true_class, lost.pred_class) == ("vanished", "present")
    expected = np.linalg.norm(world_centroid(g, pred[2] == 2) - world_centroid(g, gt[1] == 2))
    assert lost.centroid_distance_mm == pytest.approx(expected) and expected > 20
    false = s[s.gt_lesion_id.isna()]
    assert false[["session_index", "pred_lesion_id", "true_class", "pred_class", "new_candidate"]].values.tolist() == [
        [2, 2_000_001, "none", "new", True]]  # fmt: skip

    e = evaluation.to_pandas()
    # the paired new lesion has its Dice and is no false positive; the tracked lesions go by ID
    new_row = e[(e.session_index == 1) & (e.gt_lesion_id == 7)].iloc[0]
    a, b = gt[1] == 7, pred[1] == 1_000_001
    assert new_row.pred_lesion_id == 1_000_001 and new_row.detection == "tp"
    assert new_row.dice == pytest.approx(dice_of_counts((a & b).sum(), a.sum(), b.sum())) and 0 < new_row.dice < 1
    assert 1_000_001 not in set(e.loc[e.detection == "fp", "pred_lesion_id"])
    assert sorted(e.loc[e.detection == "fp", "pred_lesion_id"]) == [2, 2_000_001]  # both at session 2
    plain = evaluate_labels(pred[1].astype(np.int64), gt[1].astype(np.int64), g)  # no pairs: the new lesion counts 0
    assert plain.loc[plain.gt_lesion_id == 7, "dice"].item() == 0.0

    figures = headline_from_tables(s, e)
    assert figures["status_accuracy_present"] == 0.5  # follow-ups: 1 wrong (vanished), 2 right, 1 flagged, 7 right
    assert figures["n_present_reported_vanished"] == 1 and figures["n_reported_present_far"] == 1
    assert figures["new_lesion_recall"] == 1.0 and figures["false_new_candidates_per_scan"] == 0.5
    # follow-up GT lesions: s1 {1: no voxels predicted, 2, 7 (5 mm)}, s2 {1, 7}: 4 of 5 within 25 mm
    assert figures["cpm_at_r"] == pytest.approx(0.8)
    assert figures["followup_dice"] == pytest.approx((0.0 + 1.0 + new_row.dice + 1.0 + 1.0) / 5)

    confusion = status_confusion(s)
    assert confusion.n.sum() == len(s)
    matrix = confusion_matrix(confusion)
    reference = pd.crosstab(s.loc[s.session_index > 0, "true_class"], s.loc[s.session_index > 0, "pred_class"])
    assert matrix.sum().sum() == reference.sum().sum()
    for t in reference.index:
        for p in reference.columns:
            assert matrix.loc[t, p] == reference.loc[t, p]
    assert list(matrix.index) == ["present", "new", "vanished", "none"]
    assert list(matrix.columns) == ["present", "new", "vanished", "uncertain"]


def test_without_the_truth_table_statuses_come_from_the_masks(tmp_path):
    sessions, _, _, _, _ = write_patient(tmp_path)
    _, status = evaluate_patient_longitudinal("P1", sessions, truth=None)
    _, same = evaluate_patient_longitudinal("P1", sessions, truth=pd.DataFrame(columns=["session", "lesion_id", "status"]))
    assert same.equals(status)  # a patient the table lacks
    s = status.to_pandas().set_index(["session_index", "gt_lesion_id"])
    assert s.loc[(1, 7), ["true_status", "pred_lesion_id"]].tolist() == ["new", 1_000_001]
    assert s.loc[(2, 2), "true_status"] == "vanished" and pd.isna(s.loc[(2, 2), "centroid_distance_mm"])


def test_inputs_are_checked(tmp_path):
    sessions, truth, *_ = write_patient(tmp_path)
    missing = [sessions[0], type(sessions[1])(**{**sessions[1].__dict__, "tracking": tmp_path / "none.parquet"})]
    with pytest.raises(InputError, match="tracking table not found"):
        evaluate_patient_longitudinal("P1", missing, truth)
    other = oblique_geometry(size=(80, 72, 32), spacing=(1.0, 1.0, 1.0))
    from tests.lesion_builders import write_labels

    bad = write_labels(np.zeros(other.shape_zyx), other, tmp_path / "bad.nii.gz")
    with pytest.raises(InputError, match="does not match ground truth"):
        evaluate_patient_longitudinal("P1", [type(sessions[0])(**{**sessions[0].__dict__, "labels": bad})], truth)


def test_groundtruth_table_path(tmp_path):
    mask = tmp_path / "derivatives" / "groundtruth" / "sub-P1" / "ses-02" / "lesions.nii.gz"
    mask.parent.mkdir(parents=True)
    assert groundtruth_table_path(mask, "P1", "02") is None  # no table
    (tmp_path / "derivatives" / "groundtruth" / "groundtruth.parquet").write_bytes(b"")
    assert groundtruth_table_path(mask, "P1", "02") == tmp_path / "derivatives" / "groundtruth" / "groundtruth.parquet"
    assert groundtruth_table_path(mask, "P2", "02") is None and groundtruth_table_path(tmp_path / "x.nii.gz", "P1", "02") is None


def test_new_lesion_recall_late_and_by_size():
    """Three GT new lesions: a 20 mm one found at first sight, a 20 mm one found only at the next follow-up, an 8 mm
    one never found. Recall 1/3 at first sight, 2/3 by the next follow-up, 1/2 among the two of measurable size."""
    def row(patient, gt, index, pred, true_class):
        return {"patient": patient, "gt_lesion_id": gt, "session_index": index, "pred_lesion_id": pred, "true_class": true_class}

    status = pd.DataFrame([
        row("P1", 5.0, 1, 1_000_001.0, "new"), row("P1", 5.0, 2, 1_000_001.0, "present"),
        row("P2", 7.0, 1, np.nan, "new"), row("P2", 7.0, 2, 2_000_001.0, "present"),
        row("P3", 9.0, 2, np.nan, "new"), row("P3", 1.0, 2, 1.0, "present"),
    ])
    evaluation = pd.DataFrame({"patient": ["P1", "P2", "P3"], "gt_lesion_id": [5.0, 7.0, 9.0], "session_index": [1, 1, 2],
                               "gt_equivalent_radius_mm": [10.0, 10.0, 4.0]})
    figures = new_lesion_detection(status, evaluation)
    assert figures["new_lesion_recall_by_next"] == pytest.approx(2 / 3)
    assert figures["new_lesion_recall_large"] == pytest.approx(1 / 2) and figures["n_gt_new_large"] == 2


def _status_counts_reference(s: pd.DataFrame, far_mm: float = FAR_MM) -> dict[str, float]:
    """status_counts as first written: masks over one frame, scans by drop_duplicates."""
    followup = s["session_index"] > 0
    present = followup & s["true_class"].eq("present")
    gt_new = s["true_class"].eq("new")
    candidate = s["new_candidate"].astype(bool) & followup
    scans = s.loc[followup, ["patient", "session_index"]].drop_duplicates() if "patient" in s else s.loc[followup, ["session_index"]]
    return {
        "n_present_followup": float(present.sum()), "n_present_correct": float((present & s["correct"]).sum()),
        "n_present_flagged": float((present & s["flagged"]).sum()),
        "n_present_reported_vanished": float((s["true_class"].eq("present") & s["pred_class"].eq("vanished")).sum()),
        "n_reported_present": float(s["pred_class"].eq("present").sum()),
        "n_reported_present_far": float((s["pred_status"].eq("present") & (s["centroid_distance_mm"] > far_mm)).sum()),
        "n_gt_new": float(gt_new.sum()), "n_gt_new_detected": float((gt_new & s["pred_lesion_id"].notna()).sum()),
        "n_new_candidates": float(candidate.sum()), "n_false_new_candidates": float((candidate & s["gt_lesion_id"].isna()).sum()),
        "n_followup_scans": float(len(scans)),
    }  # fmt: skip


@pytest.mark.parametrize("seed", range(4))
def test_status_counts_by_session_index_equal_the_counts_of_each_index(seed):
    """Random status rows (nulls, far centroids, one-session patients): each session index's counts, and
    their sum, equal the plain counts of its rows."""
    rng = np.random.default_rng(seed)
    n = 400
    classes = np.array(["present", "new", "vanished", "out_of_fov", "uncertain", "lost", NONE])
    pred_class = rng.choice(classes, n)
    status = pd.DataFrame(
        {
            "patient": rng.choice([f"P{i}" for i in range(12)], n), "session_index": rng.integers(0, 4, n).astype("int32"),
            "gt_lesion_id": pd.array(np.where(rng.random(n) < 0.2, None, rng.integers(1, 9, n)), dtype="Int64"),
            "pred_lesion_id": pd.array(np.where(rng.random(n) < 0.2, None, rng.integers(1, 9, n)), dtype="Int64"),
            "pred_status": np.where(pred_class == NONE, None, pred_class), "true_class": rng.choice(classes, n), "pred_class": pred_class,
            "correct": rng.random(n) < 0.5, "flagged": rng.random(n) < 0.2, "new_candidate": rng.random(n) < 0.2,
            "centroid_distance_mm": np.where(rng.random(n) < 0.3, np.nan, rng.uniform(0, 40, n)),
        }
    )  # fmt: skip
    status.loc[status["patient"] == "P0", "session_index"] = 0  # a patient with one session
    for frame in (status, status.drop(columns="patient")):  # without patients a scan is a session index
        by_session = status_counts_by_session(frame)
        assert list(by_session.index) == sorted(frame["session_index"].unique())
        for index, group in frame.groupby("session_index"):
            assert by_session.loc[index].to_dict() == _status_counts_reference(group)
        assert status_counts(frame) == _status_counts_reference(frame)
        assert status_counts(frame.iloc[:0]) == _status_counts_reference(frame.iloc[:0])
