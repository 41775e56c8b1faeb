import json
import shutil

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from lesionlocator.core.errors import InputError, LesionLocatorError
from lesionlocator.ingest.cohort import CohortError, ingest_cohort, read_manifest
from tests.helpers import EMBEDDED_REAL, make_image, write_prompts_json, write_session


def test_natural_order_and_baseline(tiny_cohort, tmp_path):
    out = tmp_path / "manifest.parquet"
    manifest = ingest_cohort(out, root=tiny_cohort)
    assert list(manifest.patient.unique()) == ["A1", "B2"]
    a1 = manifest[manifest.patient == "A1"]
    assert list(a1.session) == ["1", "2", "10"]
    assert list(a1.session_index) == [0, 1, 2]
    assert list(a1.is_baseline) == [True, False, False]
    assert a1.n_prompts.tolist() == [1, 0, 0]
    back = read_manifest(out)
    pd.testing.assert_frame_equal(back, manifest)
    image = make_image()
    assert np.allclose(back.spacing.iloc[0], image.GetSpacing())
    assert np.allclose(back.direction.iloc[0], image.GetDirection())


def test_manifest_is_deterministic(tiny_cohort, tmp_path):
    a = ingest_cohort(tmp_path / "a.parquet", root=tiny_cohort)
    b = ingest_cohort(tmp_path / "b.parquet", root=tiny_cohort)
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()
    assert a.equals(b)


def test_sessions_tsv_orders_by_acquisition_date(tiny_cohort, tmp_path):
    (tiny_cohort / "sub-A1" / "sub-A1_sessions.tsv").write_text(
        "session_id\tacq_time\nses-10\t2020-01-05\nses-1\t2020-03-01\nses-2\t2020-06-30\n"
    )
    # prompts must sit at the baseline, which is now ses-10
    (tiny_cohort / "sub-A1" / "ses-1" / "prompts.json").rename(tiny_cohort / "sub-A1" / "ses-10" / "prompts.json")
    manifest = ingest_cohort(tmp_path / "m.parquet", root=tiny_cohort)
    assert list(manifest[manifest.patient == "A1"].session) == ["10", "1", "2"]
    assert manifest[manifest.patient == "A1"].acq_time.iloc[0] == "2020-01-05"


def test_real_ct_as_nifti_and_dicom(tmp_path):
    root = tmp_path / "real"
    nifti = root / "sub-CT1" / "ses-01"
    nifti.mkdir(parents=True)
    shutil.copy(EMBEDDED_REAL / "example_ct.nii.gz", nifti / "ct.nii.gz")
    dicom = root / "sub-CT1" / "ses-02" / "dicom"
    shutil.copytree(EMBEDDED_REAL / "example_ct_dicom", dicom)
    ct = sitk.ReadImage(str(nifti / "ct.nii.gz"))
    centre = ct.TransformContinuousIndexToPhysicalPoint((61.0, 50.0, 56.0))
    write_prompts_json(nifti / "prompts.json", {"frame": "world", "lesions": [{"id": 1, "point": list(centre)}]})
    manifest = ingest_cohort(tmp_path / "m.parquet", root=root)
    assert manifest.image_format.tolist() == ["nifti", "dicom"]
    assert list(manifest["size"].iloc[1]) == [512, 512, 20]
    assert read_manifest(tmp_path / "m.parquet").equals(manifest)


