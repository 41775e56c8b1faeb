"""Tiny nnU-Net raw datasets built on the fly: blobs in noise, anisotropic spacing, non-identity direction."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

SPACING = (1.5, 1.0, 2.0)  # x, y, z (mm)
DIRECTION = (0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0)


def _image(array: np.ndarray, spacing=SPACING) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetDirection(DIRECTION)
    image.SetOrigin((-10.0, 5.0, 20.0))
    return image


def make_raw_dataset(root: Path, n_cases: int = 3, shape=(24, 40, 36), seed: int = 0,
                     name: str = "Dataset990_TinyLesions", spacing=SPACING) -> Path:
    """An nnU-Net raw dataset with 2-3 bright ellipsoid lesions per case (labels 0/1)."""
    rng = np.random.default_rng(seed)
    folder = root / name
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "labelsTr").mkdir()
    zz, yy, xx = np.indices(shape)
    for case in range(n_cases):
        image = rng.normal(0, 20, shape).astype(np.float32) + 40
        label = np.zeros(shape, np.uint8)
        for _ in range(int(rng.integers(2, 4))):
            c = [rng.uniform(5, s - 5) for s in shape]
            r = rng.uniform(2.5, 4.5, 3)
            inside = ((zz - c[0]) / r[0]) ** 2 + ((yy - c[1]) / r[1]) ** 2 + ((xx - c[2]) / r[2]) ** 2 <= 1
            label[inside] = 1
            image[inside] += 120
        sitk.WriteImage(_image(image, spacing), str(folder / "imagesTr" / f"case{case:03d}_0000.nii.gz"))
        sitk.WriteImage(_image(label, spacing), str(folder / "labelsTr" / f"case{case:03d}.nii.gz"))
    meta = {"channel_names": {"0": "CT"}, "labels": {"background": 0, "lesion": 1},
            "numTraining": n_cases, "file_ending": ".nii.gz"}
    (folder / "dataset.json").write_text(json.dumps(meta))
    return folder


def segment_first_case(model: Path, dataset: Path, lesion_id: int = 3):
    """Segment case000 of ``dataset`` with ``model`` on the CPU from one box around all its lesion
    voxels (voxel frame z, y, x); returns (result, true labels)."""
    from lesionlocator.core.config import SegmentConfig
    from lesionlocator.segment.api import Prompt
    from lesionlocator.segment.nnunet import NnUNetSegmenter

    image = sitk.ReadImage(str(dataset / "imagesTr" / "case000_0000.nii.gz"))
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(dataset / "labelsTr" / "case000.nii.gz")))
    where = np.argwhere(labels)
    box = Prompt(lesion_id, "box", box=(tuple(map(float, where.min(0))), tuple(map(float, where.max(0)))))
    return NnUNetSegmenter(SegmentConfig(checkpoint=model, device="cpu", mirroring=False)).segment(image, [box]), labels


@pytest.fixture
def raw_dataset(tmp_path: Path) -> Path:
    return make_raw_dataset(tmp_path / "raw")


def two_lesions(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    seg = np.zeros((30, 40, 36), np.uint8)
    zz, yy, xx = np.indices(seg.shape)
    for centre, radii in (((8, 10, 10), (3, 5, 4)), ((20, 28, 24), (4, 3, 6))):
        jitter = rng.uniform(-1, 1, 3)
        inside = sum(((g - c - j) / r) ** 2 for g, c, j, r in zip((zz, yy, xx), centre, jitter, radii)) <= 1
        seg[inside] = 1
    return seg


@pytest.fixture(name="two_lesions")
def two_lesions_fixture():
    """Factory of a (30, 40, 36) uint8 patch with two separate ellipsoid lesions (label 1)."""
    return two_lesions
