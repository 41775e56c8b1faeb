"""Longitudinal events of the generator (p_split, p_merge, p_shrink, p_fov_cut, p_new): each one is
seen in the ground-truth masks and table of a generated cohort, as the planning step drew it."""

from __future__ import annotations

import cc3d
import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from scipy import ndimage

from lesionlocator.core.config import SyntheticConfig, validate_config
from lesionlocator.core.errors import ConfigError
from lesionlocator.core.io import Geometry
from synthetic import generate_cohort, plan_cohort
from synthetic.cohort import SPLIT_MIN_FRACTION
from synthetic.lesions import SplitShape
from tests.helpers import EMBEDDED_REAL

MR = f"mr:{EMBEDDED_REAL / 'example_mr_sm.nii.gz'}"  # 117 x 91 x 20 voxels of 3 mm: fast
CT = f"ct:{EMBEDDED_REAL / 'example_ct_sm.nii.gz'}"  # 122 x 101 x 30 voxels of 3 mm


def event_config(**overrides) -> SyntheticConfig:
    """Small real sources, no event unless asked, no random FOV crop, no new lesion."""
    values = dict(
        seed=5, n_patients=2, n_sessions=3, sources=[MR, CT], organ_labels={}, lesions_per_patient=(1, 2),
        diameter_mm=(18.0, 26.0), p_new=0.0, p_vanish=0.0, fov_z_crop=0.0,
    )
    values.update(overrides)
    return SyntheticConfig(**values)


def _mask(root, patient, session) -> tuple[np.ndarray, Geometry]:
    image = sitk.ReadImage(str(root / "derivatives" / "groundtruth" / f"sub-{patient}" / f"ses-{session}" / "lesions.nii.gz"))
    return sitk.GetArrayFromImage(image), Geometry.of(image)


def _parts(mask: np.ndarray) -> list[int]:
    """Voxel counts of the connected parts (26-connectivity) of a boolean mask, largest first."""
    parts = cc3d.connected_components(mask, connectivity=26)
    return sorted(np.bincount(parts.ravel())[1:].tolist(), reverse=True)


def _touch(labels: np.ndarray, first: int, second: int) -> bool:
    grown = ndimage.binary_dilation(labels == first, structure=np.ones((3, 3, 3), dtype=bool))
    return bool((labels[grown] == second).any())


def _rows(truth: pd.DataFrame, patient: str, lesion_id: int) -> pd.DataFrame:
    return truth[(truth.patient == patient) & (truth.lesion_id == lesion_id)].sort_values("session_index")


@pytest.fixture(scope="module")
def split_cohort(tmp_path_factory):
    config = event_config(p_split=1.0)
    out = tmp_path_factory.mktemp("events") / "split"
    return out, generate_cohort(config, out), plan_cohort(config)[0]


@pytest.fixture(scope="module")
def merge_cohort(tmp_path_factory):
    config = event_config(p_merge=1.0, lesions_per_patient=(1, 1), seed=11)
    out = tmp_path_factory.mktemp("events") / "merge"
    return out, generate_cohort(config, out), plan_cohort(config)[0]


def test_a_split_lesion_is_one_part_then_two_with_one_id(split_cohort):
    root, truth, plans = split_cohort
    splits = [(plan.patient, lesion) for plan in plans for lesion in plan.lesions if lesion.event == "split"]
    assert len(splits) == sum(len(plan.lesions) for plan in plans) >= 2  # p_split=1: every baseline lesion
    for patient, lesion in splits:
        assert isinstance(lesion.shape, SplitShape) and 1 <= lesion.event_session < 3
        for row in _rows(truth, patient, lesion.lesion_id).itertuples():
            labels, _ = _mask(root, patient, row.session)
            parts = _parts(labels == lesion.lesion_id)
            assert row.n_voxels == sum(parts) > 0
            if row.session_index < lesion.event_session:
                assert row.status == "present" and len(parts) == 1, (patient, lesion.lesion_id, row.session, parts)
            else:  # two separated parts of one id, both more than a speck
                assert row.status == "split", (patient, lesion.lesion_id, row.session, parts)
                assert len(parts) == 2 and parts[1] >= SPLIT_MIN_FRACTION * sum(parts), parts