def test_cohort_table_with_groundtruth(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    image = make_image()
    sitk.WriteImage(image, str(data / "a.nrrd"))
    sitk.WriteImage(make_image(seed=3), str(data / "b.mha"))
    gt = sitk.Image(image.GetSize(), sitk.sitkUInt32)
    gt.CopyInformation(image)
    sitk.WriteImage(gt, str(data / "gt.nii.gz"))
    table = tmp_path / "cohort.tsv"
    table.write_text(
        "patient\tsession\timage\torder\tgroundtruth\n"
        "X\tlate\tdata/b.mha\t2\t\n"
        "X\tearly\tdata/a.nrrd\t1\tdata/gt.nii.gz\n"
    )
    manifest = ingest_cohort(tmp_path / "m.parquet", table=table)
    assert manifest.session.tolist() == ["early", "late"]
    assert manifest.image_format.tolist() == ["nrrd", "metaimage"]
    assert manifest.groundtruth.iloc[0].endswith("gt.nii.gz")


# ---- bad input: clear error naming the file/field, nothing written ---------------------------


def _expect_error(tmp_path, match, **kwargs):
    out = tmp_path / "manifest.parquet"
    with pytest.raises(LesionLocatorError, match=match) as err:
        ingest_cohort(out, **kwargs)
    assert not out.exists()
    assert not any(p.name.startswith(".manifest") for p in tmp_path.iterdir())
    return str(err.value)


def test_missing_baseline_image(tiny_cohort, tmp_path):
    (tiny_cohort / "sub-A1" / "ses-1" / "image.nii.gz").unlink()
    message = _expect_error(tmp_path, "no baseline image found", root=tiny_cohort)
    assert "sub-A1/ses-1" in message


def test_two_images_in_a_session(tiny_cohort, tmp_path):
    write_session(tiny_cohort, "A1", "2", make_image(), name="second.nrrd")
    message = _expect_error(tmp_path, "holds 2 images", root=tiny_cohort)
    assert "sub-A1/ses-2" in message and "second.nrrd" in message


def test_corrupt_image(tiny_cohort, tmp_path):
    path = tiny_cohort / "sub-B2" / "ses-10" / "image.nii.gz"
    path.write_bytes(b"garbage" * 100)
    message = _expect_error(tmp_path, "cannot read image", root=tiny_cohort)
    assert str(path) in message


def test_dicom_folder_with_two_series(tmp_path):
    import pydicom

    root = tmp_path / "c"
    folder = root / "sub-P1" / "ses-1" / "dicom"
    folder.mkdir(parents=True)
    for i, f in enumerate(sorted((EMBEDDED_REAL / "example_ct_dicom").iterdir())[:6]):
        ds = pydicom.dcmread(f)
        if i % 2:
            ds.SeriesInstanceUID = pydicom.uid.generate_uid(entropy_srcs=["second"])
        ds.save_as(folder / f.name)
    _expect_error(tmp_path, "DICOM series", root=root)


def test_prompt_outside_image(tiny_cohort, tmp_path):
    write_prompts_json(
        tiny_cohort / "sub-A1" / "ses-1" / "prompts.json",
        {"frame": "voxel", "lesions": [{"id": 1, "point": [50, 1, 1]}]},
    )
    message = _expect_error(tmp_path, "outside the image", root=tiny_cohort)
    assert "sub-A1/ses-1/prompts.json" in message


@pytest.mark.parametrize(
    "data, problem",
    [
        ({"frame": "world", "lesions": [{"id": 1, "point": [0, 0, 0]}], "colour": "red"}, "unknown key"),
        ({"frame": "voxel", "lesions": [{"id": 1, "box": {"min": [5, 1, 1], "max": [2, 3, 3]}}]}, "min > max"),
    ],
)
def test_bad_prompt_file(tiny_cohort, tmp_path, data, problem):
    write_prompts_json(tiny_cohort / "sub-B2" / "ses-1" / "prompts.json", data)
    message = _expect_error(tmp_path, problem, root=tiny_cohort)
    assert "sub-B2/ses-1/prompts.json" in message


def test_prompts_at_follow_up_rejected(tiny_cohort, tmp_path):
    write_prompts_json(tiny_cohort / "sub-A1" / "ses-10" / "prompts.json", {"frame": "voxel", "lesions": [{"id": 1, "point": [1, 1, 1]}]})
    _expect_error(tmp_path, "baseline session only", root=tiny_cohort)


def test_lesion_mask_geometry_mismatch(tiny_cohort, tmp_path):
    mask = sitk.Image(make_image().GetSize(), sitk.sitkUInt8)
    mask.SetSpacing((1.0, 1.0, 1.0))
    path = tiny_cohort / "sub-A1" / "ses-1" / "prompt_mask.nii.gz"
    sitk.WriteImage(mask, str(path))
    message = _expect_error(tmp_path, "geometry differs from its image: spacing", root=tiny_cohort)
    assert str(path) in message


def test_groundtruth_geometry_mismatch(tiny_cohort, tmp_path):
    gt_dir = tiny_cohort / "derivatives" / "groundtruth" / "sub-B2" / "ses-2"
    gt_dir.mkdir(parents=True)
    mask = sitk.Image((3, 3, 3), sitk.sitkUInt32)
    sitk.WriteImage(mask, str(gt_dir / "lesions.nii.gz"))
    _expect_error(tmp_path, "ground-truth mask geometry differs", root=tiny_cohort)


def test_duplicate_patient_labels(tiny_cohort, tmp_path):
    shutil.copytree(tiny_cohort / "sub-A1", tiny_cohort / "sub-a1")
    _expect_error(tmp_path, "duplicates", root=tiny_cohort)


def test_duplicate_session_labels_in_table(tmp_path):
    sitk.WriteImage(make_image(), str(tmp_path / "a.nii.gz"))
    table = tmp_path / "cohort.tsv"
    table.write_text("patient\tsession\timage\nP\t1\ta.nii.gz\nP\t1\ta.nii.gz\n")
    _expect_error(tmp_path, r"session label\(s\) \['1'\] given more than once", table=table)


@pytest.mark.parametrize("label", ["A_1", "..", "a-b", "x.y"])
def test_label_with_path_characters(tmp_path, label):
    sitk.WriteImage(make_image(), str(tmp_path / "a.nii.gz"))
    table = tmp_path / "cohort.tsv"
    table.write_text(f"patient\tsession\timage\n{label}\t1\ta.nii.gz\n")
    message = _expect_error(tmp_path, r"must match \[A-Za-z0-9\]\+", table=table)
    assert "cohort.tsv:2" in message


def test_bids_label_with_path_characters(tiny_cohort, tmp_path):
    (tiny_cohort / "sub-A1" / "ses-1").rename(tiny_cohort / "sub-A1" / "ses-1_x")
    _expect_error(tmp_path, "session label '1_x'", root=tiny_cohort)


def test_empty_cohort(tmp_path):
    (tmp_path / "empty").mkdir()
    _expect_error(tmp_path, "cohort is empty", root=tmp_path / "empty")
    table = tmp_path / "cohort.tsv"
    table.write_text("patient\tsession\timage\n")
    _expect_error(tmp_path, "cohort is empty", table=table)


def test_all_problems_reported_together(tiny_cohort, tmp_path):
    (tiny_cohort / "sub-A1" / "ses-2" / "image.nii.gz").write_bytes(b"junk")
    (tiny_cohort / "sub-B2" / "ses-10" / "image.nii.gz").write_bytes(b"junk")
    with pytest.raises(CohortError) as err:
        ingest_cohort(tmp_path / "m.parquet", root=tiny_cohort)
    assert len(err.value.problems) == 2


def test_plan_cohort_matches_the_manifest(tiny_cohort, tmp_path):
    from lesionlocator.ingest.cohort import plan_cohort

    plan = plan_cohort(root=tiny_cohort)
    manifest = ingest_cohort(tmp_path / "m.parquet", root=tiny_cohort)
    assert plan == {p: list(g.session) for p, g in manifest.groupby("patient", sort=False)}


def test_fingerprint_changes_with_the_image(tiny_cohort, tmp_path):
    before = ingest_cohort(tmp_path / "a.parquet", root=tiny_cohort)
    write_session(tiny_cohort, "B2", "10", make_image(seed=99))
    after = ingest_cohort(tmp_path / "b.parquet", root=tiny_cohort)
    changed = before.fingerprint != after.fingerprint
    assert changed.tolist() == [(p, s) == ("B2", "10") for p, s in zip(before.patient, before.session)]
