import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from lesionlocator.core.dicomseg import tracking_uid, write_dicom_seg
from lesionlocator.core.errors import InputError
from lesionlocator.core.io import image_from_array, read_image
from tests.helpers import EMBEDDED_REAL

DICOM = EMBEDDED_REAL / "example_ct_dicom"


@pytest.fixture(scope="module")
def series():
    return read_image(DICOM)


def _labels(series, ids_and_boxes):
    array = np.zeros(series.GetSize()[::-1], dtype=np.uint32)
    for lesion_id, (z, y, x) in ids_and_boxes.items():
        array[z, y, x] = lesion_id
    return image_from_array(array, series)


def test_segments_geometry_and_tracking_identifiers(series, tmp_path):
    labels = _labels(series, {7: (slice(3, 6), slice(100, 130), slice(200, 240)), 300: (slice(10, 12), slice(300, 310), slice(50, 60))})
    path = write_dicom_seg(labels, DICOM, tmp_path / "a.dcm", "P1", "01")
    ds = pydicom.dcmread(path)
    assert ds.Modality == "SEG"
    segments = ds.SegmentSequence
    assert [s.SegmentLabel for s in segments] == ["Lesion 7", "Lesion 300"]
    assert [s.TrackingID for s in segments] == ["lesion-7", "lesion-300"]
    assert segments[0].TrackingUID == tracking_uid("P1", 7)
    # read back through highdicom: the mask of each segment lands on the right voxels
    import highdicom as hd

    seg = hd.seg.Segmentation.from_dataset(ds)
    # this anonymised series keeps its SOP Instance UIDs in the file meta header only
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(DICOM))
    source_uids = [pydicom.dcmread(f, stop_before_pixels=True).file_meta.MediaStorageSOPInstanceUID for f in files]
    pixels = seg.get_pixels_by_source_instance(source_sop_instance_uids=source_uids, segment_numbers=[1, 2], combine_segments=True)
    truth = sitk.GetArrayFromImage(labels)
    assert np.array_equal(pixels > 0, truth > 0)
    assert np.array_equal(pixels == 1, truth == 7)


def test_same_lesion_same_tracking_uid_across_sessions_and_rerun_is_identical(series, tmp_path):
    labels = _labels(series, {7: (slice(3, 6), slice(100, 130), slice(200, 240))})
    a = write_dicom_seg(labels, DICOM, tmp_path / "a.dcm", "P1", "01")
    b = write_dicom_seg(labels, DICOM, tmp_path / "b.dcm", "P1", "01")
    c = write_dicom_seg(labels, DICOM, tmp_path / "c.dcm", "P1", "02")
    assert a.read_bytes() == b.read_bytes()
    da, dc = pydicom.dcmread(a), pydicom.dcmread(c)
    assert da.SegmentSequence[0].TrackingUID == dc.SegmentSequence[0].TrackingUID
    assert da.SOPInstanceUID != dc.SOPInstanceUID
    assert tracking_uid("P1", 7) != tracking_uid("P2", 7)


def test_empty_labels_and_wrong_grid(series, tmp_path):
    empty = _labels(series, {})
    assert write_dicom_seg(empty, DICOM, tmp_path / "e.dcm", "P1", "01") is None
    assert not (tmp_path / "e.dcm").exists()
    wrong = sitk.Image([8, 8, 8], sitk.sitkUInt32)
    with pytest.raises(InputError, match="grid"):
        write_dicom_seg(wrong, DICOM, tmp_path / "w.dcm", "P1", "01")


@pytest.mark.slow
def test_pipeline_writes_dicom_seg_for_dicom_sessions(series, tmp_path):
    """Two sessions of the same DICOM series: each gets a DICOM-SEG; the lesion keeps its Tracking UID."""
    import json
    import shutil

    from lesionlocator.core.config import StudyConfig
    from lesionlocator.core.layout import ResultsLayout
    from lesionlocator.ingest.cohort import ingest_cohort
    from lesionlocator.pipeline import track_patient

    root = tmp_path / "cohort"
    for session in ("1", "2"):
        shutil.copytree(DICOM, root / "sub-D1" / f"ses-{session}" / "dicom")
    # a box around a bright structure of the series (voxel frame z, y, x)
    (root / "sub-D1" / "ses-1" / "prompts.json").write_text(
        json.dumps({"frame": "voxel", "lesions": [{"id": 12, "box": {"min": [8, 240, 240], "max": [12, 280, 280]}}]})
    )
    ingest_cohort(tmp_path / "manifest.parquet", root=root)
    config = StudyConfig(results_dir=tmp_path / "results", track={"candidates": False})
    reports = track_patient(tmp_path / "manifest.parquet", "D1", config, tmp_path / "reports")
    assert all(r["patients"]["D1"]["outcome"] == "ok" for r in reports), reports
    layout = ResultsLayout(tmp_path / "results")
    uids = []
    for session in ("1", "2"):
        ds = pydicom.dcmread(layout.dicom_seg("D1", session))
        assert [s.SegmentLabel for s in ds.SegmentSequence] == ["Lesion 12"]
        uids.append(ds.SegmentSequence[0].TrackingUID)
    assert uids[0] == uids[1] == tracking_uid("D1", 12)
