from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from lesionlocator.core.errors import InputError
from lesionlocator.core.io import Geometry, read_patient_table
from lesionlocator.measure.lesions import LESION_SCHEMA, _outline_points, measure_labels, measure_patient, slice_diameters
from tests.lesion_builders import ellipsoid, make_patient, oblique_geometry, write_labels, write_scan


@pytest.mark.parametrize(
    "spacing, degrees, in_plane, semi",
    [
        ((0.8, 0.9, 2.5), 30.0, 0.0, (14.0, 8.0, 6.0)),
        ((0.6, 1.1, 3.0), -50.0, 35.0, (16.0, 9.0, 7.5)),
        ((1.0, 0.5, 2.0), 90.0, 70.0, (12.0, 11.0, 5.0)),
    ],
)
def test_ellipsoid_diameters_volume_centroid(spacing, degrees, in_plane, semi):
    geometry = oblique_geometry(size=(72, 72, 20), spacing=spacing, degrees=degrees)
    centre = (10.0, 36.0, 35.0)
    mask = ellipsoid(geometry, centre, semi, in_plane_degrees=in_plane)
    row = measure_labels(mask.astype(np.uint32) * 5, geometry).iloc[0]
    pixel = float(np.hypot(spacing[0], spacing[1]))
    # digitisation: each end of a diameter is off by at most half a pixel diagonal
    assert row.longest_diameter_mm == pytest.approx(2 * semi[0], abs=pixel)
    assert row.short_axis_mm == pytest.approx(2 * semi[1], abs=pixel)
    assert row.diameter_slice == pytest.approx(centre[0], abs=1)
    expected_ml = 4 / 3 * np.pi * np.prod(semi) / 1000
    assert row.volume_ml == pytest.approx(expected_ml, rel=0.06)
    assert row.voxel_count == mask.sum()
    world = geometry.index_to_world(np.asarray(centre))
    assert np.allclose([row.centroid_x_mm, row.centroid_y_mm, row.centroid_z_mm], world, atol=0.5 * max(spacing))


def test_longest_diameter_matches_brute_force_over_outline():
    rng = np.random.default_rng(3)
    for _ in range(10):
        mask = np.zeros((18, 22), bool)
        for _ in range(4):
            r, c = rng.integers(2, 16), rng.integers(2, 20)
            mask[r - rng.integers(0, 3): r + rng.integers(1, 3), c - rng.integers(0, 3): c + rng.integers(1, 3)] = True
        spacing = (0.7, 1.3)
        points = _outline_points(mask) * spacing
        brute = max(np.linalg.norm(a - b) for a, b in itertools.combinations(points, 2))
        longest, short = slice_diameters(mask, spacing)
        assert longest == pytest.approx(brute)
        assert 0 < short <= longest


def test_split_lesion_sums_fragment_diameters(geometry):
    a = ellipsoid(geometry, (12, 16, 16), (8, 8, 6))
    b = ellipsoid(geometry, (12, 40, 46), (6, 6, 6))
    one = measure_labels(a.astype(np.uint32), geometry).iloc[0]
    two = measure_labels(b.astype(np.uint32), geometry).iloc[0]
    both = measure_labels((a | b).astype(np.uint32) * 7, geometry).iloc[0]
    assert both.n_fragments == 2
    assert both.longest_diameter_mm == pytest.approx(one.longest_diameter_mm + two.longest_diameter_mm)
    assert both.short_axis_mm == pytest.approx(one.short_axis_mm)


def test_large_ids_and_intensity(geometry):
    labels = np.zeros(geometry.shape_zyx, np.uint32)
    labels[ellipsoid(geometry, (12, 20, 20), (6, 6, 6))] = 2**31 - 1
    image = np.full(geometry.shape_zyx, 7.5)
    frame = measure_labels(labels, geometry, image)
    assert frame.lesion_id.tolist() == [2**31 - 1]
    assert frame.mean_intensity.iloc[0] == pytest.approx(7.5)


