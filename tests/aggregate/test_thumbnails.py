"""Lesion thumbnails: the axial slice through the centroid, the mask outlined, in radiological view."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from lesionlocator.aggregate.thumbnails import THUMBNAIL_PX, patient_thumbnails, render_thumbnail
from lesionlocator.core.io import Geometry, read_image
from tests.lesion_builders import write_labels, write_scan

REPO = Path(__file__).resolve().parents[2]
#: A direction with the x and y axes flipped, as many CT series are stored (array column 0 is the patient's left).
FLIPPED = Geometry(size=(60, 60, 10), spacing=(1.5, 1.5, 4.0), origin=(40.0, 40.0, 0.0), direction=(-1, 0, 0, 0, -1, 0, 0, 0, 1))


def _pixels(thumbnail) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(thumbnail.webp_base64))).convert("RGB")).astype(int)


def _scene():
    """A lesion (label 5, bright) at the grid's centre and a bright marker on the patient's left (+x) of it."""
    image = np.zeros(FLIPPED.shape_zyx)
    labels = np.zeros(FLIPPED.shape_zyx, np.uint32)
    z, y, x = np.mgrid[: 10, : 60, : 60]
    lesion = ((y - 30) ** 2 + (x - 30) ** 2 <= 36) & (abs(z - 5) <= 1)
    image[lesion], labels[lesion] = 100.0, 5
    left = FLIPPED.world_to_index(FLIPPED.index_to_world(np.array([5, 30, 30])) + [20.0, 0, 0]).round().astype(int)
    image[left[0], left[1] - 2 : left[1] + 3, left[2] - 2 : left[2] + 3] = 300.0
    return image, labels


def test_outline_centre_and_radiological_view():
    image, labels = _scene()
    centre = FLIPPED.index_to_world(np.array([5, 30, 30]))
    thumbnail = render_thumbnail(image, FLIPPED, centre, [labels], 5)
    pixels = _pixels(thumbnail)
    assert thumbnail.outlined and pixels.shape == (THUMBNAIL_PX, THUMBNAIL_PX, 3)
    red = (pixels[..., 0] > 180) & (pixels[..., 1] < 110) & (pixels[..., 2] < 110)
    rows, cols = np.nonzero(red)
    assert red.sum() > 10 and abs(rows.mean() - THUMBNAIL_PX / 2) < 3 and abs(cols.mean() - THUMBNAIL_PX / 2) < 3
    # the marker lies 20 mm to the patient's left (+x): on the viewer's right
    rr, cc = np.mgrid[:THUMBNAIL_PX, :THUMBNAIL_PX]
    away = np.hypot(rr - THUMBNAIL_PX / 2, cc - THUMBNAIL_PX / 2) > 16  # beyond the lesion (9 mm, about 13 px)
    marker = np.nonzero((pixels.sum(axis=-1) > 600) & away)
    assert len(marker[1]) and marker[1].min() > THUMBNAIL_PX / 2 + 10, marker


def test_no_outline_where_the_lesion_has_no_voxels_and_a_note_outside_the_image():
    image, labels = _scene()
    centre = FLIPPED.index_to_world(np.array([5, 30, 30]))
    assert not render_thumbnail(image, FLIPPED, centre, [labels], None).outlined
    outside = render_thumbnail(image, FLIPPED, centre + [0, 0, 500.0], [labels], 5)
    assert outside.webp_base64 is None and outside.note == "outside the field of view"


def test_patient_thumbnails_slice_through_the_last_known_centroid(tmp_path):
    image, labels = _scene()
    scan = write_scan(image, FLIPPED, tmp_path / "scan.nii.gz")
    label_map = write_labels(labels, FLIPPED, tmp_path / "labels.nii.gz")
    centre = FLIPPED.index_to_world(np.array([5, 30, 30]))
    rows = pd.DataFrame({"lesion_id": [5, 5], "session": ["01", "02"], "session_index": [0, 1], "voxel_count": [100, 0],
                         "centroid_x_mm": [centre[0], np.nan], "centroid_y_mm": [centre[1], np.nan], "centroid_z_mm": [centre[2], np.nan]})  # fmt: skip
    thumbs = patient_thumbnails(rows, {"01": scan, "02": scan}, {"01": label_map, "02": tmp_path / "missing.nii.gz"})
    assert thumbs[(5, "01")].outlined and thumbs[(5, "02")].webp_base64 and not thumbs[(5, "02")].outlined
    gone = patient_thumbnails(rows, {"01": tmp_path / "missing.nii.gz"}, {})
    assert gone[(5, "01")].note == "scan not available" and gone[(5, "02")].note == "scan not available"


def test_a_dicom_series_scan():
    folder = REPO / "data" / "real" / "example_ct_dicom"
    geometry = Geometry.of(read_image(folder))
    centre = geometry.index_to_world(np.array(geometry.shape_zyx) / 2)
    rows = pd.DataFrame({"lesion_id": [1], "session": ["01"], "session_index": [0], "voxel_count": [1],
                         "centroid_x_mm": [centre[0]], "centroid_y_mm": [centre[1]], "centroid_z_mm": [centre[2]]})  # fmt: skip
    thumbnail = patient_thumbnails(rows, {"01": folder}, {})[(1, "01")]
    assert thumbnail.webp_base64 and _pixels(thumbnail).std() > 10
