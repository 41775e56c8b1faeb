"""IDs and paths read from input files can never place an output outside the results folder."""

from __future__ import annotations

import pytest

from lesionlocator.core.errors import InputError
from lesionlocator.core.layout import ResultsLayout
from lesionlocator.ingest.cohort import ingest_cohort
from tests.helpers import write_session
from tests.reliability.builders import blob_image, leftovers

HOSTILE = ["..", "../x", "a/b", "/abs", "A1\n", "A1\x00", "A 1", "Ä1", "١٢", "a\\b", "~", ""]


@pytest.mark.parametrize("label", HOSTILE)
def test_layout_refuses_every_label_that_is_not_plain_ascii_alphanumeric(tmp_path, label):
    layout = ResultsLayout(tmp_path)
    with pytest.raises(ValueError, match="must match"):
        layout.labels(label, "1")
    with pytest.raises(ValueError, match="must match"):
        layout.transform("P1", label)


def test_every_output_of_a_valid_label_lies_inside_the_results_folder(tmp_path):
    layout = ResultsLayout(tmp_path / "results")
    root = layout.root.resolve()
    for patient, session in [("P001", "01"), ("a", "B"), ("0", "9" * 40)]:
        for path in (layout.labels(patient, session), layout.candidates(patient, session), layout.transform(patient, session),
                     layout.tracking(patient, session), layout.measurements(patient), layout.measurements_arrow(patient),
                     layout.evaluation(patient)):  # fmt: skip
            assert path.resolve().is_relative_to(root), path


def test_bids_folder_name_with_a_trailing_newline_is_refused(tmp_path):
    root = tmp_path / "cohort"
    write_session(root, "A1\n", "1", blob_image())
    with pytest.raises(InputError, match=r"patient label 'A1\\n' must match \[A-Za-z0-9\]\+") as err:
        ingest_cohort(tmp_path / "out" / "manifest.parquet", root=root)
    assert "sub-A1\n" in str(err.value)
    assert leftovers(tmp_path / "out") == []
