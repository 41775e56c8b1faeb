"""Determinism, the ground-truth table schema, the nnU-Net export and the renderer."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import SimpleITK as sitk

from synthetic import GROUNDTRUTH_SCHEMA, export_nnunet, generate_cohort
from synthetic.render import render_lesion_strip
from tests.synthetic.conftest import phantom_config


def _files(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_byte_identical_files(phantom_cohort, tmp_path):
    root, _ = phantom_cohort
    again = tmp_path / "again"
    generate_cohort(phantom_config(), again)
    first, second = _files(root), _files(again)
    assert first.keys() == second.keys()
    different = [str(name) for name in first if first[name] != second[name]]
    assert not different


def test_other_seed_gives_other_cohort(tmp_path, phantom_cohort):
    root, _ = phantom_cohort
    other = tmp_path / "other"
    generate_cohort(phantom_config(seed=8), other)
    name = "sub-P001/ses-01/image.nii.gz"
    assert (root / name).read_bytes() != (other / name).read_bytes()


def test_rerun_replaces_an_earlier_cohort(tmp_path):
    out = tmp_path / "cohort"
    generate_cohort(phantom_config(n_patients=1, n_sessions=1), out)
    generate_cohort(phantom_config(n_patients=1, n_sessions=2), out)
    assert (out / "sub-P001" / "ses-02" / "image.nii.gz").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no partial folder left


def test_groundtruth_table_has_the_explicit_schema(phantom_cohort):
    root, truth = phantom_cohort
    table = pq.read_table(root / "derivatives" / "groundtruth" / "groundtruth.parquet")
    assert table.schema.equals(GROUNDTRUTH_SCHEMA)
    assert table.num_rows == len(truth)
    assert set(truth.patient) == {"P001", "P002"}
    assert set(truth.session) == {"01", "02", "03"}
    seen = truth[truth.n_voxels > 0]
    assert np.allclose(seen.diameter_eq_mm, (6 * seen.volume_ml * 1000 / np.pi) ** (1 / 3))


@pytest.mark.parametrize("layout", ["per-modality", "combined"])
def test_nnunet_export_layouts(demo_cohort, tmp_path, layout):
    root, truth = demo_cohort
    folders = export_nnunet(root, tmp_path, dataset_id=990, layout=layout)
    expected = {"per-modality": ["Dataset990_LesionLocatorSynthCT", "Dataset991_LesionLocatorSynthMR"],
                "combined": ["Dataset990_LesionLocatorSynth"]}[layout]
    assert [f.name for f in folders] == expected
    n_cases = 0
    for folder in folders:
        meta = json.loads((folder / "dataset.json").read_text())
        channel = meta["channel_names"]["0"]
        assert channel == {"Dataset990_LesionLocatorSynthCT": "CT", "Dataset991_LesionLocatorSynthMR": "MR"}.get(folder.name, "zscore")
        assert meta["labels"] == {"background": 0, "lesion": 1}
        labels = sorted((folder / "labelsTr").glob("*.nii.gz"))
        assert meta["numTraining"] == len(labels) == len(list((folder / "imagesTr").glob("*_0000.nii.gz")))
        values = np.unique(sitk.GetArrayFromImage(sitk.ReadImage(str(labels[0]))))
        assert set(values.tolist()) <= {0, 1}
        n_cases += len(labels)
    assert n_cases == truth[["patient", "session"]].drop_duplicates().shape[0]


@pytest.mark.slow
def test_nnunet_export_passes_nnunet_integrity_check(demo_cohort, tmp_path):
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    root, _ = demo_cohort
    (folder,) = export_nnunet(root, tmp_path, dataset_id=992, layout="combined")
    verify_dataset_integrity(str(folder), num_processes=1)


def test_render_strip_writes_a_png(phantom_cohort, tmp_path):
    root, _ = phantom_cohort
    png = render_lesion_strip(root, tmp_path / "strip.png", patient="P001")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