def test_merging_lesions_are_apart_then_touch(merge_cohort):
    root, truth, plans = merge_cohort
    pairs = [[lesion for lesion in plan.lesions if lesion.event == "merge"] for plan in plans]
    assert all(len(pair) == 2 for pair in pairs)  # p_merge=1: a pair per patient
    for plan, (first, second) in zip(plans, pairs):
        assert first.event_session == second.event_session
        assert np.linalg.norm(first.centre - second.centre) > 0
        for t in range(3):
            labels, _ = _mask(root, plan.patient, f"{t + 1:02d}")
            rows = truth[(truth.patient == plan.patient) & (truth.session_index == t)].set_index("lesion_id")
            assert rows.loc[first.lesion_id, "n_voxels"] > 0 and rows.loc[second.lesion_id, "n_voxels"] > 0
            touching = _touch(labels, first.lesion_id, second.lesion_id)
            assert touching == _touch(labels, second.lesion_id, first.lesion_id)
            expected = "merged" if t >= first.event_session else "present"
            assert touching == (expected == "merged"), (plan.patient, t)
            assert rows.loc[first.lesion_id, "status"] == rows.loc[second.lesion_id, "status"] == expected
            others = rows.drop([first.lesion_id, second.lesion_id])
            assert set(others.status) <= {"present"}  # the rest stay apart


def test_merged_lesions_grow_and_the_split_ones_do_not_touch_anyone(merge_cohort, split_cohort):
    _, truth, plans = merge_cohort
    for plan in plans:
        for lesion in (lesion for lesion in plan.lesions if lesion.event == "merge"):
            volumes = _rows(truth, plan.patient, lesion.lesion_id).volume_ml.to_numpy()
            assert volumes[-1] > volumes[0]
    _, truth, _ = split_cohort
    assert "merged" not in set(truth.status)


def test_a_shrinking_lesion_ends_at_30_to_50_percent_and_stays_visible(tmp_path):
    config = event_config(p_shrink=1.0, n_sessions=4, lesions_per_patient=(2, 2), diameter_mm=(22.0, 30.0))
    truth = generate_cohort(config, tmp_path / "shrink")
    plans, _ = plan_cohort(config)
    shrinking = [(plan.patient, lesion) for plan in plans for lesion in plan.lesions if lesion.event == "shrink"]
    assert len(shrinking) == 4
    for patient, lesion in shrinking:
        planned = [float(np.prod(scale)) for scale in lesion.scales]
        assert 0.3 <= planned[-1] <= 0.5 and planned == sorted(planned, reverse=True)
        rows = _rows(truth, patient, lesion.lesion_id)
        assert list(rows.status) == ["present"] * 4
        ratio = rows.volume_ml.iloc[-1] / rows.volume_ml.iloc[0]
        assert 0.25 <= ratio <= 0.6, (patient, lesion.lesion_id, ratio)
        assert rows.volume_ml.iloc[1] > rows.volume_ml.iloc[-1]


def test_a_fov_cut_leaves_a_lesion_out_and_changes_nothing_else(tmp_path):
    # a phantom of 3.1 mm slices: a cut through a lesion would leave some of its voxels in view
    config = event_config(sources=["phantom:88x72x96"], p_fov_cut=1.0, lesions_per_patient=(3, 3), diameter_mm=(18.0, 26.0))
    truth = generate_cohort(config, tmp_path / "fov")
    plans, _ = plan_cohort(config)
    uncut, _ = plan_cohort(config.model_copy(update={"p_fov_cut": 0.0}))
    cuts = [(plan, session) for plan in plans for session in plan.sessions if session.left_out]
    assert len(cuts) >= 2
    for plan, session in cuts:
        row = truth[(truth.patient == plan.patient) & (truth.session == session.label) & (truth.lesion_id == session.left_out)]
        assert row.status.item() == "out_of_fov" and row.n_voxels.item() == 0
        baseline = truth[(truth.patient == plan.patient) & (truth.session_index == 0) & (truth.lesion_id == session.left_out)]
        assert baseline.n_voxels.item() > 0
        full = next(p for p in uncut if p.patient == plan.patient).sessions[session.index].geometry
        cut = session.geometry
        assert cut.size[:2] == full.size[:2] and cut.size[2] < full.size[2] and cut.spacing == full.spacing
        start = full.world_to_index(np.asarray(cut.origin))  # the cut grid is whole slices of the full one
        assert np.allclose(start[1:], 0, atol=1e-6) and abs(start[0] - round(start[0])) < 1e-6
        assert 0 <= round(start[0]) and round(start[0]) + cut.size[2] <= full.size[2]
    for plan, other in zip(plans, uncut):  # the cuts are drawn last: nothing else changes
        assert [les.centre.tolist() for les in plan.lesions] == [les.centre.tolist() for les in other.lesions]
        for session, same in zip(plan.sessions, other.sessions):
            if not session.left_out:
                assert session.geometry == same.geometry


