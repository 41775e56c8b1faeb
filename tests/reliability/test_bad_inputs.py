"""The bad-input matrix: each case is a real file on disk, run through a public entry point.

Each case asserts either (a) the error type and that the message names the file (or config key)
and the problem, or (b) the documented outcome; and in both cases that no output file and no
partial file (``.<name>.<random>.part<suffix>``) was left behind by a failure.

Entry points: ``ingest_cohort`` (what the workflow runs first), ``cohort_plan`` (what the Snakefile
runs at parse time), ``lesionlocator ingest`` (``cli.main``), ``segment_session``, ``register_pair``,
``load_config``/``validate_config``, ``load_model``. The pipeline-level cases (a patient with only a
baseline, a follow-up of another body region) are in test_patient_failures.py.

Permission cases: the tests run as root, whom ``chmod`` does not stop, so a folder or file a user
cannot read (or a folder they cannot write) is reproduced by making the system call that would fail
raise the same ``PermissionError`` (builders.unreadable_folder, unreadable_file, read_only_folder).
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import yaml

from lesionlocator.cli import main as cli_main
from lesionlocator.core.config import RegisterConfig, StudyConfig, load_config
from lesionlocator.core.errors import ConfigError, InputError, LesionLocatorError
from lesionlocator.core.io import Geometry
from lesionlocator.ingest.cohort import CohortError, ingest_cohort
from lesionlocator.ingest.plan import cohort_plan
from lesionlocator.register.base import register_pair
from lesionlocator.segment.model import load_model
from lesionlocator.segment.session import segment_session
from tests.helpers import EMBEDDED_REAL, make_image, write_session
from tests.reliability.builders import (
    blob_image,
    copy_dicom,
    dicom_files,
    empty_session,
    flip_middle_bytes,
    leftovers,
    mask_like,
    nifti_with_huge_header,
    nifti_with_sheared_sform,
    one_session_cohort,
    partial_files,
    point_prompt,
    read_only_folder,
    unreadable_file,
    unreadable_folder,
)
from tests.segment.toy_model import toy_plans, write_toy_model


@dataclass
class Case:
    """``call()`` runs the entry point; ``error``: (type, file or key the message names, problem regex);
    ``outcome``: a check of the documented result instead; ``out``: the output folder."""

    call: Callable[[], object]
    out: Path
    error: tuple[type[Exception], str, str] | None = None
    outcome: Callable[[object], None] | None = None


def _ingest(root: Path, tmp: Path) -> Case:
    out = tmp / "out"
    return Case(lambda: ingest_cohort(out / "manifest.parquet", root=root), out)


def _ingest_error(root: Path, tmp: Path, names: Path | str, problem: str, error: type[Exception] = InputError) -> Case:
    case = _ingest(root, tmp)
    case.error = (error, str(names), problem)
    return case


# -- images ---------------------------------------------------------------------------------------


def case_truncated_gzip(tmp: Path) -> Case:
    path = one_session_cohort(tmp / "c", image=make_image(shape_zyx=(30, 40, 50)))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return _ingest_error(tmp / "c", tmp, path, "truncated")


def case_zero_size_image(tmp: Path) -> Case:
    path = one_session_cohort(tmp / "c")
    path.write_bytes(b"")
    return _ingest_error(tmp / "c", tmp, path, r"empty \(0 bytes\)")


def case_nan_voxels(tmp: Path) -> Case:
    image = blob_image(dtype=np.float32)
    array = sitk.GetArrayFromImage(image)
    array[1, 2, 3] = np.nan
    bad = sitk.GetImageFromArray(array)
    bad.CopyInformation(image)
    path = one_session_cohort(tmp / "c", image=bad)
    return _ingest_error(tmp / "c", tmp, path, "1 NaN/Inf voxel")


def case_inf_voxels_nrrd(tmp: Path) -> Case:
    image = blob_image(dtype=np.float64)
    array = sitk.GetArrayFromImage(image)
    array[0, 0, 0], array[2, 2, 2] = np.inf, -np.inf
    bad = sitk.GetImageFromArray(array)
    bad.CopyInformation(image)
    path = one_session_cohort(tmp / "c", image=bad, name="scan.nrrd")
    return _ingest_error(tmp / "c", tmp, path, "2 NaN/Inf voxel")


def case_2d_image(tmp: Path) -> Case:
    path = empty_session(tmp / "c") / "image.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((16, 20), np.int16)), str(path))
    return _ingest_error(tmp / "c", tmp, path, "expected a 3D image, got 2D")


def case_4d_image(tmp: Path) -> Case:
    path = empty_session(tmp / "c") / "image.nii.gz"
    sitk.WriteImage(sitk.Image([20, 16, 12, 3], sitk.sitkInt16), str(path))
    return _ingest_error(tmp / "c", tmp, path, "expected a 3D image, got 4D")


def case_non_orthonormal_direction_nifti(tmp: Path) -> Case:
    # ITK's NIfTI reader would silently fall back to the qform or coerce the sheared sform
    path = nifti_with_sheared_sform(empty_session(tmp / "c") / "image.nii")
    return _ingest_error(tmp / "c", tmp, path, "not orthonormal")


def case_non_orthonormal_direction_mha(tmp: Path) -> Case:
    image = blob_image(direction=(1, 0, 0, 0.5, 1, 0, 0, 0, 1))
    path = one_session_cohort(tmp / "c", image=image, prompts=None, name="scan.mha")
    return _ingest_error(tmp / "c", tmp, path, "not orthonormal")


def case_huge_image_memory_estimate(tmp: Path) -> Case:
    folder = empty_session(tmp / "c")
    path = nifti_with_huge_header(folder / "image.nii")
    return _ingest_error(tmp / "c", tmp, path, r"too large to load: its voxels need [\d.]+ GiB .* only [\d.]+ GiB")


def case_extreme_anisotropy(tmp: Path) -> Case:
    """0.5 x 0.5 x 10 mm is accepted: ingest keeps the spacing, segmentation keeps the geometry."""
    centre = (5, 24, 24)  # radii 12 mm in z, 6 mm in-plane
    image = blob_image(shape_zyx=(10, 48, 48), spacing=(0.5, 0.5, 10.0), centre_zyx=centre, radii_zyx=(1.2, 12, 12))
    path = one_session_cohort(tmp / "c", image=image, prompts=point_prompt(image, index_zyx=centre))
    out = tmp / "out"

    def call():
        manifest = ingest_cohort(out / "manifest.parquet", root=tmp / "c")
        seg = segment_session(path, prompts_json=path.parent / "prompts.json", output_path=out / "labels.nii.gz")
        return manifest, seg

    def outcome(result):
        manifest, seg = result
        assert list(manifest.spacing.iloc[0]) == [0.5, 0.5, 10.0]
        labels = sitk.ReadImage(str(seg.labels_path))
        assert labels.GetPixelID() == sitk.sitkUInt32
        assert Geometry.of(labels) == Geometry.of(sitk.ReadImage(str(path)))
        found = sitk.GetArrayFromImage(labels) == 3
        assert found[5, 24, 24] and not found[5, 2, 2]  # the prompted blob, not the background

    return Case(call, out, outcome=outcome)


def _with_follow_up(root: Path, image: sitk.Image | None = None, name: str = "image.nii.gz") -> Path:
    """A valid baseline ``sub-A1/ses-1`` and a follow-up ``sub-A1/ses-2``; returns the follow-up's image."""
    one_session_cohort(root)
    return write_session(root, "A1", "2", image if image is not None else blob_image(), name=name)


