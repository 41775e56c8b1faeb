"""Per-lesion measurements on instance label maps: volume, RECIST diameters, centroid, intensity.

Frames: label maps and images are numpy arrays in voxel index order ``(z, y, x)`` with a
:class:`lesionlocator.core.io.Geometry`; every length is in millimetres of physical space and every
position is world mm (LPS, ``x y z``).

Diameters follow RECIST 1.1 (Eisenhauer et al., Eur J Cancer 2009;45:228-247) on the *axial plane of
the image's own orientation*: each slice along the array's first axis (the image's slice axis) is a
plane; in-plane distances use the real pixel spacing (the direction matrix is orthonormal, so it
does not change in-plane lengths). On each slice the lesion's outline is the polygon through the
midpoints of its boundary pixel edges; its convex hull is what a caliper sees. The **longest
diameter** is the longest distance between two hull points over all slices; the **short axis** is
the longest chord of that same slice's hull perpendicular to the longest diameter. A lesion made of
several 3D connected fragments (a split) gets the sum of its fragments' longest diameters, as RECIST
1.1 asks; its short axis and slice are those of the fragment with the longest diameter.

Each row also carries the **slice thickness** of its session's image: the spacing (mm) along the
array's first axis, the slice axis the diameters are measured across. (The image grid knows the
distance between slices, not the DICOM reconstruction thickness; for contiguous slices they agree.)
RECIST 1.1 raises the measurable minimum to twice the slice thickness when slices are thicker than
5 mm (:mod:`lesionlocator.measure.response`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import cc3d
import numpy as np
import pandas as pd
import pyarrow as pa
from scipy import ndimage
from scipy.spatial import ConvexHull

from lesionlocator.core.errors import InputError
from lesionlocator.core.io import Geometry, geometry_difference, read_geometry, read_image, write_patient_table
from lesionlocator.measure.response import READER_ACTIONS, review_columns

log = logging.getLogger(__name__)

#: Tracking states a lesion can have at a session (the tracking stage's status table).
STATUSES = ("present", "vanished", "out_of_fov", "merged", "split", "not_found", "uncertain", "lost", "new_candidate", "rejected")

#: One row per lesion x session. Identical for every patient, with or without lesions.
LESION_SCHEMA = pa.schema(
    [
        pa.field("patient", pa.string(), nullable=False),
        pa.field("session", pa.string(), nullable=False),
        pa.field("session_index", pa.int32(), nullable=False),
        pa.field("lesion_id", pa.int64(), nullable=False),
        pa.field("status", pa.string(), nullable=False),
        pa.field("by_fallback", pa.bool_(), nullable=False),  # the mask is the fallback segmenter's
        pa.field("is_new", pa.bool_(), nullable=False),  # first seen after baseline (a candidate, a reader's addition)
        pa.field("first_session_index", pa.int32(), nullable=False),  # where the lesion was first seen
        pa.field("new_lesion", pa.string()),  # confirmed | equivocal | rejected over the patient's sessions; null: not new
        pa.field("reader", pa.string()),  # corrected | added | confirmed | rejected at this session; null: none
        pa.field("needs_review", pa.bool_(), nullable=False),
        pa.field("review_reason", pa.string()),  # why it needs review; null: it does not (see measure.response)
        pa.field("organ", pa.string()),
        pa.field("n_fragments", pa.int32(), nullable=False),
        pa.field("voxel_count", pa.int64(), nullable=False),
        pa.field("volume_ml", pa.float64(), nullable=False),
        pa.field("longest_diameter_mm", pa.float64(), nullable=False),
        pa.field("short_axis_mm", pa.float64(), nullable=False),
        pa.field("diameter_slice", pa.int32()),
        pa.field("slice_thickness_mm", pa.float64()),  # spacing along the image's slice axis; null: unknown
        pa.field("centroid_x_mm", pa.float64()),
        pa.field("centroid_y_mm", pa.float64()),
        pa.field("centroid_z_mm", pa.float64()),
        pa.field("mean_intensity", pa.float64()),
    ]
)

#: Columns of the optional status table the tracking stage writes (it may add :data:`OPTIONAL_STATUS_COLUMNS`).
STATUS_COLUMNS = ("lesion_id", "session", "status")
#: Optional status table columns; a missing one means: no organ, not the fallback's mask, not new, no reader, no review.
OPTIONAL_STATUS_COLUMNS = ("organ", "by_fallback", "is_new", "first_session_index", "review_reason", "reader")
#: Columns of :data:`LESION_SCHEMA` that come from the status table and the patient's course, not from the voxels.
_COURSE_COLUMNS = ("patient", "session", "session_index", "status", "by_fallback", "organ", "is_new", "first_session_index",
                   "new_lesion", "reader", "needs_review", "review_reason")  # fmt: skip


@dataclass(frozen=True)
class SliceDiameters:
    """RECIST diameters of one lesion (mm) and the slice (array axis 0 index) they lie on."""

    longest_mm: float
    short_mm: float
    slice_index: int | None


def _outline_points(mask2d: np.ndarray) -> np.ndarray:
    """Midpoints of the outer pixel edges of a 2D mask, as continuous (row, col) indices."""
    rows = np.flatnonzero(mask2d.any(axis=1))
    cols = np.flatnonzero(mask2d.any(axis=0))
    row_first = mask2d[rows].argmax(axis=1)
    row_last = mask2d.shape[1] - 1 - mask2d[rows, ::-1].argmax(axis=1)
    col_first = mask2d[:, cols].argmax(axis=0)
    col_last = mask2d.shape[0] - 1 - mask2d[::-1, cols].argmax(axis=0)
    points = [
        np.column_stack([rows, row_first - 0.5]),
        np.column_stack([rows, row_last + 0.5]),
        np.column_stack([col_first - 0.5, cols]),
        np.column_stack([col_last + 0.5, cols]),
    ]
    return np.concatenate(points).astype(float)


def slice_diameters(mask2d: np.ndarray, spacing_rc: tuple[float, float]) -> tuple[float, float]:
    """Longest diameter and longest perpendicular chord (mm) of one 2D cross-section.

    ``spacing_rc`` is the pixel spacing along (rows, columns) in mm. Returns ``(0, 0)`` for an
    empty mask.
    """
    if not mask2d.any():
        return 0.0, 0.0
    points = _outline_points(mask2d) * np.asarray(spacing_rc, dtype=float)
    hull = ConvexHull(points)
    vertices = points[hull.vertices]
    deltas = vertices[:, None, :] - vertices[None, :, :]
    distances = np.sqrt((deltas**2).sum(-1))
    a, b = np.unravel_index(np.argmax(distances), distances.shape)
    longest = float(distances[a, b])
    along = (vertices[b] - vertices[a]) / longest
    perpendicular = np.array([-along[1], along[0]])
    # Longest chord of the convex hull in the perpendicular direction: the chord length is a
    # concave piecewise-linear function of the offset along the long axis, so its maximum lies on
    # a line through a hull vertex. Each facet n.x + c <= 0 bounds s on the line p + s * perp.
    normals, offsets = hull.equations[:, :2], hull.equations[:, 2]
    slope = normals @ perpendicular  # (facets,)
    rhs = -(vertices @ normals.T + offsets)  # (vertices, facets)
    with np.errstate(divide="ignore", invalid="ignore"):
        bound = rhs / slope
    upper = np.where(slope > 1e-12, bound, np.inf).min(axis=1)
    lower = np.where(slope < -1e-12, bound, -np.inf).max(axis=1)
    short = float(np.clip(upper - lower, 0.0, None).max())
    return longest, min(short, longest)


def lesion_diameters(mask: np.ndarray, spacing_xyz: Sequence[float]) -> SliceDiameters:
    """RECIST diameters of one connected lesion mask ``(z, y, x)``: longest over all slices."""
    spacing_rc = (float(spacing_xyz[1]), float(spacing_xyz[0]))
    best = SliceDiameters(0.0, 0.0, None)
    for z in np.flatnonzero(mask.any(axis=(1, 2))):
        longest, short = slice_diameters(mask[z], spacing_rc)
        if longest > best.longest_mm + 1e-9:
            best = SliceDiameters(longest, short, int(z))
    return best


def fragment_diameters(mask: np.ndarray, spacing_xyz: Sequence[float]) -> tuple[SliceDiameters, int]:
    """Diameters of a lesion that may consist of several 3D fragments (26-connected components).

    The longest diameter is the sum over fragments (RECIST 1.1, lesions that split); short axis
    and slice come from the fragment with the longest diameter. Returns the diameters and the
    number of fragments.
    """
    components, n = cc3d.connected_components(mask.astype(np.uint8), connectivity=26, return_N=True)
    if n <= 1:
        return lesion_diameters(mask, spacing_xyz), int(n)
    parts = [lesion_diameters(sub, spacing_xyz) for sub in _split(components, n)]
    largest = max(parts, key=lambda p: (p.longest_mm, -(p.slice_index or 0)))
    total = float(sum(p.longest_mm for p in parts))
    return SliceDiameters(total, largest.short_mm, largest.slice_index), int(n)


def _split(components: np.ndarray, n: int) -> Iterable[np.ndarray]:
    for label in range(1, n + 1):
        yield components == label


def measure_labels(
    labels: np.ndarray,
    geometry: Geometry,
    image: np.ndarray | None = None,
) -> pd.DataFrame:
    """Measure every lesion of one instance label map.

    ``labels`` is a ``(z, y, x)`` integer array (0 = background, each positive value one lesion)
    and ``image`` the matching intensity array or None. Returns one row per lesion ID with the
    measurement columns of :data:`LESION_SCHEMA` (lesion_id, n_fragments, voxel_count, volume_ml,
    longest_diameter_mm, short_axis_mm, diameter_slice, slice_thickness_mm (the geometry's spacing
    along array axis 0), centroid_*_mm (world LPS), mean_intensity), sorted by lesion_id.
    """
    if labels.shape != tuple(geometry.shape_zyx):
        raise ValueError(f"label array shape {labels.shape} does not match geometry {geometry.shape_zyx} (z, y, x)")
    columns = [f.name for f in LESION_SCHEMA if f.name not in _COURSE_COLUMNS]
    foreground = labels > 0
    values = labels[foreground]
    ids = np.unique(values)
    if ids.size == 0:
        return pd.DataFrame({c: pd.Series(dtype=_pandas_dtype(c)) for c in columns})
    compact = np.zeros(labels.shape, dtype=np.int32)
    compact[foreground] = np.searchsorted(ids, values) + 1
    slices = ndimage.find_objects(compact)
    rows = []
    voxel_ml = geometry.voxel_volume_ml()
    slice_thickness = float(geometry.spacing[2])
    for k, (lesion_id, box) in enumerate(zip(ids, slices), start=1):
        crop = compact[box] == k
        count = int(crop.sum())
        diameters, n_fragments = fragment_diameters(crop, geometry.spacing)
        index = np.argwhere(crop).mean(axis=0) + np.array([s.start for s in box])
        centroid = geometry.index_to_world(index)
        mean_intensity = float(np.asarray(image[box][crop], dtype=np.float64).mean()) if image is not None else np.nan
        rows.append(
            (
                int(lesion_id),
                n_fragments,
                count,
                count * voxel_ml,
                diameters.longest_mm,
                diameters.short_mm,
                None if diameters.slice_index is None else diameters.slice_index + box[0].start,
                slice_thickness,
                *map(float, centroid),
                mean_intensity,
            )
        )
    return pd.DataFrame.from_records(rows, columns=columns)


def _pandas_dtype(column: str) -> str:
    field = LESION_SCHEMA.field(column)
    if pa.types.is_integer(field.type):
        return "int64" if not field.nullable else "Int64"
    if pa.types.is_floating(field.type):
        return "float64"
    return "object"


def lesion_table(frame: pd.DataFrame) -> pa.Table:
    """The Arrow table of a lesions frame, with exactly :data:`LESION_SCHEMA` (no pandas metadata)."""
    frame = frame.reindex(columns=LESION_SCHEMA.names)
    table = pa.Table.from_pandas(frame, schema=LESION_SCHEMA, preserve_index=False)
    return table.replace_schema_metadata(None)


def _read_status_table(status: pd.DataFrame | str | Path | None) -> pd.DataFrame | None:
    if status is None:
        return None
    source = status if not isinstance(status, pd.DataFrame) else "status table"
    if not isinstance(status, pd.DataFrame):
        path = Path(status)
        if not path.exists():
            raise InputError(path, "file not found")
        status = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path, sep=None, engine="python")
    missing = [c for c in STATUS_COLUMNS if c not in status.columns]
    if missing:
        raise InputError(source, f"status table lacks column(s) {', '.join(missing)}")
    bad = sorted(set(status["status"].astype(str)) - set(STATUSES))
    if bad:
        raise InputError(source, f"unknown status value(s) {bad}; expected one of {list(STATUSES)}")
    if "reader" in status.columns:
        bad = sorted(set(status["reader"].dropna().astype(str)) - set(READER_ACTIONS))
        if bad:
            raise InputError(source, f"unknown reader value(s) {bad}; expected null or one of {list(READER_ACTIONS)}")
    status = status.copy()
    status["lesion_id"] = status["lesion_id"].astype("int64")
    status["session"] = status["session"].astype(str)
    status["status"] = status["status"].astype(str)
    if status.duplicated(["lesion_id", "session"]).any():
        raise InputError(source, "status table has more than one row for the same lesion_id and session")
    return status


def measure_patient(
    patient: str,
    sessions: Sequence[tuple[str, str | Path | None, str | Path]],
    output: str | Path | Sequence[str | Path] | None = None,
    status: pd.DataFrame | str | Path | None = None,
    confirm_score: float = 0.0,
) -> pa.Table:
    """Measure every tracked lesion of one patient at every session and write the lesion table.

    ``sessions`` lists ``(session, image_path or None, labels_path)`` in time order (the position is
    ``session_index``). ``status`` is the tracking status table (columns lesion_id, session, status
    and optionally organ, by_fallback, is_new, first_session_index, review_reason and reader: every
    tracking row, new-lesion candidates included) as a frame or a Parquet/TSV path, or None. A
    missing optional column means no organ, not the fallback's mask, not new, no reader, no review.
    ``confirm_score``: a new-lesion candidate whose ``score`` on its ``new_candidate`` row (the detector's,
    robust SDs) is below this is weak: seen again it stays equivocal until a reader confirms it
    (:func:`~lesionlocator.measure.response.new_lesion_states`; ``track.candidate_confirm_score``).

    Rows: a lesion gets a row at every session from its first appearance on (label voxels or a
    status entry), until a reader rejects it; a lesion without voxels at a session has zero size,
    null centroid, and the status the table gives (``vanished`` when there is no table).

    New lesions (``is_new`` on any of its rows, or a ``new_candidate`` row) keep ``is_new`` on every
    row; ``first_session_index`` is the table's (else the lesion's first row). ``new_lesion``,
    ``needs_review`` and ``review_reason`` (the tracker's reason, labelled) follow over the patient's
    sessions: :func:`lesionlocator.measure.response.review_columns`.

    Every input is checked before any measurement; ``output`` (a path or several: Parquet, or Arrow
    IPC for a path ending in ``.arrow``) is written atomically with :data:`LESION_SCHEMA`, also when
    the patient has no lesions.
    """
    status_frame = _read_status_table(status)
    geometries = []
    for session, image_path, labels_path in sessions:
        geometry = read_geometry(labels_path)
        if image_path is not None:
            difference = geometry_difference(read_geometry(image_path), geometry)
            if difference is not None:
                raise InputError(labels_path, f"label map geometry does not match its image {image_path}: {difference}")
        geometries.append(geometry)

    organs: dict[int, str] = {}
    if status_frame is not None and "organ" in status_frame.columns:
        for lesion_id, organ in status_frame.dropna(subset=["organ"]).groupby("lesion_id")["organ"].first().items():
            organs[int(lesion_id)] = str(organ)
    status_lookup = (
        {(int(r.lesion_id), r.session): r.status for r in status_frame.itertuples()} if status_frame is not None else {}
    )
    by_fallback = (
        {(int(r.lesion_id), r.session) for r in status_frame.itertuples() if bool(r.by_fallback)}
        if status_frame is not None and "by_fallback" in status_frame.columns
        else set()
    )
    reader = _row_values(status_frame, "reader")
    tracker_reason = _row_values(status_frame, "review_reason")
    new_ids, first_index = _new_lesions(status_frame)
    known_sessions = {s for s, _, _ in sessions}
    if status_frame is not None:
        unknown = sorted(set(status_frame["session"]) - known_sessions)
        if unknown:
            log.warning("%s: status table names sessions %s that are not measured; ignored", patient, unknown)

    per_session = []
    for index, (session, image_path, labels_path) in enumerate(sessions):
        label_image = read_image(labels_path, check_finite=False)
        labels = _label_array(label_image, labels_path)
        image = None
        if image_path is not None:
            from SimpleITK import GetArrayFromImage

            image = GetArrayFromImage(read_image(image_path))
        measured = measure_labels(labels, geometries[index], image)
        per_session.append((index, session, measured))
        log.debug("%s %s: %d lesion(s)", patient, session, len(measured))

    rows = []
    seen: set[int] = set()
    for index, session, measured in per_session:
        present = set(measured["lesion_id"].tolist())
        listed = {lid for (lid, s) in status_lookup if s == session}
        for lesion_id in sorted(present | listed | seen):
            state = status_lookup.get((lesion_id, session))
            if lesion_id in present:
                record = measured.loc[measured["lesion_id"] == lesion_id].iloc[0].to_dict()
                state = state or "present"
                if state in ("vanished", "out_of_fov", "lost", "rejected"):
                    log.warning("%s %s: lesion %d has voxels but status %r", patient, session, lesion_id, state)
            else:
                record = {
                    "lesion_id": lesion_id, "n_fragments": 0, "voxel_count": 0, "volume_ml": 0.0,
                    "longest_diameter_mm": 0.0, "short_axis_mm": 0.0, "diameter_slice": None,
                    "slice_thickness_mm": float(geometries[index].spacing[2]),
                    "centroid_x_mm": np.nan, "centroid_y_mm": np.nan, "centroid_z_mm": np.nan,
                    "mean_intensity": np.nan,
                }  # fmt: skip
                state = state or "vanished"
            record.update(
                patient=patient, session=session, session_index=index, status=state,
                by_fallback=(lesion_id, session) in by_fallback, organ=organs.get(lesion_id),
                is_new=lesion_id in new_ids, first_session_index=first_index.get(lesion_id),
                reader=reader.get((lesion_id, session)), review_reason=tracker_reason.get((lesion_id, session)),
            )  # fmt: skip
            rows.append(record)
        rejected = {lid for lid in listed if status_lookup[(lid, session)] == "rejected"} - present
        seen = (seen | present | listed) - rejected  # a rejected lesion is not tracked on
    if rows:
        frame = pd.DataFrame.from_records(rows, columns=LESION_SCHEMA.names)
        first_row = frame.groupby("lesion_id")["session_index"].transform("min")
        frame["first_session_index"] = frame["first_session_index"].astype("Float64").fillna(first_row)
        frame = review_columns(frame, weak=_weak_candidates(patient, status_frame, confirm_score))
    else:
        frame = _empty_lesion_frame()
    table = lesion_table(_nullable(frame))
    for path in [output] if isinstance(output, (str, Path)) else output or ():
        write_patient_table(table, path)
        log.info("%s: %d lesion-session row(s) -> %s", patient, table.num_rows, path)
    return table


def _row_values(status: pd.DataFrame | None, column: str) -> dict[tuple[int, str], str]:
    """The non-null values of an optional status table column by (lesion_id, session)."""
    if status is None or column not in status.columns:
        return {}
    rows = status[status[column].notna()]
    return {(int(i), s): str(v) for i, s, v in zip(rows["lesion_id"], rows["session"], rows[column])}


def _weak_candidates(patient: str, status: pd.DataFrame | None, confirm_score: float) -> list[tuple[str, int]]:
    """(patient, lesion_id) of the new-lesion candidates whose detector score at first sighting (the
    ``score`` of their ``new_candidate`` row) is below ``confirm_score``."""
    if status is None or "score" not in status.columns or confirm_score <= 0:
        return []
    first = status[status["status"].eq("new_candidate")]
    weak = first.loc[first["score"].astype(float) < confirm_score, "lesion_id"]
    return [(patient, int(i)) for i in sorted(set(weak.astype("int64")))]


def _new_lesions(status: pd.DataFrame | None) -> tuple[set[int], dict[int, int]]:
    """The IDs of the new lesions (``is_new`` on a row, or a ``new_candidate`` row) and the
    ``first_session_index`` the table gives for each lesion (its smallest)."""
    if status is None:
        return set(), {}
    new = status["status"].eq("new_candidate")
    if "is_new" in status.columns:
        new |= status["is_new"].fillna(False).astype(bool)
    first: dict[int, int] = {}
    if "first_session_index" in status.columns:
        given = status.dropna(subset=["first_session_index"]).groupby("lesion_id")["first_session_index"].min()
        first = {int(k): int(v) for k, v in given.items()}
    return set(status.loc[new, "lesion_id"].astype("int64").tolist()), first


def _empty_lesion_frame() -> pd.DataFrame:
    return LESION_SCHEMA.empty_table().to_pandas()


def _nullable(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    for column in ("slice_thickness_mm", "centroid_x_mm", "centroid_y_mm", "centroid_z_mm", "mean_intensity"):
        frame[column] = frame[column].astype("float64")
    frame["diameter_slice"] = frame["diameter_slice"].astype("Int64")
    for column in ("organ", "new_lesion", "reader", "review_reason"):
        frame[column] = frame[column].astype(object).where(frame[column].notna(), None)
    for column in ("by_fallback", "is_new", "needs_review"):
        frame[column] = frame[column].astype(bool)
    frame["first_session_index"] = frame["first_session_index"].astype("int32")
    return frame


def _label_array(image, path) -> np.ndarray:
    import SimpleITK as sitk

    array = sitk.GetArrayFromImage(image)
    if not np.issubdtype(array.dtype, np.integer):
        if not np.all(np.mod(array, 1) == 0):
            raise InputError(path, f"label map holds non-integer values (pixel type {image.GetPixelIDTypeAsString()})")
        array = array.astype(np.int64)
    if array.min() < 0:
        raise InputError(path, "label map holds negative lesion IDs")
    if array.max() > 2**31 - 1:
        raise InputError(path, f"lesion ID {int(array.max())} exceeds 2**31-1")
    return array
