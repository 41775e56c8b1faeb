from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lesionlocator.aggregate.cohort import (
    SUMMARY_SCHEMA,
    TABLE_SCHEMAS,
    aggregate_cohort,
    per_patient_files,
    read_cohort_table,
    write_run_manifest,
)  # fmt: skip
from lesionlocator.core.config import StudyConfig
from lesionlocator.core.errors import InputError
from lesionlocator.evaluate.tracking import evaluate_patient
from lesionlocator.measure.lesions import measure_patient
from tests.lesion_builders import make_patient, write_labels

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def cohort(tmp_path, geometry):
    """Three patients (one without lesions) with lesion and evaluation tables."""
    lesion_files, eval_files = [], []
    for k, growth in enumerate([(1.0, 0.6, 1.3), (1.0, 1.1, 1.2)]):
        folder = tmp_path / f"P{k}"
        sessions = make_patient(folder, geometry, seed=k, growth=growth)
        measure_patient(f"P{k}", sessions, folder / "lesions.parquet")
        lesion_files.append(folder / "lesions.parquet")
        evaluate_patient(f"P{k}", [(s, labels, labels) for s, _, labels in sessions], folder / "eval.parquet")
        eval_files.append(folder / "eval.parquet")
    empty = write_labels(np.zeros(geometry.shape_zyx), geometry, tmp_path / "empty.nii.gz")
    measure_patient("P9", [("ses-00", None, empty)], tmp_path / "P9.parquet")
    lesion_files.append(tmp_path / "P9.parquet")
    manifest = pd.DataFrame({"patient": ["P9", "P9"], "session": ["ses-00", "ses-01"], "session_index": [0, 1]})
    return lesion_files, eval_files, manifest


def test_dataset_tables_schemas_and_readers(tmp_path, cohort):
    import duckdb

    lesion_files, eval_files, manifest = cohort
    out = tmp_path / "dataset"
    counts = aggregate_cohort(lesion_files, out, evaluation_files=eval_files, sessions=manifest, files_per_partition=2)
    assert counts["lesions"] == 12 and counts["patients"] == 3 and counts["sessions"] == 8
    for name, schema in TABLE_SCHEMAS.items():
        frame = read_cohort_table(out, name)
        assert list(frame.columns) == schema.names
        for path in (out / name).rglob("*.parquet"):
            found = pq.read_schema(path)
            assert found.equals(schema.remove(schema.get_field_index("session_index")) if "session_index=" in str(path) else schema)
    lesions = pd.read_parquet(out / "lesions")
    assert len(lesions) == 12 and set(lesions.patient) == {"P0", "P1"}
    con = duckdb.connect()
    n, max_index = con.execute(
        f"select count(*), max(session_index) from read_parquet('{out}/lesions/**/*.parquet', hive_partitioning=true)"
    ).fetchone()
    assert (n, max_index) == (12, 2)
    patients = con.execute(f"select patient, n_lesions, best_response from read_parquet('{out}/patients/*.parquet') order by patient").fetchall()
    assert patients == [("P0", 2, "PR"), ("P1", 2, "SD"), ("P9", 0, None)]  # P0: PR, then PD
    summary = read_cohort_table(out, "summary")
    assert pq.read_schema(next((out / "summary").glob("*.parquet"))).equals(SUMMARY_SCHEMA)
    dice = summary[(summary.scope == "eval_all") & (summary.metric == "mean_dice")].value.item()
    assert dice == pytest.approx(1.0)  # prediction == ground truth
    metrics = read_cohort_table(out, "session_metrics")
    assert (metrics.cpm_at_r == 1.0).all() and (metrics.f1 == 1.0).all()


def test_aggregation_is_deterministic(tmp_path, cohort):
    lesion_files, eval_files, manifest = cohort
    for name in ("a", "b"):
        aggregate_cohort(lesion_files, tmp_path / name, evaluation_files=eval_files, sessions=manifest, files_per_partition=1)
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.parquet"))
    files_b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*.parquet"))
    assert files_a == files_b and files_a
    for rel in files_a:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel


def test_bad_input_leaves_previous_dataset(tmp_path, cohort):
    lesion_files, _, _ = cohort
    out = tmp_path / "dataset"
    aggregate_cohort(lesion_files, out)
    bad = tmp_path / "bad.parquet"
    pd.DataFrame({"x": [1]}).to_parquet(bad)
    with pytest.raises(InputError, match="bad.parquet"):
        aggregate_cohort(lesion_files + [bad], out)
    with pytest.raises(InputError, match="not found"):
        aggregate_cohort([tmp_path / "missing.parquet"], out)
    assert len(read_cohort_table(out, "patients")) == 2  # P9 has no lesion rows and no manifest here
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".dataset")] == []


def test_run_manifest(tmp_path):
    checkpoint = tmp_path / "model.pt"
    checkpoint.write_bytes(b"weights")
    path = tmp_path / "run.json"
    write_run_manifest(path, StudyConfig(), checkpoint=checkpoint, timings={"measure": 1.5})
    data = json.loads(path.read_text())
    assert len(data["config_sha256"]) == 64 and data["packages"]["pyarrow"]
    assert data["checkpoint"]["sha256"]["model.pt"] == __import__("hashlib").sha256(b"weights").hexdigest()
    assert data["timings_s"] == {"measure": 1.5}
    other = write_run_manifest(tmp_path / "r2.json", StudyConfig(results_dir="elsewhere"))
    assert other["config_sha256"] != data["config_sha256"]


@pytest.mark.slow
def test_bench_smoke_100_files(tmp_path):
    result = subprocess.run([sys.executable, str(REPO / "bench" / "bench_aggregate.py"), "--patients", "100", "--workdir", str(tmp_path)],
                            capture_output=True, text=True, check=True, cwd=REPO)  # fmt: skip
    assert "rows: lesions 10000, sessions 500, patients 100" in result.stdout


def test_summary_follows_the_session_metrics_rules(tmp_path):
    """One patient: the pooled per-session summary equals session_metrics (one set of per-row rules)."""
    from lesionlocator.core.io import write_patient_table
    from lesionlocator.evaluate.tracking import evaluation_table, session_metrics

    rng = np.random.default_rng(3)
    n = 40
    detection = rng.choice(["tp", "fn", "fp"], n)
    is_gt = detection != "fp"
    matched = ~is_gt | (rng.random(n) < 0.7)
    frame = pd.DataFrame(
        {
            "patient": "P0", "session_index": rng.integers(0, 3, n), "detection": detection,
            "gt_lesion_id": pd.Series(np.arange(1, n + 1)).where(is_gt),
            "pred_lesion_id": pd.Series(np.arange(1, n + 1)).where(matched),
            "dice": np.where(is_gt, np.where(matched, rng.random(n), 0.0), np.nan),
            "centre_distance_mm": np.where(is_gt & matched, rng.random(n) * 50, np.nan),
            "gt_equivalent_radius_mm": np.where(is_gt, rng.random(n) * 30, np.nan),
            "gt_volume_ml": np.where(is_gt, rng.random(n), np.nan), "pred_volume_ml": np.where(matched, rng.random(n), np.nan),
        }
    )  # fmt: skip
    frame["session"] = "ses-0" + frame["session_index"].astype(str)
    write_patient_table(evaluation_table(frame), tmp_path / "eval.parquet")
    aggregate_cohort([], tmp_path / "dataset", evaluation_files=[tmp_path / "eval.parquet"], radius_mm=20.0)
    summary = read_cohort_table(tmp_path / "dataset", "summary")
    pooled = summary[summary.scope == "eval_session_index"].pivot(index="session_index", columns="metric", values="value")
    metrics = session_metrics(frame, radius_mm=20.0).set_index("session_index")
    for column in ("mean_dice", "cpm_at_r", "cpm_at_radius", "dice_at_r", "mean_centre_distance_mm", "precision", "recall", "f1",
                   "fp_volume_ml", "fn_volume_ml", "tp", "fp", "fn", "n_gt"):  # fmt: skip
        assert pooled[column].to_numpy() == pytest.approx(metrics[column].to_numpy(dtype=float), nan_ok=True), column