def case_corrupt_gzip_follow_up(tmp: Path) -> Case:
    """64 bytes flipped in the middle of a follow-up .nii.gz: ITK reads it (half the voxels garbage),
    only gzip's CRC-32 in the trailer tells; the whole stream is read at ingest."""
    path = _with_follow_up(tmp / "c")
    shutil.copy(EMBEDDED_REAL / "example_ct_sm.nii.gz", path)
    flip_middle_bytes(path)
    return _ingest_error(tmp / "c", tmp, path, "corrupt gzip data: CRC check failed")


def _compressed_follow_up(root: Path, name: str) -> Path:
    path = _with_follow_up(root, name=name)
    sitk.WriteImage(blob_image(), str(path), useCompression=True)
    return path


def case_corrupt_zlib_mha(tmp: Path) -> Case:
    """A damaged compressed MetaImage: ITK reads garbage voxels without an error; zlib tells."""
    path = flip_middle_bytes(_compressed_follow_up(tmp / "c", "scan.mha"))
    return _ingest_error(tmp / "c", tmp, path, "corrupt zlib data")


def case_corrupt_gzip_trailer_nrrd(tmp: Path) -> Case:
    """A gzip-encoded NRRD whose trailer (CRC-32, length) does not match its data: ITK stops reading
    before the trailer; the whole stream is read at ingest."""
    path = _compressed_follow_up(tmp / "c", "scan.nrrd")
    data = bytearray(path.read_bytes())
    data[-4] ^= 0xFF  # the length of the uncompressed data, modulo 2**32
    path.write_bytes(bytes(data))
    return _ingest_error(tmp / "c", tmp, path, "corrupt gzip data: .*incorrect length check")