def test_new_lesions_have_their_own_ids_and_are_new_once_at_first_sighting(tmp_path):
    # a thin scan cropped by up to 30 % at each end: seed 1 has a new lesion that first lies out of view
    config = event_config(p_new=1.0, n_sessions=4, fov_z_crop=0.3, seed=1, sources=[MR], lesions_per_patient=(1, 1),
                          new_lesion_diameter_mm=(10.0, 14.0))
    truth = generate_cohort(config, tmp_path / "new")
    plans, _ = plan_cohort(config)
    late_sightings = 0
    for plan in plans:
        baseline = {lesion.lesion_id for lesion in plan.lesions if lesion.first_session == 0}
        later = [lesion for lesion in plan.lesions if lesion.first_session > 0]
        assert len(later) == 3 and not baseline & {lesion.lesion_id for lesion in later}
        for lesion in later:
            rows = _rows(truth, plan.patient, lesion.lesion_id)
            assert rows.session_index.iloc[0] == lesion.first_session
            seen = list(rows.n_voxels > 0)
            statuses = list(rows.status)
            assert statuses.count("new") == (1 if any(seen) else 0)
            if any(seen):
                first = seen.index(True)
                assert statuses[first] == "new" and set(statuses[:first]) <= {"out_of_fov"}
                assert "new" not in statuses[first + 1:]
                late_sightings += first > 0
    assert late_sightings >= 1  # new where first seen, not where planned


def test_events_are_byte_identical_for_a_seed(tmp_path):
    config = event_config(n_patients=1, p_split=0.5, p_shrink=0.5, p_merge=1.0, p_fov_cut=1.0, p_new=1.0)
    first, second = tmp_path / "a", tmp_path / "b"
    generate_cohort(config, first)
    generate_cohort(config, second)
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert files and files == sorted(p.relative_to(second) for p in second.rglob("*") if p.is_file())
    assert all((first / name).read_bytes() == (second / name).read_bytes() for name in files)


def test_split_shape_is_joined_by_its_bridge_and_apart_without_it():
    shape = SplitShape.random(20.0, [1.0, 0.0], 7.0, 3.5, np.random.default_rng(0))
    assert shape.components(1.0)[0] == 1
    assert shape.components(0.0)[0] == 2 and shape.separation() >= 7.0
    u = np.array([[0.0, 0.0, 0.0]])  # the middle is inside with the bridge, outside without
    assert shape.field(u, 1.0)[0] < 0 < shape.field(u, 0.0)[0]


@pytest.mark.parametrize(
    "settings, key",
    [
        ({"p_split": 0.7, "p_shrink": 0.5}, "p_split + p_shrink"),
        ({"shrink_volume_fraction": [0.6, 0.4]}, "shrink_volume_fraction"),
        ({"shrink_volume_fraction": [0.0, 0.4]}, "shrink_volume_fraction"),
        ({"p_merge": 1.5}, "synthetic.p_merge"),
        ({"p_fov_cut": -0.1}, "synthetic.p_fov_cut"),
    ],
)
def test_impossible_event_settings_name_the_field(settings, key):
    with pytest.raises(ConfigError) as err:
        validate_config({"synthetic": settings})
    assert key in str(err.value)


def test_fraction_in_fov_is_the_share_of_the_lesion_the_grid_holds():
    """A lesion cut by a follow-up's z range has the share of its voxels that the grid holds; the same
    session rendered on its grid grown by whole slices at both ends holds all of it."""
    import dataclasses

    from synthetic.cohort import render_session

    config = event_config(sources=[MR], n_patients=3, fov_z_crop=0.3, lesions_per_patient=(3, 3))
    plans, sources = plan_cohort(config)
    checked = 0
    for plan in plans:
        source = sources[plan.spec]
        for t in range(1, len(plan.sessions)):
            _, labels, _, in_fov = render_session(plan, source, t, config)
            cut = {i: f for i, f in in_fov.items() if 0 < f < 1}
            if not cut:
                continue
            g = plan.sessions[t].geometry
            grow = 20  # slices at each end
            origin = np.asarray(g.origin) - grow * g.spacing[2] * np.asarray(g.direction).reshape(3, 3)[:, 2]
            grown = Geometry((g.size[0], g.size[1], g.size[2] + 2 * grow), g.spacing, tuple(origin.tolist()), g.direction)
            sessions = list(plan.sessions)
            sessions[t] = dataclasses.replace(sessions[t], geometry=grown)
            _, whole, _, whole_fov = render_session(dataclasses.replace(plan, sessions=sessions), source, t, config)
            for lesion_id, fraction in cut.items():
                assert whole_fov[lesion_id] == 1.0
                expected = np.count_nonzero(labels == lesion_id) / np.count_nonzero(whole == lesion_id)
                assert fraction == pytest.approx(expected, abs=0.02), (plan.patient, t, lesion_id)
                checked += 1
    assert checked >= 1
