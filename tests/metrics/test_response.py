"""RECIST 1.1 and volumetric response on hand-made cases (diameters in mm)."""

from __future__ import annotations

import pandas as pd
import pytest

from lesionlocator.response import ResponseCriteria, assess_response, select_targets


def lesions(patient: str, table: dict[int, list[float]], status: dict[tuple[int, int], str] | None = None, organ=None,
            fallback=()):
    """``table``: lesion_id -> diameter per session (None: no row; 0: no voxels); ``fallback``: (lesion, index)
    pairs whose mask the fallback segmenter made."""
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
                centroid_x_mm=None, centroid_y_mm=None, centroid_z_mm=None, mean_intensity=None,
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
    criteria = ResponseCriteria(max_targets=2)
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