def case_spacing_implausible(tmp: Path) -> Case:
    """A header whose z spacing is 10x too large (25 mm instead of 2.5) hung registration for 21 minutes."""
    path = _with_follow_up(tmp / "c", blob_image(spacing=(0.8, 1.1, 25.0)))
    return _ingest_error(tmp / "c", tmp, path, r"implausible voxel spacing 25 mm on axis z .*0\.1-20 mm")


def case_spacing_too_fine(tmp: Path) -> Case:
    path = _with_follow_up(tmp / "c", blob_image(spacing=(0.8, 0.01, 2.5)))
    return _ingest_error(tmp / "c", tmp, path, "implausible voxel spacing 0.01 mm on axis y")


def case_single_slice_follow_up(tmp: Path) -> Case:
    """A single-slice 3D follow-up used to pass ingest and fail only in registration."""
    path = _with_follow_up(tmp / "c", make_image(shape_zyx=(1, 16, 20)))
    return _ingest_error(tmp / "c", tmp, path, r"only 1 voxel\(s\) on axis z .*at least 4")


def case_unreadable_image(tmp: Path) -> Case:
    """An image the user may not read: the message says so and why (ITK says "does not exist")."""
    path = _with_follow_up(tmp / "c")
    case = _ingest_error(tmp / "c", tmp, path, r"cannot read the file \(Permission denied\)")
    call = case.call

    def unreadable():
        with unreadable_file(path):
            return call()

    case.call = unreadable
    return case


# -- DICOM ----------------------------------------------------------------------------------------


def case_dicom_mixed_series(tmp: Path) -> Case:
    import pydicom

    files = dicom_files()
    folder = copy_dicom(files[:4], empty_session(tmp / "c") / "dicom")
    for f in files[4:8]:
        ds = pydicom.dcmread(f)
        ds.SeriesInstanceUID = pydicom.uid.generate_uid(entropy_srcs=["series-b"])
        ds.SOPInstanceUID = pydicom.uid.generate_uid(entropy_srcs=[f.name])
        ds.save_as(folder / (f.name + "b"))
    return _ingest_error(tmp / "c", tmp, folder, "2 DICOM series")


def case_dicom_missing_slice(tmp: Path) -> Case:
    import pydicom

    files = sorted(dicom_files(), key=lambda f: float(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient[2]))
    folder = copy_dicom(files[:9] + files[10:], empty_session(tmp / "c") / "dicom")
    return _ingest_error(tmp / "c", tmp, folder, "unevenly spaced.*missing")


# -- prompts --------------------------------------------------------------------------------------


def case_prompt_unknown_frame(tmp: Path) -> Case:
    path = one_session_cohort(tmp / "c", prompts={"frame": "RAS", "lesions": [{"id": 1, "point": [0, 0, 0]}]})
    return _ingest_error(tmp / "c", tmp, path.parent / "prompts.json", "frame: Input should be 'world' or 'voxel'")


