"""Segmentation and tracking quality against ground-truth instance masks.

Per lesion (one row per ground-truth lesion and per unmatched predicted lesion, each session):

* **Correspondence** of a ground-truth (GT) lesion with a predicted one: ``"id"`` (default) pairs
  lesions with the same ID, as the tracking keeps the IDs of the prompts; ``"overlap"`` uses the
  detection matching below. New lesions, which the tracking gives IDs of its own, go by fixed pairs
  (:func:`evaluate_overlap`, found by :mod:`lesionlocator.evaluate.longitudinal`).
* **Dice** and IoU of the GT lesion with its corresponding prediction (0 when there is none).
* **Centre distance**: world distance (mm) between the voxel centroids of the two masks.
* **Equivalent radius** of the GT lesion: radius of the sphere of the same volume, (3V / 4 pi)^(1/3).
* **Detection**: one-to-one matching of GT and predicted lesions maximising the summed IoU
  (Hungarian algorithm, ``scipy.optimize.linear_sum_assignment``); a pair counts when IoU > 0.1.
  Matched GT lesions are ``tp``, unmatched GT lesions ``fn``, unmatched predictions ``fp``.

Per session (:func:`session_metrics`): precision, recall and F1 of detection; mean Dice over GT
lesions; **CPM@r**, the share of GT lesions whose corresponding predicted centre lies within r mm
(r = 25 mm by default) and **CPM@radius**, within the lesion's own equivalent radius; **Dice@r**, the
mean Dice of the GT lesions matched within r; mean centre distance over GT lesions that have a
prediction; false-positive volume (summed volume of ``fp`` predictions, mL) and false-negative
volume (summed volume of ``fn`` GT lesions, mL). A session with neither GT nor predicted lesions
has no rows.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Mapping, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
from scipy.optimize import linear_sum_assignment

from lesionlocator.core.errors import InputError
from lesionlocator.core.io import Geometry, geometry_difference, read_geometry, read_image, write_patient_table
from lesionlocator.core.regions import dice_of_counts

log = logging.getLogger(__name__)

Correspondence = Literal["id", "overlap"]

#: One row per GT lesion and per unmatched predicted lesion, per session.
EVALUATION_SCHEMA = pa.schema(
    [
        pa.field("patient", pa.string(), nullable=False),
        pa.field("session", pa.string(), nullable=False),
        pa.field("session_index", pa.int32(), nullable=False),
        pa.field("gt_lesion_id", pa.int64()),
        pa.field("pred_lesion_id", pa.int64()),
        pa.field("detection", pa.string(), nullable=False),
        pa.field("gt_volume_ml", pa.float64()),
        pa.field("pred_volume_ml", pa.float64()),
        pa.field("dice", pa.float64()),
        pa.field("iou", pa.float64()),
        pa.field("centre_distance_mm", pa.float64()),
        pa.field("gt_equivalent_radius_mm", pa.float64()),
        pa.field("det_pred_lesion_id", pa.int64()),
        pa.field("det_iou", pa.float64()),
    ]
)

#: One row per patient x session (x radius r).
SESSION_METRICS_SCHEMA = pa.schema(
    [
        pa.field("patient", pa.string(), nullable=False),
        pa.field("session", pa.string(), nullable=False),
        pa.field("session_index", pa.int32(), nullable=False),
        pa.field("n_gt", pa.int32(), nullable=False),
        pa.field("n_pred", pa.int32(), nullable=False),
        pa.field("tp", pa.int32(), nullable=False),
        pa.field("fp", pa.int32(), nullable=False),
        pa.field("fn", pa.int32(), nullable=False),
        pa.field("precision", pa.float64()),
        pa.field("recall", pa.float64()),
        pa.field("f1", pa.float64()),
        pa.field("mean_dice", pa.float64()),
        pa.field("radius_mm", pa.float64(), nullable=False),
        pa.field("cpm_at_r", pa.float64()),
        pa.field("cpm_at_radius", pa.float64()),
        pa.field("dice_at_r", pa.float64()),
        pa.field("mean_centre_distance_mm", pa.float64()),
        pa.field("fp_volume_ml", pa.float64(), nullable=False),
        pa.field("fn_volume_ml", pa.float64(), nullable=False),
    ]
)


def _instances(labels: np.ndarray, geometry: Geometry) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """IDs, voxel counts and world centroids ``(n, 3)`` (LPS mm) of every lesion in a label map."""
    coords = np.nonzero(labels)
    values = labels[coords]
    ids, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    centroid_index = np.stack([np.bincount(inverse, weights=c, minlength=ids.size) for c in coords], axis=1)
    centroid_index = centroid_index / np.maximum(counts, 1)[:, None]
    return ids.astype(np.int64), counts.astype(np.int64), geometry.index_to_world(centroid_index.reshape(-1, 3))


def overlap_matrix(gt: np.ndarray, pred: np.ndarray, gt_ids: np.ndarray, pred_ids: np.ndarray) -> np.ndarray:
    """Voxel counts of every (GT lesion, predicted lesion) intersection, shape (n_gt, n_pred)."""
    both = (gt > 0) & (pred > 0)
    pairs = (gt[both].astype(np.int64) << 32) | pred[both].astype(np.int64)
    keys, counts = np.unique(pairs, return_counts=True)
    matrix = np.zeros((gt_ids.size, pred_ids.size), dtype=np.int64)
    matrix[np.searchsorted(gt_ids, keys >> 32), np.searchsorted(pred_ids, keys & 0xFFFFFFFF)] = counts
    return matrix


def match_detections(iou: np.ndarray, threshold: float = 0.1) -> list[tuple[int, int]]:
    """One-to-one (row, column) pairs maximising the summed IoU among pairs with IoU > threshold."""
    if iou.size == 0:
        return []
    gain = np.where(iou > threshold, iou, 0.0)
    rows, cols = linear_sum_assignment(gain, maximize=True)
    return [(int(r), int(c)) for r, c in zip(rows, cols) if gain[r, c] > 0]


@dataclass(frozen=True)
class LabelOverlap:
    """What the metrics need of one session's predicted and GT label maps (same grid), without the maps.

    ``*_ids`` ascending lesion IDs; ``*_counts`` their voxel counts; ``*_centres`` their voxel
    centroids ``(n, 3)``, world mm (LPS, x y z); ``inter[g, p]`` voxels shared by GT lesion ``g`` and
    predicted lesion ``p``; ``voxel_ml`` the volume of one voxel (mL).
    """

    gt_ids: np.ndarray
    gt_counts: np.ndarray
    gt_centres: np.ndarray
    pred_ids: np.ndarray
    pred_counts: np.ndarray
    pred_centres: np.ndarray
    inter: np.ndarray
    voxel_ml: float

    @property
    def iou(self) -> np.ndarray:
        """IoU of every (GT, predicted) pair, shape (n_gt, n_pred)."""
        union = self.gt_counts[:, None] + self.pred_counts[None, :] - self.inter
        return np.divide(self.inter, union, out=np.zeros(self.inter.shape), where=union > 0)

    @property
    def distance(self) -> np.ndarray:
        """World distance (mm) between the centroids of every (GT, predicted) pair, shape (n_gt, n_pred)."""
        return np.linalg.norm(self.gt_centres[:, None, :] - self.pred_centres[None, :, :], axis=-1)

    def gt_radius_mm(self) -> np.ndarray:
        """Equivalent radius (mm) of every GT lesion: the sphere of the same volume, (3V / 4 pi)^(1/3)."""
        return (3.0 * self.gt_counts * self.voxel_ml * 1000.0 / (4.0 * np.pi)) ** (1.0 / 3.0)


def label_overlap(pred: np.ndarray, gt: np.ndarray, geometry: Geometry) -> LabelOverlap:
    """The :class:`LabelOverlap` of a predicted and a GT label map on one grid (z, y, x arrays)."""
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from ground truth {gt.shape}")
    gt_ids, gt_counts, gt_centres = _instances(gt, geometry)
    pred_ids, pred_counts, pred_centres = _instances(pred, geometry)
    inter = overlap_matrix(gt, pred, gt_ids, pred_ids)
    return LabelOverlap(gt_ids, gt_counts, gt_centres, pred_ids, pred_counts, pred_centres, inter, geometry.voxel_volume_ml())


def evaluate_labels(
    pred: np.ndarray,
    gt: np.ndarray,
    geometry: Geometry,
    correspondence: Correspondence = "id",
    iou_threshold: float = 0.1,
    pairs: Mapping[int, int | None] | None = None,
) -> pd.DataFrame:
    """Per-lesion evaluation of one predicted label map against its ground truth (same grid).

    Returns the columns of :data:`EVALUATION_SCHEMA` without patient/session/session_index; see
    :func:`evaluate_overlap` for ``pairs``.
    """
    return evaluate_overlap(label_overlap(pred, gt, geometry), correspondence, iou_threshold, pairs)


def evaluate_overlap(
    overlap: LabelOverlap,
    correspondence: Correspondence = "id",
    iou_threshold: float = 0.1,
    pairs: Mapping[int, int | None] | None = None,
) -> pd.DataFrame:
    """Per-lesion evaluation rows (:data:`EVALUATION_SCHEMA` without patient/session/session_index).

    ``pairs`` (GT ID -> predicted ID, or None for no prediction) fixes the correspondence of some GT
    lesions: the new lesions, which the tracking gives IDs of its own
    (:func:`lesionlocator.evaluate.longitudinal.match_new_lesions`). With ``correspondence="id"`` a
    fixed pair is also a detection (``tp``: the pair passed the new-lesion criterion, IoU or centre
    distance), so a predicted new lesion that found a GT new lesion is no false positive; the other
    lesions are matched by IoU as usual. With ``"overlap"`` every lesion goes by the IoU matching
    and ``pairs`` is ignored.
    """
    if correspondence not in ("id", "overlap"):
        raise ValueError(f"unknown correspondence {correspondence!r} (use 'id' or 'overlap')")
    o = overlap
    iou = o.iou
    pred_index = {int(v): k for k, v in enumerate(o.pred_ids)}
    gt_index = {int(v): k for k, v in enumerate(o.gt_ids)}
    fixed: dict[int, int | None] = {}
    if correspondence == "id" and pairs:
        fixed = {gt_index[g]: pred_index.get(p) if p is not None else None for g, p in pairs.items() if g in gt_index}
    # the fixed pairs are detections of their own; the rest are matched by IoU
    taken = {p for p in fixed.values() if p is not None}
    free_gt = [g for g in range(o.gt_ids.size) if fixed.get(g) is None]
    free_pred = [p for p in range(o.pred_ids.size) if p not in taken]
    matches = [(free_gt[r], free_pred[c]) for r, c in match_detections(iou[np.ix_(free_gt, free_pred)], iou_threshold)]
    det_of_gt = {g: p for g, p in matches} | {g: p for g, p in fixed.items() if p is not None}
    matched_pred = set(det_of_gt.values())
    radius = o.gt_radius_mm()

    rows = []
    for g, gt_id in enumerate(o.gt_ids):
        if g in fixed:
            p = fixed[g]
        elif correspondence == "id":
            p = pred_index.get(int(gt_id))
        else:
            p = det_of_gt.get(g)
        det = det_of_gt.get(g)
        row = {
            "gt_lesion_id": int(gt_id),
            "pred_lesion_id": None if p is None else int(o.pred_ids[p]),
            "detection": "tp" if det is not None else "fn",
            "gt_volume_ml": o.gt_counts[g] * o.voxel_ml,
            "pred_volume_ml": None if p is None else o.pred_counts[p] * o.voxel_ml,
            "dice": 0.0 if p is None else dice_of_counts(o.inter[g, p], o.gt_counts[g], o.pred_counts[p]),
            "iou": 0.0 if p is None else float(iou[g, p]),
            "centre_distance_mm": None if p is None else float(np.linalg.norm(o.gt_centres[g] - o.pred_centres[p])),
            "gt_equivalent_radius_mm": float(radius[g]),
            "det_pred_lesion_id": None if det is None else int(o.pred_ids[det]),
            "det_iou": None if det is None else float(iou[g, det]),
        }
        rows.append(row)
    for p, pred_id in enumerate(o.pred_ids):
        if p not in matched_pred:
            rows.append({"pred_lesion_id": int(pred_id), "detection": "fp", "pred_volume_ml": o.pred_counts[p] * o.voxel_ml})
    columns = [f.name for f in EVALUATION_SCHEMA][3:]
    return pd.DataFrame.from_records(rows, columns=columns)


def evaluation_table(frame: pd.DataFrame) -> pa.Table:
    """Arrow table of an evaluation frame with exactly :data:`EVALUATION_SCHEMA`."""
    frame = frame.reindex(columns=EVALUATION_SCHEMA.names).copy()
    for column in ("gt_lesion_id", "pred_lesion_id", "det_pred_lesion_id"):
        frame[column] = frame[column].astype("Int64")
    for column in ("gt_volume_ml", "pred_volume_ml", "dice", "iou", "centre_distance_mm", "gt_equivalent_radius_mm", "det_iou"):
        frame[column] = frame[column].astype("float64")
    return pa.Table.from_pandas(frame, schema=EVALUATION_SCHEMA, preserve_index=False).replace_schema_metadata(None)


def evaluate_patient(
    patient: str,
    sessions: Sequence[tuple],
    output: str | Path | None = None,
    correspondence: Correspondence = "id",
    iou_threshold: float = 0.1,
) -> pa.Table:
    """Evaluate every session of one patient; ``sessions`` lists ``(session, pred_path, gt_path)``
    in time order, or ``(session, pred_path, gt_path, session_index)`` when only some sessions have
    ground truth (the position in the list is the session_index otherwise).

    Both label maps of a session must share one geometry (checked for all sessions before any
    evaluation). Writes :data:`EVALUATION_SCHEMA` atomically when ``output`` is given (Parquet, or
    Arrow IPC for a ``.arrow`` path: :func:`~lesionlocator.core.io.write_patient_table`).
    """
    for _, pred_path, gt_path, *_ in sessions:
        difference = geometry_difference(read_geometry(pred_path), read_geometry(gt_path))
        if difference is not None:
            raise InputError(pred_path, f"prediction geometry does not match ground truth {gt_path}: {difference}")
    frames = []
    for position, (session, pred_path, gt_path, *given) in enumerate(sessions):
        index = int(given[0]) if given else position
        pred, _ = read_label_map(pred_path)
        gt, geometry = read_label_map(gt_path)
        frame = evaluate_labels(pred, gt, geometry, correspondence, iou_threshold)
        frames.append(frame.assign(patient=patient, session=session, session_index=index))
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=EVALUATION_SCHEMA.names)
    table = evaluation_table(frame)
    if output is not None:
        write_patient_table(table, output)
        log.info("%s: %d evaluation row(s) -> %s", patient, table.num_rows, output)
    return table


def read_label_map(path: str | Path) -> tuple[np.ndarray, Geometry]:
    """A lesion instance map (int64, z y x; IDs checked) and its geometry."""
    import SimpleITK as sitk

    image = read_image(path, check_finite=False)
    return _labels(sitk.GetArrayFromImage(image), path), Geometry.of(image)


def _labels(array: np.ndarray, path) -> np.ndarray:
    if not np.issubdtype(array.dtype, np.integer):
        if not np.all(np.mod(array, 1) == 0):
            raise InputError(path, "label map holds non-integer values")
    array = array.astype(np.int64, copy=False)
    if array.size and (array.min() < 0 or array.max() > 2**31 - 1):
        raise InputError(path, "lesion IDs must lie in 0..2**31-1")
    return array


def lesion_outcomes(evaluation: pd.DataFrame, radius_mm: float = 25.0) -> pd.DataFrame:
    """What each evaluation row counts for in the session figures, one row per evaluation row.

    The one definition of these rules: :func:`session_metrics` averages them per session and the
    cohort summary (``aggregate.cohort``) adds them up over partitions. Columns:

    * ``is_gt``, ``tp``, ``fp``, ``fn`` (bool): the row is a GT lesion; its detection outcome;
    * ``within_r``, ``within_radius`` (bool): a GT lesion whose predicted centre lies within
      ``radius_mm`` mm / within the lesion's own equivalent radius;
    * ``dice``: Dice of a GT lesion (NaN on predicted-only rows); ``dice_within_r``: of a GT lesion
      within ``radius_mm`` (NaN otherwise);
    * ``centre_distance_mm``: of a GT lesion that has a prediction (NaN otherwise);
    * ``fp_volume_ml``, ``fn_volume_ml``: volume of an unmatched prediction / of a missed GT lesion (0 otherwise).
    """
    e = evaluation
    is_gt = e["gt_lesion_id"].notna()
    distance = e["centre_distance_mm"].astype(float)
    dice = e["dice"].astype(float)
    within_r = is_gt & (distance <= radius_mm)
    return pd.DataFrame(
        {
            "is_gt": is_gt, "tp": e["detection"].eq("tp"), "fp": e["detection"].eq("fp"), "fn": e["detection"].eq("fn"),
            "within_r": within_r, "within_radius": is_gt & (distance <= e["gt_equivalent_radius_mm"].astype(float)),
            "dice": dice.where(is_gt), "dice_within_r": dice.where(within_r),
            "centre_distance_mm": distance.where(is_gt),
            "fp_volume_ml": e["pred_volume_ml"].astype(float).where(e["detection"].eq("fp"), 0.0),
            "fn_volume_ml": e["gt_volume_ml"].astype(float).where(e["detection"].eq("fn"), 0.0),
        }
    )  # fmt: skip


def session_metrics(evaluation: pd.DataFrame, radius_mm: float = 25.0) -> pd.DataFrame:
    """Per patient x session metrics (columns of :data:`SESSION_METRICS_SCHEMA`) from evaluation rows.

    Vectorised over any number of patients; ``radius_mm`` is r of CPM@r and Dice@r. The per-row
    rules are :func:`lesion_outcomes`.
    """
    e = evaluation
    rows = lesion_outcomes(e, radius_mm)
    work = pd.DataFrame(
        {
            "patient": e["patient"],
            "session": e["session"],
            "session_index": e["session_index"],
            "n_gt": rows["is_gt"],
            "tp": rows["tp"],
            "fp": rows["fp"],
            "fn": rows["fn"],
            "_dice_gt": rows["dice"],
            "_within_r": rows["within_r"].where(rows["is_gt"]),
            "_within_radius": rows["within_radius"].where(rows["is_gt"]),
            "_dice_r": rows["dice_within_r"],
            "_distance": rows["centre_distance_mm"],
            "_fp_vol": rows["fp_volume_ml"],
            "_fn_vol": rows["fn_volume_ml"],
        }
    )
    for column in ("_within_r", "_within_radius"):
        work[column] = work[column].astype(float)
    grouped = work.groupby(["patient", "session_index"], sort=True)
    out = grouped.agg(
        session=("session", "first"),
        n_gt=("n_gt", "sum"), tp=("tp", "sum"), fp=("fp", "sum"), fn=("fn", "sum"),
        mean_dice=("_dice_gt", "mean"), cpm_at_r=("_within_r", "mean"), cpm_at_radius=("_within_radius", "mean"),
        dice_at_r=("_dice_r", "mean"), mean_centre_distance_mm=("_distance", "mean"),
        fp_volume_ml=("_fp_vol", "sum"), fn_volume_ml=("_fn_vol", "sum"),
    ).reset_index()  # fmt: skip
    out["n_pred"] = out["tp"] + out["fp"]
    with np.errstate(divide="ignore", invalid="ignore"):
        out["precision"] = (out["tp"] / out["n_pred"]).where(out["n_pred"] > 0)
        out["recall"] = (out["tp"] / out["n_gt"]).where(out["n_gt"] > 0)
        denominator = 2 * out["tp"] + out["fp"] + out["fn"]
        out["f1"] = (2 * out["tp"] / denominator).where(denominator > 0)
    out["radius_mm"] = float(radius_mm)
    for column in ("n_gt", "n_pred", "tp", "fp", "fn", "session_index"):
        out[column] = out[column].astype("int32")
    return out[SESSION_METRICS_SCHEMA.names]


def session_metrics_table(frame: pd.DataFrame) -> pa.Table:
    """Arrow table of a session-metrics frame with exactly :data:`SESSION_METRICS_SCHEMA`."""
    return pa.Table.from_pandas(frame, schema=SESSION_METRICS_SCHEMA, preserve_index=False).replace_schema_metadata(None)
