"""QC figures: one PNG strip per tracked lesion."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from lesionlocator.core.io import Geometry, write_image
from lesionlocator.track.followup import SessionScan, baseline_rows, lesion_rows, write_labels
from lesionlocator.track.qc import write_qc_figures
from tests.helpers import OBLIQUE_DIRECTION


@pytest.mark.slow  # matplotlib import and layout: seconds on a loaded machine
def test_one_png_per_lesion_with_a_panel_per_session(tmp_path):
    array = np.random.default_rng(0).normal(0, 5, (12, 30, 28)).astype(np.float32)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((1.5, 1.2, 3.0))
    image.SetDirection(OBLIQUE_DIRECTION)
    geometry = Geometry.of(image)
    labels = np.zeros(array.shape, np.uint32)
    labels[5:8, 10:15, 10:14] = 4
    scans = [SessionScan(s, i, write_image(image, tmp_path / f"{s}.nii.gz")) for i, s in enumerate(["01", "02"])]
    paths = [write_labels(labels, image, tmp_path / "l1.nii.gz"), write_labels(np.zeros_like(labels), image, tmp_path / "l2.nii.gz")]
    rows = baseline_rows("P", scans[0], labels, geometry, [4], {4: 1.0})
    rows += lesion_rows(np.zeros_like(labels), geometry, [4], {4: "vanished"}, {}, {}, {}, "P", scans[1])
    written = write_qc_figures([s.image for s in scans], paths, rows, ["01", "02"], tmp_path / "qc")
    assert [p.name for p in written] == ["lesion-4.png"]
    assert written[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list((tmp_path / "qc").glob(".*part*"))