def case_prompt_in_wrong_frame(tmp: Path) -> Case:
    """Voxel indices (z, y, x) written into a world-frame file land outside the image: caught."""
    path = one_session_cohort(tmp / "c", prompts={"frame": "world", "lesions": [{"id": 1, "point": [6, 8, 10]}]})
    return _ingest_error(tmp / "c", tmp, path.parent / "prompts.json", r"lesion 1: point .*\(world frame\) lies outside the image")


def case_prompt_outside_image_segment(tmp: Path) -> Case:
    """The same check in ``segment_session`` (the ``lesionlocator segment`` command), before any work."""
    image = blob_image()
    path = one_session_cohort(tmp / "c", image=image, prompts=point_prompt(image, index_zyx=(6, 8, 60)))
    out = tmp / "out"
    call = lambda: segment_session(path, prompts_json=path.parent / "prompts.json", output_path=out / "labels.nii.gz")  # noqa: E731
    return Case(call, out, error=(InputError, str(path.parent / "prompts.json"), "lies outside the image"))


def case_prompt_box_outside_image(tmp: Path) -> Case:
    prompts = {"frame": "voxel", "lesions": [{"id": 2, "box": {"min": [2, 2, 2], "max": [8, 30, 8]}}]}
    path = one_session_cohort(tmp / "c", prompts=prompts)
    return _ingest_error(tmp / "c", tmp, path.parent / "prompts.json", "lesion 2: box .* reaches outside the image")


def case_review_at_baseline(tmp: Path) -> Case:
    prompts = point_prompt(blob_image())
    prompts["lesions"].append({"id": 1000001, "review": "confirmed"})
    path = one_session_cohort(tmp / "c", prompts=prompts)
    return _ingest_error(tmp / "c", tmp, path.parent / "prompts.json", r"lesion\(s\) \[1000001\]: a review .* belongs in a follow-up")


def case_empty_mask_prompt(tmp: Path) -> Case:
    image = blob_image()
    path = one_session_cohort(tmp / "c", image=image, prompts=None)
    mask = path.parent / "prompt_mask.nii.gz"
    sitk.WriteImage(mask_like(image, np.zeros(image.GetSize()[::-1])), str(mask))
    return _ingest_error(tmp / "c", tmp, mask, "prompt mask is empty")


def case_empty_mask_prompt_segment(tmp: Path) -> Case:
    image = blob_image()
    path = one_session_cohort(tmp / "c", image=image, prompts=None)
    mask = path.parent / "prompt_mask.nii.gz"
    sitk.WriteImage(mask_like(image, np.zeros(image.GetSize()[::-1])), str(mask))
    out = tmp / "out"
    call = lambda: segment_session(path, prompt_mask=mask, output_path=out / "labels.nii.gz")  # noqa: E731
    return Case(call, out, error=(InputError, str(mask), "prompt mask is empty"))


def case_all_ones_mask_prompt(tmp: Path) -> Case:
    image = blob_image()
    path = one_session_cohort(tmp / "c", image=image, prompts=None)
    mask = path.parent / "prompt_mask.nii.gz"
    sitk.WriteImage(mask_like(image, np.ones(image.GetSize()[::-1]), np.uint8), str(mask))
    return _ingest_error(tmp / "c", tmp, mask, "marks 100% of the image as lesion")


def case_mask_geometry_mismatch(tmp: Path) -> Case:
    image = blob_image()
    path = one_session_cohort(tmp / "c", image=image, prompts=None)
    array = np.zeros(image.GetSize()[::-1])
    array[5:8, 7:10, 9:12] = 1
    shifted = mask_like(image, array)
    shifted.SetOrigin((0.0, 0.0, 0.0))
    mask = path.parent / "prompt_mask.nii.gz"
    sitk.WriteImage(shifted, str(mask))
    return _ingest_error(tmp / "c", tmp, mask, "geometry differs from its image: origin")


def case_prompt_id_boolean(tmp: Path) -> Case:
    """``"id": true`` used to become lesion 1."""
    path = one_session_cohort(tmp / "c", prompts={"frame": "voxel", "lesions": [{"id": True, "point": [6, 8, 10]}]})
    return _ingest_error(tmp / "c", tmp, path.parent / "prompts.json", r"lesions\[0\]\.id: Input should be a valid integer \(got true\)")


