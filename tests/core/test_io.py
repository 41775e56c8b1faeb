import gzip
import os

import numpy as np
import pytest
import SimpleITK as sitk

from lesionlocator.core.errors import InputError
from lesionlocator.core.io import (
    Geometry,
    atomic_directory,
    atomic_path,
    check_plausible_geometry,
    geometry_difference,
    image_from_array,
    read_geometry,
    read_image,
    same_geometry,
    write_image,
    write_json,
)
from tests.helpers import EMBEDDED_REAL, OBLIQUE_DIRECTION, make_image
from tests.reliability.builders import flip_middle_bytes, unreadable_file, unreadable_folder


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha"])
def test_round_trip_keeps_geometry_and_voxels(tmp_path, suffix):
    image = make_image()
    path = write_image(image, tmp_path / f"img{suffix}")
    back = read_image(path)
    assert same_geometry(Geometry.of(back), Geometry.of(image), tolerance=1e-5)
    assert np.allclose(back.GetDirection(), OBLIQUE_DIRECTION, atol=1e-5)
    assert np.array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(image))
    assert read_geometry(path) == Geometry.of(back)


def test_nifti_writes_are_byte_identical(tmp_path):
    image = make_image()
    a = write_image(image, tmp_path / "a.nii.gz").read_bytes()
    b = write_image(image, tmp_path / "b.nii.gz").read_bytes()
    assert a == b


def test_index_world_round_trip_matches_simpleitk():
    image = make_image()
    geometry = Geometry.of(image)
    rng = np.random.default_rng(1)
    index_zyx = rng.uniform(0, 10, size=(20, 3))
    world = geometry.index_to_world(index_zyx)
    for idx, w in zip(index_zyx, world):
        expected = image.TransformContinuousIndexToPhysicalPoint(tuple(float(v) for v in idx[::-1]))
        assert np.allclose(w, expected, atol=1e-6)
    assert np.allclose(geometry.world_to_index(world), index_zyx, atol=1e-9)


def test_contains_index_uses_half_voxel_tolerance():
    geometry = Geometry.of(make_image(shape_zyx=(4, 5, 6)))
    assert geometry.contains_index([3.4, 4.4, 5.4])
    assert not geometry.contains_index([3.6, 0, 0])
    assert not geometry.contains_index([0, -0.6, 0])


def test_geometry_difference_names_the_field():
    a = Geometry.of(make_image())
    b = Geometry.of(make_image(spacing=(0.8, 1.1, 3.0)))
    assert same_geometry(a, a)
    assert "spacing" in geometry_difference(a, b)
    assert geometry_difference(a, a) is None


def test_image_from_array_copies_geometry():
    image = make_image()
    array = np.zeros(image.GetSize()[::-1], dtype=np.uint32)
    out = image_from_array(array, image)
    assert same_geometry(Geometry.of(out), Geometry.of(image))
    with pytest.raises(ValueError):
        image_from_array(np.zeros((2, 2, 2)), image)


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert not target.exists()
    assert os.listdir(tmp_path) == []
    write_json({"b": 1, "a": [1, 2]}, target)
    assert target.read_text().startswith('{\n  "a"')
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask



def test_atomic_directory_replaces_the_folder_with_shared_permissions(tmp_path):
    target = tmp_path / "cohort"
    old_umask = os.umask(0o027)
    try:
        with atomic_directory(target) as work:
            assert work.parent == tmp_path and work.name.startswith(".cohort.") and not target.exists()
            (work / "a.txt").write_text("first")
        assert target.stat().st_mode & 0o777 == 0o750  # mkdtemp's 0700 would lock colleagues out
        os.umask(0o022)
        with atomic_directory(target) as work:
            (work / "b.txt").write_text("second")
        assert target.stat().st_mode & 0o777 == 0o755
    finally:
        os.umask(old_umask)
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]
    assert os.listdir(tmp_path) == ["cohort"]


def test_atomic_directory_keeps_the_old_folder_on_failure_and_clears_killed_builds(tmp_path):
    target = tmp_path / "cohort"
    with atomic_directory(target) as work:
        (work / "a.txt").write_text("first")
    with pytest.raises(RuntimeError):
        with atomic_directory(target) as work:
            (work / "a.txt").write_text("half")
            raise RuntimeError("killed")
    assert (target / "a.txt").read_text() == "first" and os.listdir(tmp_path) == ["cohort"]
    (tmp_path / ".cohort.k3j2_x9q.part").mkdir()  # left by a build killed with SIGKILL
    (tmp_path / ".cohorts.k3j2_x9q.part").mkdir()  # another output's
    with atomic_directory(target) as work:
        (work / "a.txt").write_text("again")
    assert sorted(os.listdir(tmp_path)) == [".cohorts.k3j2_x9q.part", "cohort"]