def test_status_tables_and_headline_figures(tmp_path):
    from lesionlocator.evaluate.longitudinal import (
        evaluate_patient_longitudinal,
        headline_figures,
        headline_from_tables,
        status_confusion,
    )
    from tests.evaluate.longitudinal_builders import write_patient

    eval_files, status_files, status, evaluation = [], [], [], []
    for patient in ("P1", "P2"):
        folder = tmp_path / patient
        folder.mkdir()
        sessions, truth, *_ = write_patient(folder, patient)
        e, s = evaluate_patient_longitudinal(patient, sessions, truth, folder / "evaluation.parquet", folder / "status.parquet")
        eval_files.append(folder / "evaluation.parquet")
        status_files.append(folder / "status.parquet")
        status.append(s.to_pandas())
        evaluation.append(e.to_pandas())
    status, evaluation = pd.concat(status, ignore_index=True), pd.concat(evaluation, ignore_index=True)
    out = tmp_path / "dataset"
    counts = aggregate_cohort([], out, evaluation_files=eval_files, status_files=status_files, files_per_partition=1)
    assert counts["status_evaluation"] == len(status) == 2 * 9

    table = read_cohort_table(out, "status_evaluation")
    key = ["patient", "session_index", "gt_lesion_id", "pred_lesion_id"]
    expected = status.sort_values(key, ignore_index=True)
    pd.testing.assert_frame_equal(table.sort_values(key, ignore_index=True), expected, check_dtype=False)
    confusion = read_cohort_table(out, "status_confusion")
    reference = status_confusion(status).sort_values(["session_index", "true_class", "pred_class"], ignore_index=True)
    pd.testing.assert_frame_equal(confusion, reference, check_dtype=False)
    assert counts["status_confusion"] == len(reference)

    figures = headline_from_tables(status, evaluation)
    assert headline_figures(out) == pytest.approx(figures, nan_ok=True)
    assert figures["n_gt_new"] == 2 and figures["n_followup_scans"] == 4 and figures["false_new_candidates_per_scan"] == 0.5
    summary = read_cohort_table(out, "summary")
    pooled = summary[summary.scope == "status_all"].set_index("metric")["value"]
    for metric in ("status_accuracy_present", "new_lesion_recall", "false_new_candidates_per_scan", "n_present_reported_vanished",
                   "n_reported_present_far", "n_false_new_candidates"):  # fmt: skip
        assert pooled[metric] == pytest.approx(figures[metric]), metric
    followup = summary[summary.scope == "eval_followup"].set_index("metric")["value"]
    assert followup["cpm_at_r"] == pytest.approx(figures["cpm_at_r"]) and followup["mean_dice"] == pytest.approx(figures["followup_dice"])
    by_session = summary[(summary.scope == "status_session_index") & (summary.metric == "n_false_new_candidates")]
    assert dict(zip(by_session.session_index, by_session.value)) == {0: 0.0, 1: 0.0, 2: 2.0}
    bench = subprocess.run([sys.executable, str(REPO / "bench" / "bench_longitudinal_metrics.py"), str(out)],
                           capture_output=True, text=True, check=True, cwd=REPO)  # fmt: skip
    line = next(x for x in bench.stdout.splitlines() if x.startswith("false_new_candidates_per_scan"))
    assert line.split()[1:] == ["0.500", "<=", "1.0", "met"]
    assert "status confusion over the follow-ups" in bench.stdout


def _dataset_scan(files, schema) -> pa.Table:
    """The reader aggregation used before: one pyarrow.dataset scan of the batch with the declared schema."""
    import pyarrow.dataset as ds

    return ds.dataset([str(f) for f in files], schema=schema, format="parquet").to_table()


def test_batch_reader_gives_the_dataset_scan_frame(tmp_path, cohort):
    """Files of the declared schema, one lacking a nullable column, one with its columns reordered:
    the same table as one dataset scan, row for row, in the order of the files."""
    from lesionlocator.aggregate.cohort import _read_batch
    from lesionlocator.evaluate.tracking import EVALUATION_SCHEMA
    from lesionlocator.measure.lesions import LESION_SCHEMA

    lesion_files, eval_files, _ = cohort
    table = pq.read_table(lesion_files[0])
    pq.write_table(table.drop_columns(["organ"]), tmp_path / "no_organ.parquet")
    pq.write_table(table.select(table.column_names[::-1]), tmp_path / "reordered.parquet")
    files = [lesion_files[1], tmp_path / "no_organ.parquet", lesion_files[2], tmp_path / "reordered.parquet", lesion_files[0]]
    batch = _read_batch([str(f) for f in files], LESION_SCHEMA)
    assert batch.column("organ").null_count >= len(table)
    assert batch.schema.equals(LESION_SCHEMA, check_metadata=True) and batch.equals(_dataset_scan(files, LESION_SCHEMA))
    assert _read_batch([str(f) for f in eval_files], EVALUATION_SCHEMA).equals(_dataset_scan(eval_files, EVALUATION_SCHEMA))