def case_prompt_id_string(tmp: Path) -> Case:
    path = one_session_cohort(tmp / "c", prompts={"frame": "voxel", "lesions": [{"id": "7", "point": [6, 8, 10]}]})
    return _ingest_error(tmp / "c", tmp, path.parent / "prompts.json", r'lesions\[0\]\.id: Input should be a valid integer \(got "7"\)')


def case_prompts_utf16(tmp: Path) -> Case:
    path = one_session_cohort(tmp / "c", prompts=None)
    prompts = path.parent / "prompts.json"
    prompts.write_text(json.dumps(point_prompt(blob_image())), encoding="utf-16")
    return _ingest_error(tmp / "c", tmp, prompts, r"not UTF-8 text \(it is UTF-16 text\)")


def _mask_case(tmp: Path, values: np.ndarray, dtype, groundtruth: bool) -> tuple[Path, Path]:
    image = blob_image()
    path = one_session_cohort(tmp / "c", image=image, prompts=None if not groundtruth else "default")
    if groundtruth:
        folder = tmp / "c" / "derivatives" / "groundtruth" / "sub-A1" / "ses-1"
        folder.mkdir(parents=True)
        mask = folder / "lesions.nii.gz"
    else:
        mask = path.parent / "prompt_mask.nii.gz"
    sitk.WriteImage(mask_like(image, values, dtype), str(mask))
    return path, mask


def _blob_labels(value) -> np.ndarray:
    array = np.zeros(blob_image().GetSize()[::-1])
    array[5:8, 7:10, 9:12] = value
    return array


def case_negative_label_prompt_mask(tmp: Path) -> Case:
    _, mask = _mask_case(tmp, _blob_labels(-1), np.int16, groundtruth=False)
    return _ingest_error(tmp / "c", tmp, mask, r"prompt mask holds negative label\(s\) \(minimum -1\)")


def case_negative_label_groundtruth(tmp: Path) -> Case:
    _, mask = _mask_case(tmp, _blob_labels(-3), np.int32, groundtruth=True)
    return _ingest_error(tmp / "c", tmp, mask, r"ground-truth mask holds negative label\(s\) \(minimum -3\)")


def case_non_integer_groundtruth(tmp: Path) -> Case:
    """A probability map given as ground truth."""
    _, mask = _mask_case(tmp, _blob_labels(0.75), np.float32, groundtruth=True)
    return _ingest_error(tmp / "c", tmp, mask, r"ground-truth mask holds 27 non-integer value\(s\) \(e\.g\. 0\.75\)")


# -- sessions and labels --------------------------------------------------------------------------


def _two_sessions(root: Path, tsv: str) -> None:
    one_session_cohort(root)
    write_session(root, "A1", "2", blob_image())
    (root / "sub-A1" / "sub-A1_sessions.tsv").write_text(tsv)


def case_sessions_duplicated_time(tmp: Path) -> Case:
    _two_sessions(tmp / "c", "session_id\tacq_time\nses-1\t2021-01-04\nses-2\t2021-01-04\n")
    return _ingest_error(tmp / "c", tmp, tmp / "c" / "sub-A1", "share the same acquisition time")


def case_sessions_listed_twice(tmp: Path) -> Case:
    _two_sessions(tmp / "c", "session_id\tacq_time\nses-1\t2021-01-04\nses-2\t2021-03-01\nses-1\t2021-05-01\n")
    return _ingest_error(tmp / "c", tmp, tmp / "c" / "sub-A1" / "sub-A1_sessions.tsv", "listed twice")


def case_sessions_duplicated_label(tmp: Path) -> Case:
    one_session_cohort(tmp / "c")
    write_session(tmp / "c", "A1", "fu", blob_image())
    write_session(tmp / "c", "A1", "FU", blob_image())
    return _ingest_error(tmp / "c", tmp, tmp / "c" / "sub-A1" / "ses-fu", "duplicates ses-FU")