def test_real_ct_nifti_and_dicom():
    ct = read_image(EMBEDDED_REAL / "example_ct.nii.gz")
    assert ct.GetSize() == (122, 101, 112)
    assert np.allclose(ct.GetSpacing(), (3.0, 3.0, 3.0))
    assert np.allclose(np.diag(np.reshape(ct.GetDirection(), (3, 3))), (-1, -1, 1))
    dicom = read_image(EMBEDDED_REAL / "example_ct_dicom")
    assert dicom.GetSize() == (512, 512, 20)
    assert np.allclose(dicom.GetSpacing(), (0.977, 0.977, 2.0), atol=0.01)
    assert read_geometry(EMBEDDED_REAL / "example_ct_dicom") == Geometry.of(dicom)


def test_dicom_series_survives_write_as_nifti(tmp_path):
    dicom = read_image(EMBEDDED_REAL / "example_ct_dicom")
    back = read_image(write_image(dicom, tmp_path / "ct.nii.gz"))
    assert same_geometry(Geometry.of(back), Geometry.of(dicom), tolerance=1e-4)


# ---- bad input: each names the file and the problem ------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="file not found") as err:
        read_image(tmp_path / "nope.nii.gz")
    assert "nope.nii.gz" in str(err.value)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.nii.gz"
    path.write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        read_image(path)


def test_corrupt_file(tmp_path):
    path = tmp_path / "corrupt.nii.gz"
    path.write_bytes(gzip.compress(b"this is not a nifti header at all" * 20))
    with pytest.raises(InputError, match="cannot read image") as err:
        read_image(path)
    assert str(path) in str(err.value)


def test_truncated_nifti(tmp_path):
    good = write_image(make_image(shape_zyx=(30, 40, 50)), tmp_path / "good.nii.gz").read_bytes()
    path = tmp_path / "truncated.nii.gz"
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(InputError, match="truncated"):
        read_image(path)
    plain = tmp_path / "truncated.nii"
    sitk.WriteImage(make_image(shape_zyx=(30, 40, 50)), str(tmp_path / "full.nii"))
    plain.write_bytes((tmp_path / "full.nii").read_bytes()[:-100])
    with pytest.raises(InputError, match="truncated"):
        read_image(plain)


def test_unsupported_suffix(tmp_path):
    path = tmp_path / "scan.png"
    path.write_bytes(b"\x89PNG")
    with pytest.raises(InputError, match="not a supported image file"):
        read_image(path)


@pytest.mark.parametrize("size", [(8, 9), (4, 5, 6, 2)])
def test_wrong_dimension(tmp_path, size):
    image = sitk.Image(list(size), sitk.sitkInt16)
    path = tmp_path / "wrongdim.nii.gz"
    sitk.WriteImage(image, str(path))
    with pytest.raises(InputError, match="expected a 3D image"):
        read_image(path)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".mha", ".nrrd"])
def test_nan_voxels(tmp_path, suffix):
    # ITK's NIfTI reader turns NaN into 0 silently; read_image must still see them.
    array = np.zeros((4, 5, 6), np.float32)
    array[1, 2, 3] = np.nan
    array[0, 0, 0] = np.inf
    path = tmp_path / f"nan{suffix}"
    sitk.WriteImage(sitk.GetImageFromArray(array), str(path))
    with pytest.raises(InputError, match="2 NaN/Inf"):
        read_image(path)


def _copy_dicom(src_files, dst):
    dst.mkdir(parents=True, exist_ok=True)
    for f in src_files:
        (dst / f.name).write_bytes(f.read_bytes())


def test_dicom_folder_with_two_series(tmp_path):
    import pydicom

    files = sorted((EMBEDDED_REAL / "example_ct_dicom").iterdir())
    folder = tmp_path / "mixed"
    _copy_dicom(files[:4], folder)
    for f in files[4:8]:
        ds = pydicom.dcmread(f)
        ds.SeriesInstanceUID = pydicom.uid.generate_uid(entropy_srcs=["series-b"])
        ds.SOPInstanceUID = pydicom.uid.generate_uid(entropy_srcs=[f.name])
        ds.save_as(folder / (f.name + "b"))
    with pytest.raises(InputError, match="2 DICOM series"):
        read_image(folder)


