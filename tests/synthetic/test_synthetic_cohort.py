"""The generated cohort: lesion identity over time, statuses, placement, prompts, layout."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from scipy import ndimage

from lesionlocator.core.io import Geometry, geometry_difference
from lesionlocator.core.prompts import read_prompts
from lesionlocator.ingest.cohort import ingest_cohort
from synthetic import generate_cohort
from synthetic.sources import body_mask
from tests.synthetic.conftest import phantom_config

COHORTS = ["phantom_cohort", "demo_cohort"]


def _read(root, patient, session):
    image = sitk.ReadImage(str(root / f"sub-{patient}" / f"ses-{session}" / "image.nii.gz"))
    labels = sitk.ReadImage(str(root / "derivatives" / "groundtruth" / f"sub-{patient}" / f"ses-{session}" / "lesions.nii.gz"))
    return image, labels


def _sessions(truth: pd.DataFrame):
    return truth[["patient", "session", "session_index"]].drop_duplicates().itertuples(index=False)


@pytest.mark.parametrize("cohort", COHORTS)
def test_masks_match_the_table_in_every_session(cohort, request):
    root, truth = request.getfixturevalue(cohort)
    for patient, session, _ in _sessions(truth):
        image, labels = _read(root, patient, session)
        assert labels.GetPixelID() == sitk.sitkUInt32
        assert geometry_difference(Geometry.of(labels), Geometry.of(image)) is None
        array = sitk.GetArrayFromImage(labels)
        rows = truth[(truth.patient == patient) & (truth.session == session)]
        ids_in_mask = set(np.unique(array).tolist()) - {0}
        visible = set(rows[rows.status.isin(["present", "new", "split", "merged"])].lesion_id)
        assert ids_in_mask == visible, (patient, session)
        for row in rows.itertuples():
            assert (array == row.lesion_id).sum() == row.n_voxels
            if row.status in ("vanished", "out_of_fov"):
                assert row.n_voxels == 0 and row.volume_ml == 0


@pytest.mark.parametrize("cohort", COHORTS)
def test_lesion_ids_persist_and_statuses_follow_the_timeline(cohort, request):
    root, truth = request.getfixturevalue(cohort)
    for (patient, lesion_id), rows in truth.groupby(["patient", "lesion_id"]):
        rows = rows.sort_values("session_index")
        statuses = list(rows.status)
        first = rows.session_index.iloc[0]
        # one row per session from its first appearance on
        assert list(rows.session_index) == list(range(first, first + len(rows)))
        if first == 0:
            assert statuses[0] == "present"
            assert "new" not in statuses
        else:  # new at its first sighting (out of view before it, if at all), once
            assert statuses.count("new") <= 1
            sighting = list(rows.n_voxels > 0).index(True) if (rows.n_voxels > 0).any() else len(rows)
            assert set(statuses[:sighting]) <= {"out_of_fov", "vanished"}, statuses
            if sighting < len(rows):
                assert statuses[sighting] == "new", statuses
        if "vanished" in statuses:  # a complete response does not come back
            after = statuses[statuses.index("vanished"):]
            assert set(after) <= {"vanished", "out_of_fov"}, statuses
        # the same lesion stays near the same place (repositioning is a few mm and degrees)
        seen = rows[rows.n_voxels > 0][["centroid_x", "centroid_y", "centroid_z"]].to_numpy()
        if len(seen) > 1:
            assert np.linalg.norm(seen - seen[0], axis=1).max() < 45.0, (patient, lesion_id)


def test_new_lesions_appear_only_after_baseline(phantom_cohort):
    root, truth = phantom_cohort
    new = truth[truth.status == "new"]
    assert len(new) > 0, "p_new=1 must create new lesions"
    assert (new.session_index > 0).all()
    for row in new.itertuples():
        prompts = read_prompts(root / f"sub-{row.patient}" / "ses-01" / "prompts.json")
        assert row.lesion_id not in {lesion.id for lesion in prompts.lesions}
        for earlier in truth[(truth.patient == row.patient) & (truth.session_index < row.session_index)].session.unique():
            _, labels = _read(root, row.patient, earlier)
            assert not (sitk.GetArrayFromImage(labels) == row.lesion_id).any()


def test_vanishing_lesions_exist_in_phantom_cohort(phantom_cohort):
    _, truth = phantom_cohort
    assert (truth.status == "vanished").any(), "p_vanish=0.5 over several lesions should give a complete response"


@pytest.mark.parametrize("cohort", COHORTS)
def test_lesions_inside_the_body_and_apart(cohort, request):
    root, truth = request.getfixturevalue(cohort)
    for patient, session, _ in _sessions(truth):
        image, labels = _read(root, patient, session)
        array = sitk.GetArrayFromImage(labels)
        modality = truth[truth.patient == patient].modality.iloc[0]
        body = ndimage.binary_dilation(body_mask(sitk.GetArrayFromImage(image).astype(np.float32), modality), iterations=1)
        assert not (array[~body] > 0).any(), (patient, session)
        for lesion_id in set(np.unique(array).tolist()) - {0}:
            grown = ndimage.binary_dilation(array == lesion_id, iterations=1)
            others = array[grown]
            assert set(np.unique(others).tolist()) <= {0, lesion_id}, f"{patient} ses-{session}: lesion {lesion_id} touches another"


@pytest.mark.parametrize("cohort", COHORTS)
def test_baseline_prompts_hit_their_lesion(cohort, request):
    root, truth = request.getfixturevalue(cohort)
    for patient in truth.patient.unique():
        image, labels = _read(root, patient, "01")
        geometry = Geometry.of(labels)
        array = sitk.GetArrayFromImage(labels)
        prompts = read_prompts(root / f"sub-{patient}" / "ses-01" / "prompts.json")
        assert prompts.frame == "world"
        baseline = truth[(truth.patient == patient) & (truth.session_index == 0)]
        assert sorted(lesion.id for lesion in prompts.lesions) == sorted(baseline.lesion_id)
        for lesion in prompts.lesions:
            index = np.round(geometry.world_to_index(lesion.point)).astype(int)
            assert array[tuple(index)] == lesion.id
            voxels = np.argwhere(array == lesion.id)
            world = geometry.index_to_world(voxels.astype(float))
            assert (world >= np.asarray(lesion.box.min) - 1e-3).all() and (world <= np.asarray(lesion.box.max) + 1e-3).all()


@pytest.mark.parametrize("cohort", COHORTS)
def test_cohort_passes_ingest(cohort, request, tmp_path):
    root, truth = request.getfixturevalue(cohort)
    manifest = ingest_cohort(tmp_path / "manifest.parquet", root=root)
    assert len(manifest) == truth[["patient", "session"]].drop_duplicates().shape[0]
    baseline = manifest[manifest.is_baseline]
    counts = truth[truth.session_index == 0].groupby("patient").size()
    assert dict(zip(baseline.patient, baseline.n_prompts)) == counts.to_dict()
    assert manifest.groundtruth.notna().all()
    # sessions are ordered by the acq_time of sessions.tsv, spaced by the interval
    for patient, rows in manifest.groupby("patient"):
        dates = pd.to_datetime(rows.sort_values("session_index").acq_time)
        assert (dates.diff().dropna() == pd.Timedelta(days=90)).all()


@pytest.mark.parametrize("cohort", COHORTS)
def test_follow_ups_are_new_acquisitions(cohort, request):
    root, truth = request.getfixturevalue(cohort)
    for patient in truth.patient.unique():
        baseline, _ = _read(root, patient, "01")
        follow_up, _ = _read(root, patient, "02")
        assert geometry_difference(Geometry.of(baseline), Geometry.of(follow_up)) is not None


def test_demo_cohort_is_a_usable_demo(demo_cohort):
    _, truth = demo_cohort
    assert truth.patient.nunique() == 3 and truth.session.nunique() == 3
    assert set(truth.modality) == {"CT", "MR"}
    baseline = truth[truth.session_index == 0]
    per_patient = baseline.groupby("patient").size()
    assert (per_patient >= 2).all()
    assert (baseline.diameter_eq_mm >= 10).mean() >= 0.75
    assert set(truth.status) <= {"present", "new", "vanished", "out_of_fov"}
    assert truth.volume_ml[truth.status == "present"].gt(0).all()


def test_rendering_workers_write_the_same_files(phantom_cohort, tmp_path):
    """Patients rendered in forked workers (``generate_cohort(..., workers=2)``) give byte-identical files."""
    folder, _ = phantom_cohort
    generate_cohort(phantom_config(), tmp_path / "parallel", workers=2)

    def digests(root: Path) -> dict:
        return {p.relative_to(root): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}

    assert digests(tmp_path / "parallel") == digests(folder)