def case_sessions_bad_date(tmp: Path) -> Case:
    _two_sessions(tmp / "c", "session_id\tacq_time\nses-1\t04/01/2021\nses-2\t2021-03-01\n")
    return _ingest_error(tmp / "c", tmp, tmp / "c" / "sub-A1", "not an ISO 8601")


_MIXED_ZONES = "session_id\tacq_time\nses-1\t2021-01-04T09:30:00+01:00\nses-2\t2021-03-01T10:00:00\n"
_MIXED_ZONES_PROBLEM = r"patient A1: acq_time mixes values with a time zone .* and without .*give every session"


def case_sessions_mixed_time_zones(tmp: Path) -> Case:
    """Aware and naive times cannot be compared: a traceback (TypeError) before."""
    _two_sessions(tmp / "c", _MIXED_ZONES)
    return _ingest_error(tmp / "c", tmp, tmp / "c" / "sub-A1" / "sub-A1_sessions.tsv", _MIXED_ZONES_PROBLEM)


def case_sessions_mixed_time_zones_at_planning(tmp: Path) -> Case:
    """The same at the Snakefile's parse-time planning (``cohort_plan``, workflow/rules/common.smk)."""
    _two_sessions(tmp / "c", _MIXED_ZONES)
    call = lambda: cohort_plan(StudyConfig(cohort={"root": tmp / "c"}))  # noqa: E731
    return Case(call, tmp / "out", error=(InputError, str(tmp / "c" / "sub-A1" / "sub-A1_sessions.tsv"), _MIXED_ZONES_PROBLEM))


def case_sessions_order_not_a_number(tmp: Path) -> Case:
    _two_sessions(tmp / "c", "session_id\torder\nses-1\tfirst\nses-2\t2\n")
    return _ingest_error(tmp / "c", tmp, tmp / "c" / "sub-A1" / "sub-A1_sessions.tsv:2", "session '1': order 'first' is not a number")


def case_cohort_table_short_row(tmp: Path) -> Case:
    image = write_session(tmp / "c", "X", "1", blob_image())
    table = tmp / "cohort.tsv"
    table.write_text(f"patient\tsession\timage\torder\nX\t1\t{image}\t1\nX\t2\t{image}\n")
    out = tmp / "out"
    call = lambda: ingest_cohort(out / "manifest.parquet", table=table)  # noqa: E731
    return Case(call, out, error=(InputError, f"{table}:3", r"row has 3 field\(s\) but the header has 4"))


def case_unreadable_session_folder(tmp: Path) -> Case:
    root = tmp / "c"
    folder = _with_follow_up(root).parent
    case = _ingest_error(root, tmp, folder, r"cannot read the folder \(Permission denied\)")
    call = case.call

    def unreadable():
        with unreadable_folder(folder):
            return call()

    case.call = unreadable
    return case


def _near_misses(root: Path) -> list[Path]:
    """A valid patient A1 (sessions 1, 2), and four folders ingest used to drop without a word."""
    _with_follow_up(root)
    write_session(root, "P001", "01", blob_image())
    (root / "sub-P001" / "ses-01" / "prompts.json").write_text(json.dumps(point_prompt(blob_image())))
    missed = [root / "sub-A1" / "ses_03", root / "sub-A1" / "Ses-04", root / "Sub-P002" / "ses-01", root / "sub_P003" / "ses-01"]
    for folder in missed:
        folder.mkdir(parents=True)
        sitk.WriteImage(blob_image(), str(folder / "image.nii.gz"))
    return [missed[0], missed[1], root / "Sub-P002", root / "sub_P003"]


def case_near_miss_names_are_listed(tmp: Path) -> Case:
    """Documented: ingested without them, each logged and listed in ``manifest.attrs["ignored"]``."""
    root = tmp / "c"
    missed = _near_misses(root)
    case = _ingest(root, tmp)

    def outcome(manifest: pd.DataFrame):
        assert manifest.session.tolist() == ["1", "2", "01"]
        ignored = manifest.attrs["ignored"]
        assert sorted(line.split(": ")[0] for line in ignored) == sorted(map(str, missed))
        assert any(line.endswith("rename it ses-03") for line in ignored)
        assert any(line.endswith("rename it sub-P002") for line in ignored)

    case.outcome = outcome
    return case


