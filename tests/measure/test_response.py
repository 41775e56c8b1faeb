"""RECIST 1.1 and volumetric response on hand-made cases (diameters in mm)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lesionlocator.core.config import MetricsConfig
from lesionlocator.core.io import Geometry
from lesionlocator.measure.lesions import measure_labels
from lesionlocator.measure.response import assess_response, baseline_and_nadir, select_targets


def lesions(patient: str, table: dict[int, list[float]], status: dict[tuple[int, int], str] | None = None, organ=None,
            fallback=(), thickness: float | None = None, new=None, reader=None, reason=None):
    """``table``: lesion_id -> diameter per session (None: no row; 0: no voxels); ``fallback``: (lesion, index)
    pairs whose mask the fallback segmenter made; ``thickness``: slice thickness (mm) of every scan, None unknown.
    ``new``: the lesion IDs the tracker calls new (None: no is_new / first_session_index / reader / review_reason
    columns, as before issue 24); ``reader`` and ``reason``: (lesion, index) -> the reader's action, the tracker's
    review reason."""
    rows = []
    for lesion_id, diameters in table.items():
        first = next(i for i, d in enumerate(diameters) if d is not None)
        for index, d in enumerate(diameters):
            if d is None:
                continue
            state = (status or {}).get((lesion_id, index), "present" if d > 0 else "vanished")
            rows.append(dict(
                patient=patient, session=f"s{index}", session_index=index, lesion_id=lesion_id, status=state, by_fallback=(lesion_id, index) in fallback,
                organ=(organ or {}).get(lesion_id), n_fragments=int(d > 0), voxel_count=int(d > 0) * 100,
                volume_ml=(d / 10.0) ** 3, longest_diameter_mm=float(d), short_axis_mm=d / 2, diameter_slice=None,
                slice_thickness_mm=thickness, centroid_x_mm=None, centroid_y_mm=None, centroid_z_mm=None,
                mean_intensity=None,
            ))  # fmt: skip
            if new is not None:
                rows[-1].update(is_new=lesion_id in new, first_session_index=first, reader=(reader or {}).get((lesion_id, index)),
                                review_reason=(reason or {}).get((lesion_id, index)))  # fmt: skip
    return pd.DataFrame(rows)


def responses(frame: pd.DataFrame, column: str = "recist_response") -> list:
    sessions, _ = assess_response(frame)
    return sessions.sort_values("session_index")[column].tolist()[1:]


def test_complete_response():
    assert responses(lesions("A", {1: [30, 12, 0], 2: [15, 5, 0]})) == ["PR", "CR"]


def test_partial_response_threshold():
    # baseline sum 50: -30 % is 35 mm
    assert responses(lesions("A", {1: [30, 21], 2: [20, 14]})) == ["PR"]
    assert responses(lesions("A", {1: [30, 21], 2: [20, 14.5]})) == ["SD"]


def test_progression_by_growth_needs_20_percent_and_5_mm():
    assert responses(lesions("A", {1: [30, 36]})) == ["PD"]  # +20 %, +6 mm
    assert responses(lesions("A", {1: [20, 24.5]})) == ["SD"]  # +22 % but only +4.5 mm
    assert responses(lesions("A", {1: [30, 35]})) == ["SD"]  # +5 mm but only +17 %


def test_progression_by_new_lesion_once_a_later_scan_confirms_it():
    # before issue 24 a candidate seen once was PD; now it is PD only when seen again (a frame without the
    # new-lesion columns: a lesion first seen after baseline is new)
    frame = lesions("A", {1: [30, 25, 26], 9: [None, 4, 5]}, status={(9, 1): "new_candidate"})
    sessions, patients = assess_response(frame)
    assert sessions.target_response.tolist()[1:] == ["SD", "SD"] and sessions.n_new_lesions.tolist() == [0, 1, 1]
    assert sessions.recist_response.tolist()[1:] == ["PD", "PD"] and sessions.volumetric_response.tolist()[1:] == ["PD", "PD"]
    assert patients.first_pd_session_index.iloc[0] == 1
    once = lesions("A", {1: [30, 25], 9: [None, 4]}, status={(9, 1): "new_candidate"})
    sessions, _ = assess_response(once)
    assert sessions.recist_response.tolist()[1:] == ["SD"] and sessions.n_equivocal_new_lesions.tolist() == [0, 1]


def test_nadir_rule():
    # 50 -> 20 (PR) -> 26: +30 % and +6 mm over the nadir 20 is PD although -48 % from baseline
    frame = lesions("A", {1: [30, 12, 16], 2: [20, 8, 10]})
    sessions, patients = assess_response(frame)
    assert sessions.recist_response.tolist()[1:] == ["PR", "PD"]
    assert sessions.nadir_sum_mm.tolist()[1:] == [50, 20]
    assert sessions.pct_change_baseline.iloc[2] == pytest.approx(-48.0)
    assert sessions.pct_change_nadir.iloc[2] == pytest.approx(30.0)
    assert patients.best_response.iloc[0] == "PR" and patients.first_pd_session_index.iloc[0] == 2


def test_best_response_stops_at_first_progression():
    frame = lesions("A", {1: [30, 40, 10]})
    _, patients = assess_response(frame)
    assert patients.best_response.iloc[0] == "PD"


def test_target_selection_size_count_and_organ():
    diameters = {1: [50], 2: [45], 3: [40], 4: [35], 5: [30], 6: [25], 7: [9.9], 8: [60]}
    organ = {1: "liver", 2: "liver", 3: "liver", 8: None}
    targets = select_targets(lesions("A", diameters, organ=organ))
    # 8 (no organ), then liver 1, 2 (3 is the third liver lesion), then 4, 5; 6 beyond five; 7 not measurable
    assert sorted(targets.lesion_id) == [1, 2, 4, 5, 8]
    criteria = MetricsConfig(max_targets=2)
    assert sorted(select_targets(lesions("A", diameters), criteria).lesion_id) == [1, 8]


def test_non_target_keeps_target_cr_at_pr_and_out_of_fov_is_ne():
    frame = lesions("A", {1: [30, 0], 2: [8, 6]})  # 2 is too small: non-target
    assert responses(frame) == ["PR"]
    frame = lesions("A", {1: [30, 25], 2: [20, 0]}, status={(2, 1): "out_of_fov"})
    assert responses(frame) == ["NE"]


def test_volumetric_thresholds():
    # volume ~ d^3: 30 -> 21 mm is -65.7 % volume (PR); 30 -> 36 mm is +72.8 % (SD, below +73 %)
    assert responses(lesions("A", {1: [30, 21]}), "volumetric_response") == ["PR"]
    assert responses(lesions("A", {1: [30, 36]}), "volumetric_response") == ["SD"]
    assert responses(lesions("A", {1: [30, 36.1]}), "volumetric_response") == ["PD"]


def test_many_patients_at_once_match_one_by_one():
    a = lesions("A", {1: [30, 12, 16], 2: [20, 8, 10]})
    b = lesions("B", {4: [15, 0], 5: [22, 30]}, status={(4, 1): "merged"})
    together, _ = assess_response(pd.concat([a, b]))
    apart = pd.concat([assess_response(a)[0], assess_response(b)[0]], ignore_index=True)
    pd.testing.assert_frame_equal(together, apart)


def test_flagged_lesions_count_merges_and_fallback_masks():
    a = lesions("A", {1: [30, 20], 2: [15, 10], 3: [12, 8]}, status={(2, 1): "merged"}, fallback={(3, 1)})
    _, patients = assess_response(a)
    assert patients.set_index("patient").loc["A", "n_flagged"] == 2
    _, plain = assess_response(lesions("A", {1: [30, 20], 2: [15, 10], 3: [12, 8]}))
    assert plain.set_index("patient").loc["A", "n_flagged"] == 0


def test_exactly_minus_30_percent_is_partial_response():
    # 33 -> 23.1 mm is -30.0 %; in floating point 23.1 > 33 * 0.7 = 23.0999...
    assert responses(lesions("A", {1: [33, 23.1]})) == ["PR"]
    assert responses(lesions("A", {1: [33, 23.2]})) == ["SD"]
    # each diameter is recorded to 0.1 mm before summing: 14.04 + 9.1 -> 14.0 + 9.1 = 23.1 mm
    frame = lesions("A", {1: [20, 14.04], 2: [13, 9.1]})
    sessions, _ = assess_response(frame)
    assert sessions.recist_response.tolist()[1:] == ["PR"]
    assert sessions.sum_diameters_mm.tolist() == [33.0, 23.1]


def test_exactly_5_mm_and_20_percent_over_nadir_is_progression():
    # nadir 11.4 mm, then 16.4 mm: +5.0 mm (4.999... in floating point) and +44 %
    assert responses(lesions("A", {1: [30, 11.4, 16.4]})) == ["PR", "PD"]
    assert responses(lesions("A", {1: [30, 11.4, 16.3]})) == ["PR", "PR"]  # +4.9 mm: not PD
    # exactly +20 % and +5.0 mm on recorded diameters (25.04 -> 25.0, 29.96 -> 30.0)
    assert responses(lesions("A", {1: [25.04, 29.96]})) == ["PD"]
    assert responses(lesions("A", {1: [25.0, 29.9]})) == ["SD"]  # +19.6 %, +4.9 mm


def test_reappearance_after_complete_response_is_progression():
    # a target back at 3 mm after CR: too little growth for PD by the SoD, PD by reappearance
    frame = lesions("A", {1: [30, 0, 0, 3]})
    sessions, patients = assess_response(frame)
    assert sessions.recist_response.tolist()[1:] == ["CR", "CR", "PD"]
    assert sessions.target_response.iloc[3] == "PD"
    assert patients.best_response.iloc[0] == "CR" and patients.first_pd_session_index.iloc[0] == 3
    # a non-target back after CR
    frame = lesions("A", {1: [30, 0, 0], 2: [8, 0, 4]})
    sessions, _ = assess_response(frame)
    assert sessions.recist_response.tolist()[1:] == ["CR", "PD"]
    assert sessions.non_target_response.iloc[2] == "PD"
    # an NE session (nothing visible, a target out of view) does not end the CR
    frame = lesions("A", {1: [30, 0, 0, 3], 2: [20, 0, 0, 0]}, status={(2, 2): "out_of_fov"})
    assert responses(frame) == ["CR", "NE", "PD"]


def test_reappearance_without_complete_response_rejoins_the_sum():
    # target 2 vanishes while target 1 remains (PR), then reappears at 4 mm: it counts again in the
    # SoD (20 -> 24 mm, +20 % but +4 mm over the nadir) and is not PD by itself
    frame = lesions("A", {1: [30, 20, 20], 2: [20, 0, 4]})
    sessions, _ = assess_response(frame)
    assert sessions.recist_response.tolist()[1:] == ["PR", "PR"]
    assert sessions.sum_diameters_mm.tolist() == [50.0, 20.0, 24.0]
    # a non-target that vanishes and reappears while targets remain: not PD
    assert responses(lesions("A", {1: [30, 20, 20], 2: [8, 0, 4]})) == ["PR", "PR"]


def test_measurable_minimum_is_twice_a_thick_slice():
    # 12 mm: measurable on 3 mm slices (minimum 10 mm), not on 7 mm slices (minimum 14 mm)
    frame = lesions("A", {1: [12, 6], 2: [30, 30]}, thickness=7.0)
    assert sorted(select_targets(frame).lesion_id) == [2]
    assert assess_response(frame)[0].non_target_response.iloc[1] == "NON-CR/NON-PD"
    assert sorted(select_targets(lesions("A", {1: [12], 2: [30]}, thickness=3.0)).lesion_id) == [1, 2]
    assert sorted(select_targets(lesions("A", {1: [12], 2: [30]})).lesion_id) == [1, 2]  # unknown: 10 mm
    assert sorted(select_targets(lesions("A", {1: [14], 2: [30]}, thickness=7.0)).lesion_id) == [1, 2]
    # the configured floor still applies to thin slices
    assert sorted(select_targets(lesions("A", {1: [12], 2: [30]}, thickness=3.0), MetricsConfig(min_measurable_mm=15)).lesion_id) == [2]


@pytest.mark.parametrize("slice_mm, is_target", [(7.0, False), (3.0, True)])
def test_measured_slice_thickness_decides_measurability(slice_mm, is_target):
    # a 12 x 1 pixel bar (longest diameter 12.04 mm, recorded 12.0) measured on the scan's own grid
    geometry = Geometry(size=(24, 24, 5), spacing=(1.0, 1.0, slice_mm), origin=(0.0, 0.0, 0.0),
                        direction=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))  # fmt: skip
    labels = np.zeros(geometry.shape_zyx, dtype=np.uint8)
    labels[2, 10, 4:16] = 1
    measured = measure_labels(labels, geometry)
    assert measured.slice_thickness_mm.tolist() == [slice_mm]
    frame = measured.assign(patient="A", session="s0", session_index=0, status="present", by_fallback=False, organ=None)
    assert (1 in select_targets(frame).lesion_id.tolist()) is is_target


def test_nadir_skips_an_unevaluable_session_and_restarts_per_patient():
    values = pd.Series([300.0, 200.0, np.nan, 250.0, 100.0, 120.0])
    patient = pd.Series([0, 0, 0, 0, 1, 1])
    baseline, nadir = baseline_and_nadir(values, patient, pd.Series([True, False, False, False, True, False]))
    assert baseline.tolist() == [300.0] * 4 + [100.0] * 2
    assert nadir.tolist()[1:4] == [300.0, 200.0, 200.0] and nadir.tolist()[5] == 100.0
    assert np.isnan(nadir[0]) and np.isnan(nadir[4])


# -- new lesions, uncertain and lost lesions, review (issue 24) ------------------------------------------

RESPONSE_COLUMNS = ["target_response", "non_target_response", "recist_response", "volumetric_response"]


def test_confirmed_new_lesion_is_progression_from_its_first_sighting():
    # candidate 2000001 first seen at s2, seen again (present) at s3: PD at s2 and s3
    table = {1: [30, 29, 29, 28], 2000001: [None, None, 6, 7]}
    frame = lesions("A", table, status={(2000001, 2): "new_candidate"}, new={2000001})
    sessions, patients = assess_response(frame)
    assert sessions.recist_response.tolist()[1:] == ["SD", "PD", "PD"]
    assert sessions.target_response.tolist()[1:] == ["SD", "SD", "SD"]
    assert sessions.n_new_lesions.tolist() == [0, 0, 1, 1] and sessions.n_equivocal_new_lesions.tolist() == [0] * 4
    assert sessions.volumetric_response.tolist()[3] == "PD"
    assert patients.best_response.iloc[0] == "SD" and patients.first_pd_session_index.iloc[0] == 2
    # its first sighting stays on the review list (a new_candidate row), named as confirmed
    assert sessions.needs_review.tolist() == [False, False, True, False]
    assert sessions.review_reasons.iloc[2].startswith("first sighting of a confirmed new lesion")


def test_equivocal_new_lesion_is_counted_and_flagged_without_changing_the_response():
    # seen at s2 only (gone at s3): not confirmed, so the response is that of the patient without it
    table = {1: [30, 29, 29, 28]}
    candidate = {**table, 2000001: [None, None, 6, 0]}
    reason = {(2000001, 2): "new-lesion candidate, not yet confirmed"}
    with_candidate, patients = assess_response(lesions("A", candidate, status={(2000001, 2): "new_candidate"}, new={2000001}, reason=reason))
    without, _ = assess_response(lesions("A", table, new=set()))
    pd.testing.assert_frame_equal(with_candidate[RESPONSE_COLUMNS], without[RESPONSE_COLUMNS])
    assert with_candidate.recist_response.tolist()[1:] == ["SD", "SD", "SD"]
    assert with_candidate.n_equivocal_new_lesions.tolist() == [0, 0, 1, 0] and with_candidate.n_new_lesions.sum() == 0
    assert with_candidate.n_lesions.tolist() == [1, 1, 1, 1]  # not counted as a lesion
    assert with_candidate.needs_review.tolist() == [False, False, True, False]
    assert with_candidate.review_reasons.iloc[2] == "equivocal new lesion (new-lesion candidate, not yet confirmed)"
    assert patients.n_flagged.iloc[0] == 1 and patients.n_lesions.iloc[0] == 1 and patients.best_response.iloc[0] == "SD"
    assert not without.needs_review.any() and without.review_reasons.isna().all()


def test_status_uncertain_at_a_later_session_does_not_confirm():
    frame = lesions("A", {1: [30, 29, 29], 2000001: [None, 6, 7]}, status={(2000001, 1): "new_candidate", (2000001, 2): "uncertain"},
                    new={2000001})  # fmt: skip
    sessions, _ = assess_response(frame)
    assert sessions.recist_response.tolist()[1:] == ["SD", "SD"] and sessions.n_equivocal_new_lesions.tolist() == [0, 1, 1]


def test_rejected_new_lesion_is_ignored():
    # seen at s1 and s2 (which would confirm it), then rejected by a reader at s3: as if it never existed
    table = {1: [30, 29, 29, 28]}
    rejected = {**table, 2000001: [None, 6, 7, 0]}
    frame = lesions("A", rejected, status={(2000001, 1): "new_candidate", (2000001, 3): "rejected"}, new={2000001},
                    reader={(2000001, 3): "rejected"}, reason={(2000001, 1): "new-lesion candidate, not yet confirmed"})  # fmt: skip
    sessions, patients = assess_response(frame)
    plain, plain_patients = assess_response(lesions("A", table, new=set()))
    pd.testing.assert_frame_equal(sessions, plain)
    pd.testing.assert_frame_equal(patients, plain_patients)
    assert not sessions.needs_review.any()


def test_reader_added_or_confirmed_lesion_is_confirmed_at_once():
    # a lesion a reader added at s2 (seen there only) is a confirmed new lesion: PD at s2
    frame = lesions("A", {1: [30, 29, 29], 77: [None, None, 8]}, new={77}, reader={(77, 2): "added"})
    sessions, _ = assess_response(frame)
    assert sessions.recist_response.tolist()[1:] == ["SD", "PD"] and sessions.n_new_lesions.tolist() == [0, 0, 1]
    # a candidate seen at s1 only, confirmed by a reader at s2 (where it has no mask): PD at s1
    frame = lesions("A", {1: [30, 29, 29], 1000001: [None, 6, 0]}, status={(1000001, 1): "new_candidate"}, new={1000001},
                    reader={(1000001, 2): "confirmed"})  # fmt: skip
    sessions, patients = assess_response(frame)
    assert sessions.recist_response.tolist()[1:] == ["PD", "SD"] and patients.first_pd_session_index.iloc[0] == 1


def test_uncertain_lesion_is_measured_as_present_and_never_complete_response():
    # the only target is uncertain with an empty mask: not CR (PR by its measured 0 mm), volumetric not CR
    frame = lesions("A", {1: [30, 0]}, status={(1, 1): "uncertain"}, new=set())
    sessions, _ = assess_response(frame)
    assert sessions.target_response.iloc[1] == "PR" and sessions.recist_response.iloc[1] == "PR"
    assert sessions.volumetric_response.iloc[1] == "PR" and sessions.needs_review.iloc[1]
    assert sessions.review_reasons.iloc[1] == "uncertain (the evidence conflicts, mask kept and measured)"
    assert responses(lesions("A", {1: [30, 0]}, new=set())) == ["CR"]  # the same, vanished: CR
    # an uncertain target with voxels counts its diameter
    frame = lesions("A", {1: [30, 0], 2: [20, 4]}, status={(2, 1): "uncertain"}, new=set())
    assert assess_response(frame)[0].sum_diameters_mm.iloc[1] == 4.0 and responses(frame) == ["PR"]
    # targets gone, the non-target uncertain (empty mask): non-target not CR, overall PR
    frame = lesions("A", {1: [30, 0], 2: [8, 0]}, status={(2, 1): "uncertain"}, new=set())
    sessions, _ = assess_response(frame)
    assert sessions.non_target_response.iloc[1] == "NON-CR/NON-PD" and sessions.recist_response.iloc[1] == "PR"
    # after a CR, an uncertain lesion is present again: PD by reappearance (and flagged)
    frame = lesions("A", {1: [30, 0, 0]}, status={(1, 2): "uncertain"}, new=set())
    assert responses(frame) == ["CR", "PD"] and responses(frame, "target_response") == ["CR", "PD"]


def test_lost_lesion_is_not_evaluable():
    # a lost target (voxels cleared): NE, unless the other targets already progress
    frame = lesions("A", {1: [30, 25], 2: [20, 0]}, status={(2, 1): "lost"}, new=set(),
                    reason={(2, 1): "its mask lies 54 mm from its propagated last mask (limit 15 mm)"})  # fmt: skip
    sessions, _ = assess_response(frame)
    assert sessions.target_response.iloc[1] == "NE" and sessions.recist_response.iloc[1] == "NE"
    assert sessions.volumetric_response.iloc[1] == "NE" and np.isnan(sessions.sum_diameters_mm.iloc[1])
    assert sessions.review_reasons.iloc[1] == "lost (its mask lies 54 mm from its propagated last mask (limit 15 mm))"
    assert responses(lesions("A", {1: [30, 66], 2: [20, 0]}, status={(2, 1): "lost"}, new=set())) == ["PD"]  # 66 >= 50 * 1.2
    # a lost non-target: non-target NE (overall SD with target SD: RECIST 1.1 Table 1)
    frame = lesions("A", {1: [30, 25], 2: [8, 0]}, status={(2, 1): "lost"}, new=set())
    assert assess_response(frame)[0].non_target_response.iloc[1] == "NE" and responses(frame) == ["SD"]
    # ... and no CR for targets gone while a non-target is lost (vanished instead: CR)
    assert responses(lesions("A", {1: [30, 0], 2: [8, 0]}, status={(2, 1): "lost"}, new=set())) == ["PR"]
    assert responses(lesions("A", {1: [30, 0], 2: [8, 0]}, new=set())) == ["CR"]


def test_review_reasons_are_distinct_and_most_severe_first():
    status = {(1, 1): "split", (2, 1): "lost", (3, 1): "uncertain", (4, 1): "merged"}
    reason = {(3, 1): "segmenters disagree", (5, 1): "volume x6.1 since s0"}
    frame = lesions("A", {1: [30, 31], 2: [20, 0], 3: [12, 12], 4: [11, 11], 5: [10, 10], 6: [10, 10]},
                    status=status, fallback={(6, 1), (1, 1)}, new=set(), reason=reason)  # fmt: skip
    sessions, patients = assess_response(frame)
    assert sessions.review_reasons.iloc[1].split("; ") == [
        "lost (the mask moved further than registration explains, voxels cleared)", "uncertain (segmenters disagree)",
        "merged (the mask touches another lesion's)", "split (the mask has separate fragments)",
        "mask from the fallback segmenter", "volume x6.1 since s0",
    ]  # fmt: skip
    assert patients.n_flagged.iloc[0] == 6 and sessions.needs_review.tolist() == [False, True]


def test_many_patients_with_new_lesions_at_once_match_one_by_one():
    a = lesions("A", {1: [30, 29, 29], 1000001: [None, 6, 7]}, status={(1000001, 1): "new_candidate"}, new={1000001})
    b = lesions("B", {1: [30, 29, 29], 1000001: [None, 6, 0]}, status={(1000001, 1): "new_candidate"}, new={1000001})
    c = lesions("C", {1: [30, 29, 29], 1000001: [None, 6, 7]}, status={(1000001, 1): "new_candidate", (1000001, 2): "rejected"},
                new={1000001}, reader={(1000001, 2): "rejected"})  # fmt: skip
    d = lesions("D", {1: [30, 0, 0], 2: [20, 0, 0]}, status={(2, 1): "lost", (1, 2): "uncertain"}, new=set())
    together, patients = assess_response(pd.concat([a, b, c, d]))
    apart = [assess_response(x) for x in (a, b, c, d)]
    pd.testing.assert_frame_equal(together, pd.concat([s for s, _ in apart], ignore_index=True))
    pd.testing.assert_frame_equal(patients, pd.concat([p for _, p in apart], ignore_index=True))
    assert together.recist_response.tolist()[1::3] == ["PD", "SD", "SD", "NE"]
