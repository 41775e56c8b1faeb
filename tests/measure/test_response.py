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
            fallback=(), thickness: float | None = None):
    """``table``: lesion_id -> diameter per session (None: no row; 0: no voxels); ``fallback``: (lesion, index)
    pairs whose mask the fallback segmenter made; ``thickness``: slice thickness (mm) of every scan, None unknown."""
    rows = []
    for lesion_id, diameters in table.items():
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


def test_progression_by_new_lesion():
    frame = lesions("A", {1: [30, 25], 9: [None, 4]}, status={(9, 1): "new_candidate"})
    sessions, _ = assess_response(frame)
    follow = sessions.iloc[1]
    assert follow.target_response == "SD" and follow.n_new_lesions == 1 and follow.recist_response == "PD"
    assert follow.volumetric_response == "PD"


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