def test_dicom_series_with_missing_slice(tmp_path):
    files = sorted((EMBEDDED_REAL / "example_ct_dicom").iterdir())
    import pydicom

    by_position = sorted(files, key=lambda f: float(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient[2]))
    folder = tmp_path / "gap"
    _copy_dicom(by_position[:7] + by_position[8:], folder)
    with pytest.raises(InputError, match="unevenly spaced"):
        read_image(folder)


def test_dicom_series_with_rounded_slice_positions_is_read_on_its_mean_spacing(tmp_path):
    """Scanners round slice positions (a GE oblique MR: gaps 6.958..7.071 mm around 7.0005): up to a
    tenth of the spacing off the uniform grid is accepted, on the mean spacing; a missing slice is not."""
    import pydicom

    files = sorted((EMBEDDED_REAL / "example_ct_dicom").iterdir())
    by_position = sorted(files, key=lambda f: float(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient[2]))
    folder = tmp_path / "rounded"
    folder.mkdir()
    jitter = [0.0] + [0.06 * (-1) ** k for k in range(1, len(by_position) - 1)] + [0.0]
    for f, dz in zip(by_position, jitter):
        ds = pydicom.dcmread(f)
        position = [float(v) for v in ds.ImagePositionPatient]
        ds.ImagePositionPatient = [position[0], position[1], round(position[2] + dz, 3)]
        ds.save_as(folder / f.name)
    image = read_image(folder)
    reference = read_image(EMBEDDED_REAL / "example_ct_dicom")
    assert image.GetSpacing() == pytest.approx(reference.GetSpacing(), abs=1e-3)
    assert image.GetOrigin() == pytest.approx(reference.GetOrigin(), abs=1e-3)
    missing = tmp_path / "rounded_gap"
    missing.mkdir()
    for f in sorted(folder.iterdir())[:]:
        if f.name != by_position[8].name:
            (missing / f.name).write_bytes(f.read_bytes())
    with pytest.raises(InputError, match="unevenly spaced.*off the"):
        read_image(missing)


def test_write_image_rejects_unknown_suffix(tmp_path):
    with pytest.raises(InputError, match="cannot write"):
        write_image(make_image(), tmp_path / "x.png")


# ---- compressed payloads are read whole and checked (issue 21) -------------------------------


def test_gzip_crc_failure_is_caught_where_itk_reads_garbage(tmp_path):
    path = tmp_path / "ct.nii.gz"
    path.write_bytes((EMBEDDED_REAL / "example_ct_sm.nii.gz").read_bytes())
    flip_middle_bytes(path)
    assert sitk.ReadImage(str(path)).GetSize() == (122, 101, 30)  # ITK: no error, half the voxels garbage
    with pytest.raises(InputError, match=r"corrupt gzip data: CRC check failed") as err:
        read_image(path)
    assert str(err.value).startswith(f"{path}: ")


def test_gzip_trailer_is_checked_when_the_voxels_are_intact(tmp_path):
    plain = tmp_path / "a.nii"
    sitk.WriteImage(make_image(), str(plain))
    data = bytearray(gzip.compress(plain.read_bytes(), mtime=0))
    for index, problem in ((-8, "CRC check failed"), (-1, "Incorrect length of data produced")):
        damaged = bytearray(data)
        damaged[index] ^= 0xFF
        path = tmp_path / "a.nii.gz"
        path.write_bytes(bytes(damaged))
        with pytest.raises(InputError, match=f"corrupt gzip data: {problem}"):
            read_image(path)
    path.write_bytes(bytes(data) + gzip.compress(b"\0" * 10))  # a second gzip member: still a valid stream
    read_image(path)


@pytest.mark.parametrize("suffix, problem", [(".mha", "corrupt zlib data"), (".nrrd", "corrupt gzip data|cannot read image")])
def test_damaged_compressed_mha_and_nrrd(tmp_path, suffix, problem):
    path = tmp_path / f"a{suffix}"
    sitk.WriteImage(make_image(shape_zyx=(30, 40, 50)), str(path), useCompression=True)
    read_image(path)
    flip_middle_bytes(path)
    with pytest.raises(InputError, match=problem) as err:
        read_image(path)
    assert str(err.value).startswith(f"{path}: ")


def test_truncated_compressed_mha(tmp_path):
    path = tmp_path / "a.mha"
    sitk.WriteImage(make_image(shape_zyx=(30, 40, 50)), str(path), useCompression=True)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(InputError, match="truncated|cannot read image"):
        read_image(path)


