"""The registration quality check: a follow-up of the same anatomy passes with margin; a follow-up of
another body region, which the backend "registers" with half its body overlapping, fails its patient
with both files and the figure named, and the figure reaches the cohort table and the report."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from lesionlocator.aggregate.report import report_cohort
from lesionlocator.core.config import RegisterConfig, validate_config
from lesionlocator.core.errors import InputError
from lesionlocator.core.io import write_image
from lesionlocator.core.layout import ResultsLayout
from lesionlocator.core.shards import failure_table
from lesionlocator.ingest.cohort import ingest_cohort
from lesionlocator.measure.lesions import measure_patient
from lesionlocator.pipeline import aggregate_results, register_shard
from lesionlocator.register import register_pair
from lesionlocator.register.quality import (
    normalized_cross_correlation,
    registration_quality,
)
from tests.helpers import EMBEDDED_REAL, write_session
from tests.register.helpers import follow_up, known_transform, real_ct

LINEAR = RegisterConfig(deformable=False)
MIN_SIMILARITY = RegisterConfig().min_similarity


def chest_and_pelvis() -> tuple[sitk.Image, sitk.Image]:
    """The real CT cut into a chest (z 340-427 mm) and a pelvis (z 94-181 mm): no anatomy in common."""
    ct = sitk.ReadImage(str(EMBEDDED_REAL / "example_ct.nii.gz"))
    return ct[:, :, 82:112], ct[:, :, 0:30]


def test_normalized_cross_correlation():
    a = np.random.default_rng(0).normal(size=1000)
    assert normalized_cross_correlation(a, 3.0 * a + 7.0) == pytest.approx(1.0)  # an MR gain, a CT shift
    assert normalized_cross_correlation(a, -a) == pytest.approx(-1.0)
    assert normalized_cross_correlation(a, np.ones_like(a)) == 0.0


def test_same_anatomy_passes_with_margin(tmp_path):
    ct = real_ct()
    fixed = follow_up(ct, known_transform(ct, "rigid"))  # other grid, direction and z field of view
    fixed_path, moving_path = write_image(fixed, tmp_path / "fu.nii.gz"), write_image(ct, tmp_path / "prev.nii.gz")
    register_pair(fixed_path, moving_path, tmp_path / "to_previous.tfm", LINEAR, report_path=tmp_path / "to_previous.json")
    record = json.loads((tmp_path / "to_previous.json").read_text())
    assert record["passed"] is True and record["error"] is None
    assert record["similarity"] > MIN_SIMILARITY + 0.2, record
    assert record["min_similarity"] == MIN_SIMILARITY and record["transform"] == "to_previous.tfm"
    # an existing transform whose record is missing is checked again, not registered again
    (tmp_path / "to_previous.json").unlink()

    class Never:
        def register(self, fixed, moving):
            raise AssertionError("registered again")

    register_pair(fixed_path, moving_path, tmp_path / "to_previous.tfm", LINEAR, report_path=tmp_path / "to_previous.json", registration=Never())
    again = json.loads((tmp_path / "to_previous.json").read_text())
    assert again["passed"] is True and again["similarity"] == record["similarity"]
    # unregistered (identity) the same pair scores lower: the figure measures the alignment
    unregistered = registration_quality(fixed, ct, sitk.Transform(3, sitk.sitkIdentity))
    assert unregistered.similarity < record["similarity"] - 0.1


def test_another_body_region_fails_naming_both_files_and_the_figure(tmp_path):
    """Issue 21: baseline chest, follow-up pelvis: the backend reports ~50% overlap; the check refuses it."""
    chest, pelvis = chest_and_pelvis()
    previous, follow = write_image(chest, tmp_path / "chest.nii.gz"), write_image(pelvis, tmp_path / "pelvis.nii.gz")
    out = tmp_path / "out"
    with pytest.raises(InputError) as raised:
        register_pair(follow, previous, out / "to_previous.tfm", LINEAR, report_path=out / "to_previous.json")
    message = str(raised.value)
    assert message.startswith(f"{follow}: cannot register to {previous}: registration quality too low")
    record = json.loads((out / "to_previous.json").read_text())
    assert f"normalised cross-correlation {record['similarity']:.2f} < register.min_similarity {MIN_SIMILARITY:.2f}" in message
    assert record["passed"] is False and record["transform"] is None and record["error"] in message
    assert record["overlap"] >= LINEAR.min_overlap, "the backend's own overlap check lets this pair through"
    assert record["similarity"] < MIN_SIMILARITY - 0.2
    assert not (out / "to_previous.tfm").exists()


def test_the_check_can_be_disabled(tmp_path):
    chest, pelvis = chest_and_pelvis()
    previous, follow = write_image(chest, tmp_path / "chest.nii.gz"), write_image(pelvis, tmp_path / "pelvis.nii.gz")
    config = RegisterConfig(deformable=False, min_similarity=-1)
    register_pair(follow, previous, tmp_path / "t.tfm", config, report_path=tmp_path / "t.json")
    assert json.loads((tmp_path / "t.json").read_text())["passed"] is True


def test_the_report_lists_the_pairs_below_or_near_the_threshold():
    from lesionlocator.aggregate.report import registration_review

    pairs = pd.DataFrame({"patient": ["A", "B", "C", "D"], "session": "2", "session_index": 1,
                          "similarity": [0.95, 0.65, 0.31, None], "min_similarity": 0.6, "passed": [True, True, False, False],
                          "shared_fraction": 0.9, "error": [None, None, "registration quality too low", "overlap"]})  # fmt: skip
    review = registration_review(pairs)
    assert (review["pairs"], review["failed"], review["near"]) == (4, 2, 1)
    table = str(review["table"])
    assert [p for p in "ABCD" if f"<td>{p}</td>" in table] == ["B", "C", "D"]
    assert table.index("<td>D</td>") < table.index("<td>C</td>") < table.index("<td>B</td>")  # lowest first


def _cohort(root):
    """A1: chest baseline, pelvis follow-up (another region); B2: the CT and a rigidly moved follow-up."""
    chest, pelvis = chest_and_pelvis()
    write_session(root, "A1", "1", chest)
    write_session(root, "A1", "2", pelvis)
    ct = real_ct()
    write_session(root, "B2", "1", ct)
    write_session(root, "B2", "2", follow_up(ct, known_transform(ct, "rigid")))


@pytest.mark.slow
def test_register_shard_fails_the_patient_and_the_cohort_outputs_show_the_figure(tmp_path):
    _cohort(tmp_path / "cohort")
    config = validate_config({"results_dir": str(tmp_path / "results"), "register": {"deformable": False}})
    layout = ResultsLayout(tmp_path / "results")
    ingest_cohort(layout.manifest, root=tmp_path / "cohort")
    shards = tmp_path / "results" / "shards"
    report = register_shard(layout.manifest, ["A1", "B2"], 1, config, shards / "register_t1.json")

    error = report["patients"]["A1"]["error"]
    assert report["patients"]["A1"]["outcome"] == "failed" and "registration quality too low" in error
    assert str(tmp_path / "cohort" / "sub-A1" / "ses-2") in error and str(tmp_path / "cohort" / "sub-A1" / "ses-1") in error
    assert report["patients"]["B2"] == {"outcome": "ok", "error": None}, "the shard goes on with the next patient"
    records = {p: json.loads(layout.transform(p, "2").with_suffix(".json").read_text()) for p in ("A1", "B2")}
    assert records["A1"]["passed"] is False and records["B2"]["passed"] is True
    assert not layout.transform("A1", "2").exists() and layout.transform("B2", "2").exists()

    # B2 goes on to measurement (no lesions here); A1 is a failed patient
    empty = sitk.Image(sitk.ReadImage(str(tmp_path / "cohort" / "sub-B2" / "ses-1" / "image.nii.gz")).GetSize(), sitk.sitkUInt32)
    labels = write_image(empty, tmp_path / "empty.nii.gz")
    measure_patient("B2", [("1", None, labels), ("2", None, labels)], [layout.measurements("B2"), layout.measurements_arrow("B2")])
    aggregate_results(layout.manifest, config, [shards / "register_t1.json"], layout.cohort_dataset, layout.run_manifest)
    table = json.loads(layout.run_manifest.read_text())
    assert table["failed_patients"] == ["A1"] and "registration quality too low" in table["failures"]["A1"]
    from lesionlocator.aggregate.cohort import read_cohort_table

    rows = read_cohort_table(layout.cohort_dataset, "registration")
    assert rows[["patient", "session", "session_index", "passed"]].values.tolist() == [["A1", "2", 1, False], ["B2", "2", 1, True]]
    assert rows.similarity.tolist() == [records["A1"]["similarity"], records["B2"]["similarity"]]

    html = report_cohort(layout.cohort_dataset, layout.report, failed_patients=failure_table([shards / "register_t1.json"])).read_text()
    section = html[html.index("<h2>Registration quality") : html.index("<section id=\"review\">")]
    assert "2 follow-up registration(s): 1 failed" in section
    assert "A1" in section and f"{records['A1']['similarity']:.2f}" in section
    assert "B2" not in section, "a pair well above the threshold is not listed"
