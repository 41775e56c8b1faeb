import logging
import os
import shutil

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from lesionlocator.cli import main
from lesionlocator.core.config import StudyConfig
from lesionlocator.core.errors import InputError, LesionLocatorError
from lesionlocator.ingest.cohort import CohortError, ingest_cohort, near_miss, plan_cohort, read_manifest
from lesionlocator.ingest.plan import cohort_plan
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


def test_prompts_at_follow_up_are_a_readers_and_recorded(tiny_cohort, tmp_path):
    follow_up = tiny_cohort / "sub-A1" / "ses-10" / "prompts.json"
    lesions = [{"id": 1, "point": [1, 1, 1]}, {"id": 2000001, "review": "rejected"}]
    write_prompts_json(follow_up, {"frame": "voxel", "lesions": lesions})
    manifest = ingest_cohort(tmp_path / "m.parquet", root=tiny_cohort)
    row = manifest[(manifest.patient == "A1") & (manifest.session == "10")].iloc[0]
    assert row.prompts == str(follow_up) and row.n_prompts == 2


def test_review_at_baseline_rejected(tiny_cohort, tmp_path):
    baseline = tiny_cohort / "sub-B2" / "ses-1" / "prompts.json"
    write_prompts_json(baseline, {"frame": "voxel", "lesions": [{"id": 1, "point": [1, 1, 1]}, {"id": 9, "review": "confirmed"}]})
    assert "sub-B2/ses-1/prompts.json" in _expect_error(tmp_path, r"a review .* belongs in a follow-up", root=tiny_cohort)


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


# ---- no silent garbage (issue 21) ------------------------------------------------------------

root_can_do_anything = pytest.mark.skipif(
    hasattr(os, "geteuid") and os.geteuid() == 0,
    reason="root reads and writes whatever the permissions (tests/reliability/test_bad_inputs.py simulates these)",
)


@pytest.mark.parametrize(
    "name, kind, rename",
    [
        ("Sub-P002", "patient", "sub-P002"),
        ("sub_P003", "patient", "sub-P003"),
        ("SUB-P004", "patient", "sub-P004"),
        ("subject-05", "patient", "sub-05"),
        ("sub06", "patient", "sub-06"),
        ("ses_03", "session", "ses-03"),
        ("Ses-04", "session", "ses-04"),
        ("session 2", "session", "ses-2"),
        ("ses.baseline", "session", "ses-baseline"),
    ],
)
def test_near_miss_names_say_how_to_rename(tmp_path, name, kind, rename):
    (tmp_path / name).mkdir()
    problem = near_miss(tmp_path / name, kind)
    assert problem is not None and problem.path == tmp_path / name
    assert problem.problem.startswith(f"ignored: looks like a {kind} folder")
    assert problem.problem.endswith(f"rename it {rename}")


@pytest.mark.parametrize("name", ["derivatives", "subfolder", "summary.txt", "sessions.tsv", "participants.tsv", "sub-A1", "sesame"])
def test_other_names_are_not_near_misses(tmp_path, name):
    (tmp_path / name).mkdir()
    assert near_miss(tmp_path / name, "patient") is None
    assert near_miss(tmp_path / name, "session") is None


def test_near_misses_are_logged_and_listed(tiny_cohort, tmp_path, caplog):
    (tiny_cohort / "sub-A1" / "ses_3").mkdir()
    (tiny_cohort / "sub-A1" / "Sub-A1_sessions.tsv").write_text("session_id\tacq_time\n")
    (tiny_cohort / "sub-C3.zip").write_bytes(b"PK")
    with caplog.at_level(logging.WARNING, logger="lesionlocator.ingest.cohort"):
        manifest = ingest_cohort(tmp_path / "m.parquet", root=tiny_cohort)
    assert len(manifest) == 6
    ignored = manifest.attrs["ignored"]
    assert {line.split(": ")[0] for line in ignored} == {
        str(tiny_cohort / "sub-C3.zip"), str(tiny_cohort / "sub-A1" / "Sub-A1_sessions.tsv"), str(tiny_cohort / "sub-A1" / "ses_3")
    }
    assert "is a file, not a folder" in next(line for line in ignored if "sub-C3.zip" in line)
    assert "named sub-A1_sessions.tsv" in next(line for line in ignored if "Sub-A1_sessions" in line)
    warning = "\n".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "ignored 3 folder(s)/file(s)" in warning and "cohort.strict" in warning
    assert all(line in warning for line in ignored)


def test_strict_refuses_near_misses_with_the_other_problems(tiny_cohort, tmp_path):
    (tiny_cohort / "Sub-P9").mkdir()
    (tiny_cohort / "sub-B2" / "ses-1_x").mkdir()
    (tiny_cohort / "sub-B2" / "ses-2" / "image.nii.gz").write_bytes(b"junk")  # not reached: discovery fails first
    with pytest.raises(CohortError) as err:
        ingest_cohort(tmp_path / "m.parquet", root=tiny_cohort, strict=True)
    assert [p.path for p in err.value.problems] == [tiny_cohort / "sub-B2" / "ses-1_x", tiny_cohort / "Sub-P9"]
    assert not (tmp_path / "m.parquet").exists()