def test_dataset_is_byte_identical_to_the_dataset_scan_reader(tmp_path, cohort, monkeypatch):
    import lesionlocator.aggregate.cohort as module

    lesion_files, eval_files, manifest = cohort
    aggregate_cohort(lesion_files, tmp_path / "new", evaluation_files=eval_files, sessions=manifest, files_per_partition=2)
    monkeypatch.setattr(module, "_read_batch", _dataset_scan)
    aggregate_cohort(lesion_files, tmp_path / "old", evaluation_files=eval_files, sessions=manifest, files_per_partition=2)
    files = sorted(p.relative_to(tmp_path / "old") for p in (tmp_path / "old").rglob("*.parquet"))
    assert files == sorted(p.relative_to(tmp_path / "new") for p in (tmp_path / "new").rglob("*.parquet")) and len(files) > 8
    for rel in files:
        assert (tmp_path / "new" / rel).read_bytes() == (tmp_path / "old" / rel).read_bytes(), rel


def test_evaluation_tables_as_arrow_files_give_the_same_dataset(tmp_path, cohort):
    """The pipeline's evaluation tables are Arrow IPC files (``.arrow``): the same cohort dataset, byte
    for byte, as from the same tables in Parquet, and the batch reader gives the same table."""
    from lesionlocator.aggregate.cohort import _read_batch
    from lesionlocator.core.io import read_patient_table, write_patient_table
    from lesionlocator.evaluate.tracking import EVALUATION_SCHEMA

    lesion_files, eval_files, manifest = cohort
    arrow_files = [write_patient_table(pq.read_table(f), tmp_path / f"{f.parent.name}.arrow") for f in eval_files]
    assert read_patient_table(arrow_files[0]).equals(pq.read_table(eval_files[0]))
    assert _read_batch([str(f) for f in arrow_files], EVALUATION_SCHEMA).equals(_read_batch([str(f) for f in eval_files], EVALUATION_SCHEMA))
    for name, files in (("parquet", eval_files), ("arrow", arrow_files)):
        aggregate_cohort(lesion_files, tmp_path / name, evaluation_files=files, sessions=manifest, files_per_partition=2)
    found = sorted(p.relative_to(tmp_path / "parquet") for p in (tmp_path / "parquet").rglob("*.parquet"))
    assert found == sorted(p.relative_to(tmp_path / "arrow") for p in (tmp_path / "arrow").rglob("*.parquet")) and len(found) > 8
    for rel in found:
        assert (tmp_path / "parquet" / rel).read_bytes() == (tmp_path / "arrow" / rel).read_bytes(), rel
    (tmp_path / "bad.arrow").write_bytes(b"not an Arrow file")
    with pytest.raises(InputError, match=r"bad\.arrow: not a readable Arrow file"):
        aggregate_cohort(lesion_files, tmp_path / "arrow", evaluation_files=arrow_files + [tmp_path / "bad.arrow"])


def test_a_folder_of_tables_counts_a_table_kept_in_both_formats_once(tmp_path, geometry):
    """The pipeline writes each lesion table as Parquet (for users) and Arrow IPC (for aggregation):
    a folder holding both aggregates each patient once, from the Arrow copy."""
    folder = tmp_path / "tables"
    for patient in ("P1", "P2"):
        sessions = make_patient(tmp_path / patient, geometry)
        measure_patient(patient, sessions, [folder / f"{patient}.parquet", folder / f"{patient}.arrow"])
    measure_patient("P3", make_patient(tmp_path / "P3", geometry), folder / "P3.parquet")
    files = per_patient_files([folder])
    assert [f.name for f in files] == ["P1.arrow", "P2.arrow", "P3.parquet"]
    counts = aggregate_cohort(files, tmp_path / "cohort")
    lesions = read_cohort_table(tmp_path / "cohort", "lesions")
    assert counts["patients"] == 3 and not lesions.duplicated(["patient", "session_index", "lesion_id"]).any()
