"""The end-of-run summary, from a hand-made run.json and cohort tables."""

from __future__ import annotations

import io
import json

import pyarrow as pa
import pyarrow.parquet as pq

from lesionlocator.aggregate.summary import print_run_summary, run_summary


def write_run(results, failures: dict[str, str]) -> None:
    (results / "cohort" / "patients").mkdir(parents=True)
    patients = pa.table({"patient": ["P1", "P2", "P3", "P4"], "best_response": ["PR", "SD", "PR", None],
                         "n_flagged": pa.array([0, 2, 1, 0], pa.int32())})  # fmt: skip
    pq.write_table(patients, results / "cohort" / "patients" / "part-00000.parquet")
    # (patient, lesion, status, by_fallback, new_lesion, needs_review) per session: 4 lesion-sessions flagged
    sessions = [[("P1", 1, "present", False, None, False), ("P1", 2, "present", False, None, False),
                 ("P2", 5, "present", True, None, True), ("P3", 1, "present", False, None, False)],
                [("P1", 1, "lost", False, None, True), ("P2", 5, "split", True, None, True), ("P2", 9, "new_candidate", False, "equivocal", True),
                 ("P3", 7, "new_candidate", False, "rejected", False)]]  # fmt: skip
    for index, rows in enumerate(sessions):
        folder = results / "cohort" / "lesions" / f"session_index={index}"
        folder.mkdir(parents=True)
        columns = list(zip(*rows))
        table = pa.table({"patient": columns[0], "lesion_id": pa.array(columns[1], pa.int64()), "status": columns[2],
                          "voxel_count": pa.array([100] * len(rows), pa.int64()), "by_fallback": columns[3],
                          "new_lesion": pa.array(columns[4], pa.string()), "needs_review": columns[5]})  # fmt: skip
        pq.write_table(table, folder / "part-00000.parquet")
    run = {"written_at": "2025-01-01T00:00:00Z", "failed_patients": sorted(failures), "failures": failures}
    (results / "run.json").write_text(json.dumps(run))
    (results / "report.html").write_text("<html></html>")


def test_summary_counts_patients_lesions_responses_and_flags(tmp_path):
    results = tmp_path / "results"
    write_run(results, {"P9": "segment_baseline: ValueError: the baseline has neither prompts.json nor prompt_mask\nmore"})
    text = run_summary(results)
    assert "4 done, 1 failed" in text
    assert "P9: segment_baseline: ValueError: the baseline has neither" in text and "more" not in text
    assert "6 tracked (8 lesion-sessions)" in text  # P1: 1, 2; P2: 5, 9; P3: 1, 7
    assert "best overall (RECIST 1.1): PR 2, SD 1, none 1" in text
    assert "4 lesion-session(s) flagged for review (lost 1, new lesion 1, split/merged 1, fallback 1)" in text
    assert str(results / "report.html") in text and "(not written)" not in text
    assert str(results / "run.json") in text
    assert len(text.splitlines()) <= 12


def test_no_run_json_prints_nothing_and_a_broken_one_prints_one_line(tmp_path):
    out = io.StringIO()
    print_run_summary(tmp_path / "results", file=out)  # a dry run or a `train` target: no results
    assert out.getvalue() == ""
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "run.json").write_text("{not json")
    print_run_summary(tmp_path / "results", file=out)
    assert out.getvalue().startswith("run summary unavailable: ") and out.getvalue().count("\n") == 1


def test_unreadable_tables_still_list_the_failures(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    (results / "run.json").write_text(json.dumps({"failures": {"P2": "measure: OSError: disk full"}}))
    text = run_summary(results)
    assert "1 failed; cohort tables unreadable" in text and "P2: measure: OSError: disk full" in text
    assert "report.html (not written)" in text