def test_measure_patient_rows_status_and_schema(tmp_path, geometry):
    sessions = make_patient(tmp_path, geometry)
    status = pd.DataFrame({"lesion_id": [3, 11, 11], "session": ["ses-00", "ses-01", "ses-02"],
                           "status": ["present", "new_candidate", "merged"], "organ": ["liver", None, None],
                           "by_fallback": [False, False, True]})  # fmt: skip
    out = tmp_path / "lesions.parquet"
    table = measure_patient("P1", sessions, out, status=status)
    assert pq.read_schema(out).equals(LESION_SCHEMA)
    frame = pq.read_table(out).to_pandas()
    assert len(frame) == 6 and set(frame.session_index) == {0, 1, 2}
    assert frame.set_index(["session", "lesion_id"]).loc[("ses-01", 11), "status"] == "new_candidate"
    assert (frame.loc[frame.lesion_id == 3, "organ"] == "liver").all()
    assert frame.loc[frame.by_fallback, ["session", "lesion_id"]].values.tolist() == [["ses-02", 11]]
    volumes = frame[frame.lesion_id == 3].sort_values("session_index").volume_ml.to_numpy()
    assert volumes[1] < volumes[0] < volumes[2]
    assert table.num_rows == 6


def test_vanished_lesion_row_and_empty_patient(tmp_path, geometry):
    labels = np.zeros(geometry.shape_zyx, np.uint32)
    labels[ellipsoid(geometry, (12, 20, 20), (6, 6, 6))] = 4
    first = write_labels(labels, geometry, tmp_path / "a.nii.gz")
    empty = write_labels(np.zeros_like(labels), geometry, tmp_path / "b.nii.gz")
    frame = measure_patient("P", [("s1", None, first), ("s2", None, empty)]).to_pandas()
    gone = frame[frame.session == "s2"].iloc[0]
    assert gone.status == "vanished" and gone.voxel_count == 0 and pd.isna(gone.centroid_x_mm)
    assert not frame.by_fallback.any()  # no status table: no lesion came from a fallback
    out = tmp_path / "none.parquet"
    measure_patient("Q", [("s1", None, empty)], out)
    assert pq.read_schema(out).equals(LESION_SCHEMA) and pq.read_table(out).num_rows == 0


def test_deterministic_bytes(tmp_path, geometry):
    sessions = make_patient(tmp_path, geometry)
    measure_patient("P1", sessions, tmp_path / "a.parquet")
    measure_patient("P1", sessions, tmp_path / "b.parquet")
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()


def test_the_table_is_written_to_every_output_in_its_format(tmp_path, geometry):
    """The pipeline writes the lesion table twice: Parquet for users, Arrow IPC for aggregation."""
    sessions = make_patient(tmp_path, geometry)
    table = measure_patient("P1", sessions, [tmp_path / "m.parquet", tmp_path / "m.arrow"])
    assert table.num_rows > 0
    assert pq.read_table(tmp_path / "m.parquet").equals(table)
    assert read_patient_table(tmp_path / "m.arrow").equals(table)
    assert (tmp_path / "m.arrow").read_bytes()[:6] == b"ARROW1"


def test_geometry_mismatch_is_input_error_without_output(tmp_path, geometry):
    labels = np.zeros(geometry.shape_zyx, np.uint32)
    other = Geometry(geometry.size, geometry.spacing, (0.0, 0.0, 0.0), geometry.direction)
    image = write_scan(np.zeros(geometry.shape_zyx), other, tmp_path / "ct.nii.gz")
    label_path = write_labels(labels, geometry, tmp_path / "labels.nii.gz")
    with pytest.raises(InputError, match="origin"):
        measure_patient("P", [("s", image, label_path)], tmp_path / "out.parquet")
    assert not (tmp_path / "out.parquet").exists()


