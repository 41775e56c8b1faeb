"""``lesionlocator track --patient``: an unknown or malformed label is an error line and exit 2, not a traceback."""

from __future__ import annotations

import pytest

from lesionlocator.cli import main
from lesionlocator.core.lock import LOCK_NAME
from lesionlocator.ingest.cohort import ingest_cohort
from tests.reliability.builders import leftovers, one_session_cohort


@pytest.fixture
def cohort(tmp_path):
    one_session_cohort(tmp_path / "cohort")  # patient A1
    return tmp_path / "cohort"


def test_an_unknown_patient_names_the_root_and_the_patients(cohort, tmp_path, capsys):
    out = tmp_path / "results"
    assert main(["track", "--root", str(cohort), "--patient", "B7", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {cohort}: patient 'B7' not found (patients: A1)\n"
    assert not (out / LOCK_NAME).exists(), "the results lock is released"


def test_an_unknown_patient_names_the_manifest(cohort, tmp_path, capsys):
    manifest = tmp_path / "manifest.parquet"
    ingest_cohort(manifest, root=cohort)
    assert main(["track", "--manifest", str(manifest), "--patient", "P001", "-o", str(tmp_path / "results")]) == 2
    assert capsys.readouterr().err == f"error: {manifest}: patient 'P001' not found (patients: A1)\n"


def test_a_missing_manifest_is_an_error(tmp_path, capsys):
    missing = tmp_path / "nope.parquet"
    assert main(["track", "--manifest", str(missing), "--patient", "A1", "-o", str(tmp_path / "results")]) == 2
    assert capsys.readouterr().err.startswith(f"error: {missing}: no such manifest")


@pytest.mark.parametrize("label", ["../../etc", "sub-A1", "A1/..", "", "A 1", "A1\n"])
def test_an_invalid_label_is_refused_before_anything_is_written(cohort, tmp_path, capsys, label):
    out = tmp_path / "results"
    assert main(["track", "--root", str(cohort), "--patient", label, "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: invalid patient label {label!r}: letters and digits only")
    assert leftovers(out) == []