def test_strict_at_planning_time(tiny_cohort):
    (tiny_cohort / "sub-A1" / "Ses-4").mkdir()
    assert cohort_plan(StudyConfig(cohort={"root": tiny_cohort}))["A1"] == ["1", "2", "10"]
    with pytest.raises(InputError, match=r"Ses-4: ignored: .*rename it ses-4"):
        cohort_plan(StudyConfig(cohort={"root": tiny_cohort, "strict": True}))


def test_cli_strict_flag_and_ignored_list(tiny_cohort, tmp_path, capsys):
    (tiny_cohort / "sub_X1").mkdir()
    assert main(["ingest", "--root", str(tiny_cohort), "-o", str(tmp_path / "a.parquet")]) == 0
    out = capsys.readouterr().out
    assert "ignored 1 folder(s)/file(s)" in out and f"{tiny_cohort / 'sub_X1'}: ignored" in out
    assert main(["ingest", "--root", str(tiny_cohort), "--strict", "-o", str(tmp_path / "b.parquet")]) == 2
    assert f"error: {tiny_cohort / 'sub_X1'}: ignored" in capsys.readouterr().err
    assert not (tmp_path / "b.parquet").exists()


def test_acq_time_with_time_zones_orders_by_instant(tiny_cohort, tmp_path):
    (tiny_cohort / "sub-A1" / "sub-A1_sessions.tsv").write_text(
        "session_id\tacq_time\nses-1\t2020-01-05T10:00:00+01:00\nses-2\t2020-01-05T09:30:00Z\nses-10\t2020-01-05T10:00:00Z\n"
    )
    manifest = ingest_cohort(tmp_path / "m.parquet", root=tiny_cohort)
    assert list(manifest[manifest.patient == "A1"].session) == ["1", "2", "10"]  # 09:00Z, 09:30Z, 10:00Z


def test_mixed_time_zones_in_a_cohort_table(tmp_path):
    sitk.WriteImage(make_image(), str(tmp_path / "a.nii.gz"))
    table = tmp_path / "cohort.tsv"
    table.write_text("patient\tsession\timage\tacq_time\nP\t1\ta.nii.gz\t2021-01-01T10:00Z\nP\t2\ta.nii.gz\t2021-02-01\n")
    with pytest.raises(InputError, match="acq_time mixes values with a time zone") as err:
        plan_cohort(table=table)
    assert err.value.path == table


@pytest.mark.parametrize("order", ["first", "nan", "inf", "1,5"])
def test_order_must_be_a_number_in_a_cohort_table(tmp_path, order):
    sitk.WriteImage(make_image(), str(tmp_path / "a.nii.gz"))
    table = tmp_path / "cohort.tsv"
    table.write_text(f"patient\tsession\timage\torder\nP\t1\ta.nii.gz\t{order}\nP\t2\ta.nii.gz\t2\n")
    message = _expect_error(tmp_path, f"session '1': order '{order}' is not a number", table=table)
    assert f"{table}:2" in message


def test_long_row_and_utf16_table(tmp_path):
    sitk.WriteImage(make_image(), str(tmp_path / "a.nii.gz"))
    table = tmp_path / "cohort.tsv"
    table.write_text("patient\tsession\timage\nP\t1\ta.nii.gz\textra\n")
    assert f"{table}:2" in _expect_error(tmp_path, r"row has 4 field\(s\) but the header has 3", table=table)
    table.write_text("patient\tsession\timage\nP\t1\ta.nii.gz\n", encoding="utf-16")
    _expect_error(tmp_path, "not UTF-8 text", table=table)
    table.write_text("patient\tsession\timage\n\nP\t1\ta.nii.gz\n\n", encoding="utf-8-sig")  # BOM, blank lines
    assert ingest_cohort(tmp_path / "m.parquet", table=table).session.tolist() == ["1"]


def test_short_row_in_sessions_tsv(tiny_cohort, tmp_path):
    tsv = tiny_cohort / "sub-A1" / "sub-A1_sessions.tsv"
    tsv.write_text("session_id\tacq_time\nses-1\t2020-01-05\nses-2\nses-10\t2020-03-01\n")
    message = _expect_error(tmp_path, r"row has 1 field\(s\) but the header has 2", root=tiny_cohort)
    assert f"{tsv}:3" in message


