"""DICOM-SEG export of tracked lesions (highdicom), for sessions whose input was a DICOM series.

One segment per lesion, labelled ``Lesion <id>``. Each segment carries DICOM tracking identifiers: the
Tracking ID ``lesion-<id>`` and a Tracking UID derived from the patient label and lesion ID only, so
the same lesion has the same Tracking UID in every session's DICOM-SEG (viewers and SR tools link
them longitudinally). Every UID of the object is derived from its inputs, and the content date and
time are the source series' own, so a rerun writes the same bytes.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from lesionlocator import __version__
from lesionlocator.core.errors import InputError
from lesionlocator.core.io import Geometry, atomic_path, dicom_series_files, geometry_difference

log = logging.getLogger(__name__)


def tracking_uid(patient: str, lesion_id: int) -> str:
    """The Tracking UID of a lesion: the same for every session of the patient."""
    return generate_uid(entropy_srcs=["lesionlocator-tracking", patient, str(int(lesion_id))])


def write_dicom_seg(
    labels: sitk.Image,
    dicom_dir: str | Path,
    output: str | Path,
    patient: str,
    session: str,
    lesion_ids: Sequence[int] | None = None,
) -> Path | None:
    """Write the lesions of ``labels`` (uint32 instance map on the series' grid) as a DICOM-SEG.

    ``lesion_ids`` restricts the segments (default: every non-zero label present). Returns the path,
    or None when there is no lesion voxel to export.
    """
    import highdicom as hd

    dicom_dir = Path(dicom_dir)
    files = dicom_series_files(dicom_dir)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    series_geometry = Geometry.of(reader.Execute())
    difference = geometry_difference(Geometry.of(labels), series_geometry, tolerance=1e-3)
    if difference is not None:
        raise InputError(dicom_dir, f"label map does not lie on this DICOM series' grid: {difference}")
    array = sitk.GetArrayFromImage(labels)
    present = [int(i) for i in np.unique(array) if i != 0]
    ids = sorted(present if lesion_ids is None else [int(i) for i in lesion_ids if int(i) in present])
    if not ids:
        log.info("%s ses-%s: no lesion voxels, no DICOM-SEG written", patient, session)
        return None
    # segment numbers are 1..n in lesion-ID order; the lesion ID itself is kept in the label and tracking ID
    segments = np.zeros(array.shape, dtype=np.uint16 if len(ids) < 65535 else np.uint32)
    for number, lesion_id in enumerate(ids, start=1):
        segments[array == lesion_id] = number
    sources = [pydicom.dcmread(f) for f in files]  # in the series reader's (slice) order
    for source in sources:
        # some anonymisers blank SOPClassUID in the dataset; the file meta header still has it
        meta = getattr(source, "file_meta", {})
        if not source.get("SOPClassUID") and "MediaStorageSOPClassUID" in meta:
            source.SOPClassUID = meta.MediaStorageSOPClassUID
        if not source.get("SOPInstanceUID") and "MediaStorageSOPInstanceUID" in meta:
            source.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    algorithm = hd.AlgorithmIdentificationSequence(
        name="lesionlocator", version=__version__, family=codes.cid7162.ArtificialIntelligence
    )
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=f"Lesion {lesion_id}",
            segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
            segmented_property_type=codes.SCT.Neoplasm,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
            tracking_uid=tracking_uid(patient, lesion_id),
            tracking_id=f"lesion-{lesion_id}",
        )
        for number, lesion_id in enumerate(ids, start=1)
    ]
    seed = ["lesionlocator-seg", patient, session, sources[0].SeriesInstanceUID]
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=segments,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=generate_uid(entropy_srcs=[*seed, "series"]),
        series_number=9001,
        sop_instance_uid=generate_uid(entropy_srcs=[*seed, "instance"]),
        instance_number=1,
        manufacturer="lesionlocator",
        manufacturer_model_name="lesionlocator",
        software_versions=__version__,
        device_serial_number="0",
        series_description=f"lesionlocator lesions ses-{session}",
    )
    for keyword in ("ContentDate", "SeriesDate", "InstanceCreationDate"):
        setattr(seg, keyword, getattr(sources[0], "StudyDate", "") or getattr(sources[0], "ContentDate", ""))
    for keyword in ("ContentTime", "SeriesTime", "InstanceCreationTime"):
        setattr(seg, keyword, getattr(sources[0], "StudyTime", "") or "000000")
    stamp = (getattr(sources[0], "StudyDate", "") or "19700101") + (getattr(sources[0], "StudyTime", "") or "000000")
    for item in getattr(seg, "ContributingEquipmentSequence", []):
        if "ContributionDateTime" in item:
            item.ContributionDateTime = stamp
    dimension_uid = generate_uid(entropy_srcs=[*seed, "dimension-organization"])
    for element in seg.iterall():
        if element.keyword == "DimensionOrganizationUID":
            element.value = dimension_uid
    with atomic_path(output) as tmp:
        seg.save_as(tmp, enforce_file_format=True)
    log.info("%s ses-%s: DICOM-SEG with %d segment(s) -> %s", patient, session, len(ids), output)
    return Path(output)
