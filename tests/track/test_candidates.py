"""The new-lesion candidate detector on hand-made image pairs."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from lesionlocator.core.config import TrackConfig
from lesionlocator.core.io import Geometry
from lesionlocator.core.regions import dice
from lesionlocator.track.candidates import find_candidates
from tests.helpers import OBLIQUE_DIRECTION

SHAPE = (40, 64, 64)  # z, y, x
SPACING = (2.0, 2.0, 3.0)  # x, y, z (mm)


def _body(seed: int, blob_centre=None, blob_radius_mm=7.0, organ_shift_mm=0.0, blob_value=-10.0) -> sitk.Image:
    """A CT-like body (soft tissue 40 HU in air) with an organ (70 HU) and optionally a new dark blob."""
    z, y, x = np.indices(SHAPE).astype(float)
    zm, ym, xm = z * SPACING[2], y * SPACING[1], x * SPACING[0]
    array = np.full(SHAPE, -1000.0)
    body = ((ym - 64) / 56) ** 2 + ((xm - 64) / 58) ** 2 <= 1
    array[body] = 40.0
    organ = ((ym - 50) / 20) ** 2 + ((xm - 40 - organ_shift_mm) / 18) ** 2 + ((zm - 60) / 30) ** 2 <= 1
    array[organ] = 70.0
    if blob_centre is not None:
        distance = np.sqrt(sum((a - c) ** 2 for a, c in zip((zm, ym, xm), blob_centre)))
        array[distance <= blob_radius_mm] = blob_value
    array += np.random.default_rng(seed).normal(0, 8.0, SHAPE)
    image = sitk.GetImageFromArray(array.astype(np.float32))
    image.SetSpacing(SPACING)
    image.SetOrigin((10.0, -20.0, 30.0))
    image.SetDirection(OBLIQUE_DIRECTION)
    return image


def _run(current, previous, exclude=None, **overrides):
    valid = np.ones(SHAPE, bool)
    exclude = np.zeros(SHAPE, bool) if exclude is None else exclude
    return find_candidates(current, previous, valid, exclude, TrackConfig(**overrides))


def test_new_blob_is_found_and_misregistered_edge_is_not():
    blob = (60.0, 90.0, 90.0)  # z, y, x in mm from the first voxel
    previous = _body(seed=1)
    current = _body(seed=2, blob_centre=blob, organ_shift_mm=2.0)  # the organ edge moved by 2 mm
    result = _run(current, previous)
    assert len(result.candidates) == 1, [c.score for c in result.candidates]
    found = result.candidates[0]
    expected_index = np.array(blob) / np.array(SPACING[::-1])
    assert np.linalg.norm((np.array(found.centre_zyx) - expected_index) * SPACING[::-1]) < 4.0
    assert found.sign == -1 and found.score >= 4.0
    assert result.labels.dtype == np.uint32 and set(np.unique(result.labels)) == {0, 1}
    volume = (result.labels == 1).sum() * np.prod(SPACING)
    assert 0.3 * (4 / 3 * np.pi * 7.0**3) < volume < 3 * (4 / 3 * np.pi * 7.0**3)


def test_candidate_near_a_tracked_lesion_is_not_reported():
    blob = (60.0, 90.0, 90.0)
    exclude = np.zeros(SHAPE, bool)
    index = np.round(np.array(blob) / np.array(SPACING[::-1])).astype(int)
    exclude[tuple(slice(i - 4, i + 5) for i in index)] = True
    result = _run(_body(seed=2, blob_centre=blob), _body(seed=1), exclude=exclude)
    assert result.candidates == []
    assert not result.labels.any()


def test_no_change_gives_no_candidate_and_output_is_deterministic():
    previous, current = _body(seed=3), _body(seed=4)
    assert _run(current, previous).candidates == []
    previous = _body(seed=1)
    blob = _body(seed=2, blob_centre=(60.0, 90.0, 90.0))
    first, second = _run(blob, previous), _run(blob, previous)
    assert first.candidates == second.candidates
    assert np.array_equal(first.labels, second.labels)
    assert Geometry.of(blob).shape_zyx == first.labels.shape


def test_cap_keeps_the_highest_scores():
    previous = _body(seed=1)
    current = _body(seed=2, blob_centre=(60.0, 90.0, 90.0))
    assert _run(current, previous, candidate_max=0).candidates == []


def test_a_lesion_that_was_already_there_is_not_new():
    """A blob that darkened further (a known lesion's necrosis, a cyst) changed like a new lesion would, but
    the previous scan already showed it: not a candidate. The same scan against a previous one without it is."""
    blob = (60.0, 90.0, 90.0)
    current = _body(seed=2, blob_centre=blob, blob_value=-40.0)
    assert len(_run(current, _body(seed=1)).candidates) == 1
    assert _run(current, _body(seed=1, blob_centre=blob, blob_value=10.0)).candidates == []



def test_the_previous_scan_warped_straight_onto_the_detection_grid_finds_the_same_candidate():
    """The tracker resamples the previous scan onto the coarser detection grid directly (2.5 mm here, the
    follow-up is 2 x 2 x 3 mm); the candidate is the one found from the previous scan on the follow-up's grid."""
    from lesionlocator.track.followup import CANDIDATE_ID_BASE, followup_candidates, previous_on_followup

    previous, current = _body(seed=1), _body(seed=2, blob_centre=(60.0, 90.0, 90.0))
    identity = sitk.Transform(3, sitk.sitkIdentity)
    warped, valid = previous_on_followup(previous, current, identity)
    assert warped.GetSpacing() == (2.5, 2.5, 3.0) and valid.shape == warped.GetSize()[::-1] and valid.all()
    none = (np.zeros(SHAPE, np.uint32), Geometry.of(previous))
    labels, scores = followup_candidates(current, previous, identity, np.zeros(SHAPE, np.uint32), none, 2, TrackConfig())
    direct = _run(current, previous)
    assert list(scores) == [2 * CANDIDATE_ID_BASE + 1] and len(direct.candidates) == 1
    assert abs(scores[2 * CANDIDATE_ID_BASE + 1] - direct.candidates[0].score) < 0.5
    assert dice(labels > 0, direct.labels > 0) > 0.8


def test_a_blob_a_few_mm_away_in_the_previous_scan_was_there_before():
    """shifted_before: a blob of the same sign and scale within the residual misregistration of the peak in the
    previous scan is close to the current blob's strength (it moved, it is not new); none nearby gives about 0."""
    from lesionlocator.track.candidates import shifted_before

    spacing = np.array([3.0, 2.0, 2.0])
    z, y, x = np.indices((30, 40, 40)).astype(float) * spacing[:, None, None, None]

    def ball(centre):
        return -50.0 * (np.sqrt((z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2) <= 5.0)

    current = ball((45.0, 40.0, 40.0))
    peak = (15, 20, 20)
    moved = shifted_before(current, ball((45.0, 40.0, 43.0)), peak, 6.0, -1, spacing, 3.0, {})
    far = shifted_before(current, ball((45.0, 40.0, 60.0)), peak, 6.0, -1, spacing, 3.0, {})
    empty = shifted_before(current, np.zeros_like(current), peak, 6.0, -1, spacing, 3.0, {})
    assert moved > 0.8 and far < 0.5 and abs(empty) < 1e-6


def test_valid_and_exclusion_come_on_the_detection_grid_without_full_resolution_volumes():
    """previous_on_followup marks invalid exactly the detection-grid voxels the transform maps outside the
    earlier scan (one resampling, no all-ones volume); near_tracked_lesions gives the lesions now and before
    plus the margin on that grid (2.5 mm here), with the previous lesion moved by the transform."""
    from lesionlocator.track.candidates import detection_reference
    from lesionlocator.track.followup import near_tracked_lesions, previous_on_followup

    previous, current = _body(seed=1), _body(seed=2)
    shift = sitk.TranslationTransform(3, (0.0, 0.0, 45.0))  # follow-up world -> previous world, +45 mm in z
    reference = detection_reference(current)
    warped, valid = previous_on_followup(previous, current, shift)
    points = [reference.TransformIndexToPhysicalPoint((int(x), int(y), int(z))) for z, y, x in np.ndindex(valid.shape)
              if x == 3 and y == 5]  # one column along k, checked point by point
    inside = [previous.TransformPhysicalPointToContinuousIndex(shift.TransformPoint(p)) for p in points]
    expected = [all(-0.5 <= c <= n - 0.5 for c, n in zip(index, previous.GetSize())) for index in inside]
    assert valid[:, 5, 3].tolist() == expected and 0 < sum(expected) < len(expected)
    assert not np.isnan(sitk.GetArrayViewFromImage(warped)).any()

    labels, before = np.zeros(SHAPE, np.uint32), np.zeros(SHAPE, np.uint32)
    labels[20, 30, 30] = 1  # a lesion now, at index (x 30, y 30, z 20)
    before[30, 10, 10] = 2  # one at the previous session, 45 mm (15 slices) further in z there
    near = near_tracked_lesions(labels, before, Geometry.of(previous), current, shift, 10.0)
    assert near.shape == reference.GetSize()[::-1]
    spacing = np.asarray(reference.GetSpacing())[::-1]

    def near_at(index_xyz) -> np.ndarray:
        world = current.TransformIndexToPhysicalPoint(index_xyz)
        centre = np.asarray(reference.TransformPhysicalPointToContinuousIndex(world))[::-1]
        distance = np.sqrt((((np.indices(near.shape).T - centre) * spacing) ** 2).sum(-1)).T
        return distance

    for lesion in [(30, 30, 20), (10, 10, 15)]:  # the previous lesion at z 30 is at z 15 of the follow-up
        distance = near_at(lesion)
        assert near[distance <= 7.0].all() and not near[(distance > 13.0) & (distance < 20.0)].any()


def _levels_case(inside: float, shell: float, noise_sd: float, seed: int) -> np.ndarray:
    """A 2 mm grid: a 5-voxel-radius ball of ``inside`` in ``shell`` with Gaussian noise of ``noise_sd``."""
    z, y, x = np.indices((30, 30, 30))
    ball = (z - 15) ** 2 + (y - 15) ** 2 + (x - 15) ** 2 <= 25
    array = np.where(ball, inside, shell) + np.random.default_rng(seed).normal(0, noise_sd, ball.shape)
    return array.astype(np.float32), ball


def test_a_faint_trace_within_the_previous_scans_noise_does_not_make_a_blob_old():
    from lesionlocator.track.candidates import appeared

    spacing = np.array([2.0, 2.0, 2.0])
    current, ball = _levels_case(200.0, 100.0, 10.0, seed=1)
    # before: a quarter of today's contrast (above NOVELTY_RATIO) but well inside a noisy shell's spread
    noisy_before, _ = _levels_case(125.0, 100.0, 120.0, seed=2)
    clean_before, _ = _levels_case(125.0, 100.0, 5.0, seed=3)
    assert appeared(current, noisy_before, ball, spacing, +1)
    assert not appeared(current, clean_before, ball, spacing, +1)


def test_a_dark_blob_in_tissue_below_otsus_level_is_tissue_but_a_change_of_air_is_not():
    """On MR, Otsu's level can part two kinds of tissue: a hypo-intense lesion in the brighter one is below
    it, yet in tissue (it was above before, its shell is above now). Air before, or air around it, is not."""
    from lesionlocator.track.candidates import in_tissue

    spacing = np.array([2.0, 2.0, 2.0])
    level = 200.0
    dark_now, ball = _levels_case(120.0, 300.0, 10.0, seed=4)
    tissue_before, _ = _levels_case(300.0, 300.0, 10.0, seed=5)
    air_before, _ = _levels_case(0.0, 300.0, 10.0, seed=6)
    dark_in_air, _ = _levels_case(120.0, 0.0, 10.0, seed=7)
    bright_now, _ = _levels_case(280.0, 100.0, 10.0, seed=8)
    assert in_tissue(dark_now, tissue_before, ball, spacing, level)
    assert not in_tissue(dark_now, air_before, ball, spacing, level)
    assert not in_tissue(dark_in_air, tissue_before, ball, spacing, level)
    assert in_tissue(bright_now, air_before, ball, spacing, level)