def test_bad_status_value(tmp_path, geometry):
    label_path = write_labels(np.zeros(geometry.shape_zyx), geometry, tmp_path / "l.nii.gz")
    bad = pd.DataFrame({"lesion_id": [1], "session": ["s"], "status": ["gone"]})
    with pytest.raises(InputError, match="unknown status"):
        measure_patient("P", [("s", None, label_path)], status=bad)


def _course(tmp_path, geometry, blobs_per_session):
    """Label maps of ``{lesion_id: centre index}`` per session; small balls of 4 mm radius."""
    sessions = []
    for index, blobs in enumerate(blobs_per_session):
        labels = np.zeros(geometry.shape_zyx, np.uint32)
        for lesion_id, centre in blobs.items():
            labels[ellipsoid(geometry, centre, (6, 6, 6))] = lesion_id
        sessions.append((f"ses-{index:02d}", None, write_labels(labels, geometry, tmp_path / f"l{index}.nii.gz")))
    return sessions


def test_new_lesions_reader_actions_and_review(tmp_path, geometry):
    from lesionlocator.measure.response import assess_response

    a, b, c, d = (12, 14, 14), (12, 40, 14), (12, 14, 44), (12, 40, 44)
    sessions = _course(tmp_path, geometry, [
        {3: a},
        {3: a, 1000001: b, 1000002: c, 1000003: d},  # three candidates
        {3: a, 1000001: b},  # 1000001 seen again; 1000002 gone; 1000003 rejected by a reader
        {3: a, 1000001: b, 77: d},  # 3 uncertain; 77 added by a reader
    ])  # fmt: skip
    rows = [(3, "ses-00", "present", False, 0, None, None), (3, "ses-01", "present", False, 0, None, None),
            (3, "ses-02", "present", False, 0, None, None), (3, "ses-03", "uncertain", False, 0, "segmenters disagree", None),
            (1000001, "ses-01", "new_candidate", True, 1, "new-lesion candidate, not yet confirmed", None),
            (1000001, "ses-02", "present", True, 1, None, None), (1000001, "ses-03", "present", True, 1, None, None),
            (1000002, "ses-01", "new_candidate", True, 1, "new-lesion candidate, not yet confirmed", None),
            (1000002, "ses-02", "vanished", True, 1, None, None), (1000002, "ses-03", "vanished", True, 1, None, None),
            (1000003, "ses-01", "new_candidate", True, 1, "new-lesion candidate, not yet confirmed", None),
            (1000003, "ses-02", "rejected", True, 1, None, "rejected"),
            (77, "ses-03", "present", True, 3, None, "added")]  # fmt: skip
    status = pd.DataFrame(rows, columns=["lesion_id", "session", "status", "is_new", "first_session_index", "review_reason", "reader"])
    status["by_fallback"] = False
    out = tmp_path / "lesions.parquet"
    measure_patient("P", sessions, out, status=status)
    assert pq.read_schema(out).equals(LESION_SCHEMA)
    frame = pq.read_table(out).to_pandas().set_index(["lesion_id", "session_index"])
    states = frame["new_lesion"].fillna("-").groupby(level=0).unique().map(list).to_dict()
    assert states == {3: ["-"], 77: ["confirmed"], 1000001: ["confirmed"], 1000002: ["equivocal"], 1000003: ["rejected"]}
    assert frame.loc[77, "first_session_index"].tolist() == [3] and frame.loc[3, "first_session_index"].tolist() == [0] * 4
    assert frame.loc[1000001, "is_new"].all() and not frame.loc[3, "is_new"].any()
    assert frame.loc[(77, 3), "reader"] == "added"
    assert 3 not in frame.loc[1000003].index  # rejected at ses-02: not tracked on
    flagged = frame[frame.needs_review]["review_reason"].to_dict()
    assert flagged == {
        (3, 3): "uncertain (segmenters disagree)",
        (1000001, 1): "first sighting of a confirmed new lesion (new-lesion candidate, not yet confirmed)",
        (1000002, 1): "equivocal new lesion (new-lesion candidate, not yet confirmed)",
    }
    assert frame.review_reason.notna().sum() == 3  # null where nothing is to review (1000003 was rejected)
    sessions_out, _ = assess_response(frame.reset_index())
    assert sessions_out.recist_response.tolist() == [None, "PD", "PD", "PD"]
    assert sessions_out.n_new_lesions.tolist() == [0, 1, 1, 2] and sessions_out.n_equivocal_new_lesions.tolist() == [0, 1, 0, 0]
    assert sessions_out.needs_review.tolist() == [False, True, False, True]