@pytest.mark.parametrize("spacing", [(0.1, 1.0, 20.0), (0.5, 0.5, 10.0)])
def test_plausible_spacing_bounds_are_accepted(tmp_path, spacing):
    root = tmp_path / "c"
    write_session(root, "P", "1", make_image(shape_zyx=(4, 4, 4), spacing=spacing))
    assert np.allclose(ingest_cohort(tmp_path / "m.parquet", root=root).spacing.iloc[0], spacing)


def test_implausible_geometry_is_refused_with_headers_only(tiny_cohort, tmp_path):
    path = write_session(tiny_cohort, "B2", "2", make_image(shape_zyx=(12, 3, 20)))
    message = _expect_error(tmp_path, r"only 3 voxel\(s\) on axis y", root=tiny_cohort, verify_pixels=False)
    assert str(path) in message


def test_float_mask_with_integer_values_is_accepted(tiny_cohort, tmp_path):
    image = make_image()
    labels = np.zeros(image.GetSize()[::-1], np.float32)
    labels[5:8, 7:10, 9:12] = 2.0
    mask = sitk.GetImageFromArray(labels)
    mask.CopyInformation(image)
    sitk.WriteImage(mask, str(tiny_cohort / "sub-A1" / "ses-1" / "prompt_mask.nii.gz"))
    manifest = ingest_cohort(tmp_path / "m.parquet", root=tiny_cohort)
    assert manifest.prompt_mask.notna().sum() == 1


def test_output_under_a_file_is_refused_before_validation(tiny_cohort, tmp_path):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("x")
    (tiny_cohort / "sub-A1" / "ses-2" / "image.nii.gz").write_bytes(b"junk")  # never read: the output is checked first
    with pytest.raises(LesionLocatorError, match=r"not_a_folder/m.parquet: cannot write the manifest there \(.*not_a_folder is a file, not a folder\)"):
        ingest_cohort(blocker / "m.parquet", root=tiny_cohort)


@root_can_do_anything
def test_unreadable_session_folder_for_real(tiny_cohort, tmp_path):
    folder = tiny_cohort / "sub-A1" / "ses-2"
    folder.chmod(0)
    try:
        message = _expect_error(tmp_path, r"cannot read the folder \(Permission denied\)", root=tiny_cohort)
    finally:
        folder.chmod(0o755)
    assert str(folder) in message


@root_can_do_anything
def test_unreadable_image_for_real(tiny_cohort, tmp_path):
    path = tiny_cohort / "sub-A1" / "ses-2" / "image.nii.gz"
    path.chmod(0)
    message = _expect_error(tmp_path, r"cannot read the file \(Permission denied\)", root=tiny_cohort)
    assert str(path) in message and "exist" not in message


@root_can_do_anything
def test_read_only_output_folder_for_real(tiny_cohort, tmp_path):
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o555)
    try:
        with pytest.raises(LesionLocatorError, match=r"cannot write the manifest there \(Permission denied\)"):
            ingest_cohort(out / "m.parquet", root=tiny_cohort)
    finally:
        out.chmod(0o755)


def test_the_same_instant_in_two_time_zones_is_a_duplicate(tiny_cohort, tmp_path):
    (tiny_cohort / "sub-A1" / "sub-A1_sessions.tsv").write_text(
        "session_id\tacq_time\nses-1\t2020-01-05T10:00:00+01:00\nses-2\t2020-01-05T09:00:00Z\nses-10\t2020-01-06T10:00:00Z\n"
    )
    _expect_error(tmp_path, "two sessions share the same acquisition time", root=tiny_cohort)


def test_discovery_lists_each_folder_once_and_stats_nothing_it_lists(tmp_path, monkeypatch):
    """Planning a large cohort at parse time: one directory read per folder (root, patients,
    sessions) and no per-entry stat; what it finds is unchanged (image, prompts, sessions in order)."""
    from lesionlocator.ingest import cohort as module

    for p in range(3):
        for s in range(2):
            folder = tmp_path / "c" / f"sub-{p}" / f"ses-{s + 1:02d}"
            folder.mkdir(parents=True)
            (folder / "image.nii.gz").touch()
        (tmp_path / "c" / f"sub-{p}" / "ses-01" / "prompts.json").touch()
    listed, stats = [], []
    scandir, stat = os.scandir, os.stat
    monkeypatch.setattr(module.os, "scandir", lambda path: listed.append(str(path)) or scandir(path))
    monkeypatch.setattr(os, "stat", lambda path, *a, **k: stats.append(str(path)) or stat(path, *a, **k))
    found = module.discover_bids(tmp_path / "c")
    assert len(listed) == len(set(listed)) == 1 + 3 + 3 * 2
    assert not [s for s in stats if s.endswith(".nii.gz")]  # a file's type comes from its folder's listing
    assert [(e.patient, e.session, e.image.name, e.prompts is not None) for e in found.entries] == [
        (str(p), f"{s + 1:02d}", "image.nii.gz", s == 0) for p in range(3) for s in range(2)
    ]