def test_detached_compressed_metaimage(tmp_path):
    path = tmp_path / "a.mhd"
    sitk.WriteImage(make_image(), str(path), useCompression=True)
    (data_file,) = [p for p in tmp_path.iterdir() if p.suffix != ".mhd"]
    read_image(path)
    flip_middle_bytes(data_file, n=16)
    with pytest.raises(InputError, match="corrupt zlib data|cannot read image") as err:
        read_image(path)
    assert str(data_file) in str(err.value) or str(path) in str(err.value)


# ---- an image that cannot be read says why (issue 21) ----------------------------------------


def test_unreadable_file_says_why(tmp_path):
    path = write_image(make_image(), tmp_path / "a.nii.gz")
    with unreadable_file(path), pytest.raises(InputError, match=r"cannot read the file \(Permission denied\)") as err:
        read_image(path)
    assert "exist" not in str(err.value)
    with unreadable_file(path), pytest.raises(InputError, match=r"cannot read the file \(Permission denied\)"):
        read_geometry(path)


def test_unreadable_dicom_folder_says_why(tmp_path):
    folder = tmp_path / "dicom"
    folder.mkdir()
    for f in sorted((EMBEDDED_REAL / "example_ct_dicom").iterdir())[:4]:
        (folder / f.name).write_bytes(f.read_bytes())
    with unreadable_folder(folder), pytest.raises(InputError, match=r"cannot read the folder \(Permission denied\)"):
        read_image(folder)


# ---- plausible scan geometry (issue 21) ------------------------------------------------------


@pytest.mark.parametrize(
    "size, spacing, problem",
    [
        ((20, 16, 12), (0.8, 1.1, 25.0), r"implausible voxel spacing 25 mm on axis z"),
        ((20, 16, 12), (0.05, 1.1, 2.5), r"implausible voxel spacing 0.05 mm on axis x"),
        ((20, 16, 1), (0.8, 1.1, 2.5), r"only 1 voxel\(s\) on axis z \(size \[20, 16, 1\], x y z\)"),
        ((20, 3, 12), (0.8, 1.1, 2.5), r"only 3 voxel\(s\) on axis y"),
    ],
)
def test_implausible_geometry(size, spacing, problem):
    geometry = Geometry(size=size, spacing=spacing, origin=(0.0, 0.0, 0.0), direction=OBLIQUE_DIRECTION)
    with pytest.raises(InputError, match=problem) as err:
        check_plausible_geometry(geometry, "scan.nii.gz")
    assert str(err.value).startswith("scan.nii.gz: ")


def test_plausible_geometry_bounds():
    for spacing in ((0.1, 0.1, 0.1), (20.0, 20.0, 20.0)):
        check_plausible_geometry(Geometry(size=(4, 4, 4), spacing=spacing, origin=(0.0, 0.0, 0.0), direction=OBLIQUE_DIRECTION), "x")


def test_plain_nifti_named_gz_is_read_as_is(tmp_path):
    """ITK (zlib's gzread) reads an uncompressed file named .nii.gz transparently; so does the check."""
    sitk.WriteImage(make_image(), str(tmp_path / "a.nii"))
    path = tmp_path / "a.nii.gz"
    path.write_bytes((tmp_path / "a.nii").read_bytes())
    assert read_image(path).GetSize() == make_image().GetSize()


@pytest.mark.parametrize("suffix", [".parquet", ".arrow"])
def test_patient_tables_read_back_with_their_declared_schema(tmp_path, suffix):
    """Per-patient tables (Parquet without the stored Arrow schema, or Arrow IPC) read back with exactly
    the schema they were written with: types, nullability, nulls."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from lesionlocator.core.io import read_patient_table, write_patient_table
    from lesionlocator.evaluate.longitudinal import STATUS_EVALUATION_SCHEMA
    from lesionlocator.evaluate.tracking import EVALUATION_SCHEMA
    from lesionlocator.measure.lesions import LESION_SCHEMA

    def column(field: pa.Field) -> pa.Array:
        if field.nullable:
            return pa.array([None, None, None], field.type)
        values = {"string": ["a", "b", "c"], "bool": [True, False, True]}.get(str(field.type), [1, 2, 3])
        return pa.array(values, field.type)

    for schema in (LESION_SCHEMA, EVALUATION_SCHEMA, STATUS_EVALUATION_SCHEMA):
        table = pa.table([column(f) for f in schema], schema=schema)
        path = write_patient_table(table, tmp_path / f"table{suffix}")
        found = read_patient_table(path)
        assert found.schema.equals(schema, check_metadata=True) and found.equals(table)
        if suffix == ".parquet":
            assert pq.read_table(path).schema.equals(schema) and len(pd.read_parquet(path)) == 3
