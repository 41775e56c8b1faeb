import json

import pytest

from lesionlocator.core.layout import ResultsLayout
from lesionlocator.core.shards import PatientTask, failed_patients, run_shard, shard_patients


def test_shard_patients():
    assert shard_patients(list("abcde"), 2) == [["a", "b"], ["c", "d"], ["e"]]
    with pytest.raises(ValueError):
        shard_patients(["a"], 0)


def _tasks(tmp_path, calls, fail=(), keys=None):
    tasks = []
    for p in ["P1", "P2", "P3"]:
        def run(p=p):
            calls.append(p)
            if p in fail:
                raise RuntimeError(f"boom {p}")
        tasks.append(PatientTask(p, tmp_path / p, (keys or {}).get(p, "k-" + p), run))
    return tasks


def test_failure_is_isolated_and_rerun_recomputes_only_what_changed(tmp_path):
    calls: list[str] = []
    report = run_shard("seg", _tasks(tmp_path, calls, fail={"P2"}), tmp_path / "r1.json")
    assert calls == ["P1", "P2", "P3"]
    assert report["patients"]["P2"] == {"outcome": "failed", "error": "RuntimeError: boom P2"}
    assert failed_patients([tmp_path / "r1.json"]) == {"P2"}

    calls.clear()
    run_shard("seg", _tasks(tmp_path, calls), tmp_path / "r2.json")
    assert calls == ["P2"]  # the failed one alone

    calls.clear()
    run_shard("seg", _tasks(tmp_path, calls, keys={"P3": "changed"}), tmp_path / "r3.json")
    assert calls == ["P3"]  # the changed one alone
    assert json.loads((tmp_path / "r3.json").read_text())["patients"]["P3"]["outcome"] == "ok"


def test_upstream_failure_skips_patient(tmp_path):
    calls: list[str] = []
    run_shard("seg", _tasks(tmp_path, calls, fail={"P1"}), tmp_path / "up.json")
    calls.clear()
    report = run_shard("track", _tasks(tmp_path, calls), tmp_path / "down.json", upstream_reports=[tmp_path / "up.json"])
    assert calls == ["P2", "P3"]
    assert report["patients"]["P1"]["outcome"] == "upstream_failed"


def test_reports_are_byte_identical_on_rerun(tmp_path):
    run_shard("seg", _tasks(tmp_path, []), tmp_path / "a.json")
    run_shard("seg", _tasks(tmp_path, []), tmp_path / "b.json")
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()


def test_layout_refuses_path_characters(tmp_path):
    layout = ResultsLayout(tmp_path)
    assert layout.labels("P1", "01") == tmp_path / "patients" / "sub-P1" / "ses-01" / "lesions.nii.gz"
    for bad in ["../x", "a/b", "..", ""]:
        with pytest.raises(ValueError):
            layout.patient_dir(bad)
        with pytest.raises(ValueError):
            layout.session_dir("P1", bad)