def case_near_miss_names_strict(tmp: Path) -> Case:
    """``cohort.strict``: one error listing every near-miss name, nothing written."""
    root = tmp / "c"
    missed = _near_misses(root)
    out = tmp / "out"
    call = lambda: ingest_cohort(out / "manifest.parquet", root=root, strict=True)  # noqa: E731
    every = "(?s)" + "".join(f"(?=.*{re.escape(str(path))}: ignored: looks like a)" for path in missed)
    return Case(call, out, error=(CohortError, "4 problem(s) in the cohort", every))


def case_sessions_out_of_order(tmp: Path) -> Case:
    """Documented: sessions are ordered by acq_time whatever the order of rows or labels."""
    root = tmp / "c"
    write_session(root, "A1", "1", blob_image())
    baseline = write_session(root, "A1", "2", blob_image())
    (baseline.parent / "prompts.json").write_text(json.dumps(point_prompt(blob_image())))
    (root / "sub-A1" / "sub-A1_sessions.tsv").write_text("session_id\tacq_time\nses-1\t2021-06-01\nses-2\t2021-01-04\n")
    case = _ingest(root, tmp)

    def outcome(manifest: pd.DataFrame):
        assert manifest.session.tolist() == ["2", "1"]
        assert manifest.is_baseline.tolist() == [True, False]
        assert (tmp / "out" / "manifest.parquet").exists()

    case.outcome = outcome
    return case


def _table(tmp: Path, patient: str) -> Path:
    image = write_session(tmp / "c", "X", "1", blob_image())
    table = tmp / "cohort.tsv"
    quoted = '"' + patient.replace('"', '""') + '"'
    table.write_text(f"patient\tsession\timage\n{quoted}\t1\t{image}\n")
    return table


@pytest.mark.parametrize("label", ["../../etc", "a/b", "A1\n"])
def test_labels_with_path_characters_are_refused(tmp_path, label):
    table = _table(tmp_path, label)
    out = tmp_path / "out"
    with pytest.raises(InputError, match="no path characters") as err:
        ingest_cohort(out / "manifest.parquet", table=table)
    assert str(table) in str(err.value)
    assert leftovers(out) == []


def case_label_with_path_characters(tmp: Path) -> Case:
    table = _table(tmp, "../../escape")
    out = tmp / "out"
    call = lambda: ingest_cohort(out / "manifest.parquet", table=table)  # noqa: E731
    return Case(call, out, error=(InputError, f"{table}:2", r"patient label '\.\./\.\./escape' must match"))


def case_all_problems_at_once(tmp: Path) -> Case:
    """Several bad files: one error lists each (file: problem), nothing written."""
    root = tmp / "c"
    one_session_cohort(root)
    bad = write_session(root, "B2", "1", blob_image())
    bad.write_bytes(b"")
    third = empty_session(root, "C3")
    return _ingest_error(root, tmp, f"{bad}: file is empty (0 bytes)\n  {third}: no baseline image", "2 problem", CohortError)


# -- output ---------------------------------------------------------------------------------------


def case_output_folder_read_only(tmp: Path) -> Case:
    """``lesionlocator ingest -o`` into a folder the user may not write: ``error: path: problem``,
    exit 2, before any image is read (a traceback before, after validating the whole cohort)."""
    one_session_cohort(tmp / "c")
    out = tmp / "out"
    out.mkdir()
    target = out / "manifest.parquet"

    def call():
        stderr = io.StringIO()
        with read_only_folder(out), contextlib.redirect_stderr(stderr):
            code = cli_main(["ingest", "--root", str(tmp / "c"), "-o", str(target)])
        return code, stderr.getvalue()

    def outcome(result):
        code, stderr = result
        assert code == 2
        assert stderr.startswith(f"error: {target}: cannot write the manifest there (Permission denied)"), stderr
        assert "Traceback" not in stderr
        assert leftovers(out) == []

    return Case(call, out, outcome=outcome)