def test_a_weak_candidate_seen_again_stays_equivocal_until_a_reader_confirms_it(tmp_path, geometry):
    from lesionlocator.measure.response import assess_response

    a, b, c = (12, 14, 14), (12, 40, 14), (12, 14, 44)
    sessions = _course(tmp_path, geometry, [{3: a}, {3: a, 1000001: b, 1000002: c}, {3: a, 1000001: b, 1000002: c}])
    rows = [(3, "ses-00", "present", 0.9), (3, "ses-01", "present", 0.9), (3, "ses-02", "present", 0.9),
            (1000001, "ses-01", "new_candidate", 3.8), (1000001, "ses-02", "present", 0.8),  # weak: score 3.8 at first sighting
            (1000002, "ses-01", "new_candidate", 11.0), (1000002, "ses-02", "present", 0.8)]  # fmt: skip
    status = pd.DataFrame(rows, columns=["lesion_id", "session", "status", "score"])
    status["is_new"] = status.lesion_id > 1000
    status["first_session_index"] = np.where(status.is_new, 1, 0)
    status["by_fallback"], status["review_reason"], status["reader"] = False, None, None

    def states(confirm_score: float, reader: str | None = None) -> tuple[dict, list]:
        given = status.copy()
        given.loc[(given.lesion_id == 1000001) & (given.session == "ses-02"), "reader"] = reader
        frame = measure_patient("P", sessions, status=given, confirm_score=confirm_score).to_pandas()
        responses = assess_response(frame)[0].recist_response.tolist()
        return frame.groupby("lesion_id")["new_lesion"].unique().map(list).to_dict(), responses, frame

    found, responses, frame = states(6.0)
    assert found[1000001] == ["equivocal"] and found[1000002] == ["confirmed"]
    assert frame[(frame.lesion_id == 1000001)].needs_review.all()  # both sessions flagged for a reader
    assert responses == [None, "PD", "PD"]  # PD through the strong candidate only
    assert states(6.0, reader="confirmed")[0][1000001] == ["confirmed"]  # a reader confirms it
    assert states(0.0)[0][1000001] == ["confirmed"]  # 0: every candidate seen again is confirmed
    status.loc[status.lesion_id == 1000002, "score"] = 4.0  # both weak: nothing confirms a progression
    assert states(6.0)[1] == [None, "SD", "SD"]


def test_old_status_table_means_not_new_and_nothing_to_review(tmp_path, geometry):
    sessions = _course(tmp_path, geometry, [{3: (12, 14, 14)}, {3: (12, 14, 14), 9: (12, 40, 14)}])
    status = pd.DataFrame({"lesion_id": [3, 3, 9], "session": ["ses-00", "ses-01", "ses-01"], "status": ["present"] * 3,
                           "by_fallback": [False] * 3})  # fmt: skip
    frame = measure_patient("P", sessions, status=status).to_pandas()
    assert not frame.is_new.any() and frame.new_lesion.isna().all() and frame.reader.isna().all()
    assert not frame.needs_review.any() and frame.review_reason.isna().all()
    assert frame.set_index("lesion_id").loc[9, "first_session_index"] == 1


def test_bad_reader_value(tmp_path, geometry):
    label_path = write_labels(np.zeros(geometry.shape_zyx), geometry, tmp_path / "l.nii.gz")
    bad = pd.DataFrame({"lesion_id": [1], "session": ["s"], "status": ["present"], "reader": ["approved"]})
    with pytest.raises(InputError, match="unknown reader"):
        measure_patient("P", [("s", None, label_path)], status=bad)