def case_output_folder_read_only_api(tmp: Path) -> Case:
    one_session_cohort(tmp / "c")
    out = tmp / "out"
    out.mkdir()

    def call():
        with read_only_folder(out):
            return ingest_cohort(out / "manifest.parquet", root=tmp / "c")

    return Case(call, out, error=(LesionLocatorError, str(out / "manifest.parquet"), r"cannot write the manifest there \(Permission denied\)"))


# -- config ---------------------------------------------------------------------------------------


def _config_case(tmp: Path, data: dict, key: str, problem: str) -> Case:
    path = tmp / "study.yaml"
    path.write_text(yaml.safe_dump(data))
    return Case(lambda: load_config(path), tmp / "results", error=(ConfigError, str(path), rf"{key}: {problem}"))


def case_config_invalid_value(tmp: Path) -> Case:
    return _config_case(tmp, {"register": {"min_overlap": 1.5}}, r"register\.min_overlap", "Input should be less than or equal to 1")


def case_config_invalid_choice(tmp: Path) -> Case:
    return _config_case(tmp, {"segment": {"device": "gpu"}}, r"segment\.device", "Input should be 'auto', 'cpu', 'cuda' or 'mps'")


def case_config_unknown_key(tmp: Path) -> Case:
    return _config_case(tmp, {"track": {"min_volume_mL": 0.1}}, r"track\.min_volume_mL", "unknown key")


def case_config_missing_checkpoint(tmp: Path) -> Case:
    return _config_case(tmp, {"segment": {"segmenter": "nnunet", "checkpoint": str(tmp / "nope")}}, "segment", "checkpoint: folder does not exist")


# -- checkpoints ----------------------------------------------------------------------------------

_TOY_PLANS = dict(patch_size=(16, 16, 16), features=(4, 8))


def case_checkpoint_wrong_channel_count(tmp: Path) -> Case:
    folder = write_toy_model(tmp / "model", input_channels=3, plans=toy_plans(**_TOY_PLANS))
    return Case(lambda: load_model(folder), tmp / "out", error=(InputError, str(folder / "fold_0"), "3 input channel"))


def case_checkpoint_truncated(tmp: Path) -> Case:
    folder = write_toy_model(tmp / "model", plans=toy_plans(**_TOY_PLANS))
    path = folder / "fold_0" / "checkpoint_final.pth"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return Case(lambda: load_model(folder), tmp / "out", error=(InputError, str(path), "cannot read checkpoint"))


# -- registration ---------------------------------------------------------------------------------


def case_register_other_body_region(tmp: Path) -> Case:
    """A follow-up that shows a much longer body region than the previous scan cannot be registered:
    a clear error naming both files, and no transform file."""
    from tests.helpers import EMBEDDED_REAL

    ct = sitk.ReadImage(str(EMBEDDED_REAL / "example_ct.nii.gz"))
    previous = tmp / "previous.nii.gz"
    sitk.WriteImage(ct[:, :, 50:55], str(previous))
    follow_up = EMBEDDED_REAL / "example_ct.nii.gz"
    out = tmp / "out"
    config = RegisterConfig(affine=False, deformable=False)
    call = lambda: register_pair(follow_up, previous, out / "to_previous.tfm", config)  # noqa: E731
    return Case(call, out, error=(InputError, f"{follow_up}: cannot register to {previous}", "do not cover the same anatomy"))


CASES = {name.removeprefix("case_"): fn for name, fn in sorted(globals().items()) if name.startswith("case_")}


def test_matrix_has_at_least_20_cases():
    assert len(CASES) >= 20, sorted(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input(tmp_path, name):
    case = CASES[name](tmp_path)
    if case.error is not None:
        error, names, problem = case.error
        with pytest.raises(error) as raised:
            case.call()
        message = str(raised.value)
        assert names in message, f"the message does not name {names!r}:\n{message}"
        assert re.search(problem, message), f"{problem!r} not in:\n{message}"
        assert leftovers(case.out) == [], "a failed call left output behind"
    else:
        case.outcome(case.call())
    assert partial_files(tmp_path) == []
