"""Cohort ingest: discover a BIDS-like cohort (or read a cohort.tsv), validate it, write a manifest.

BIDS-like layout (labels are ``[A-Za-z0-9]+``)::

    <root>/sub-<patient>/sub-<patient>_sessions.tsv     optional: session_id + acq_time or order
    <root>/sub-<patient>/ses-<session>/<image>          one image: .nii.gz .nii .nrrd .mha .mhd,
                                                        or a sub-folder holding one DICOM series
    <root>/sub-<patient>/ses-<session>/prompts.json     optional; at the baseline: the lesions to track;
                                                        at a follow-up: a reader's corrections, additions
                                                        and reviews of candidates (core/prompts.py)
    <root>/sub-<patient>/ses-<session>/prompt_mask.nii.gz   optional (instance mask), same roles
    <root>/derivatives/groundtruth/sub-<patient>/ses-<session>/<lesion instance mask>   optional

The manifest has one row per patient x session, validated row by row against :class:`ManifestRow`.

Nothing is dropped silently: a folder or file whose name looks like a patient or session with a
near-miss name (``Sub-P002``, ``sub_P003``, ``ses_03``, ``Ses-04``, ``session1``) is logged as a
warning and listed in ``manifest.attrs["ignored"]``; with ``strict`` it is an error.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import re
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
import SimpleITK as sitk
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lesionlocator.core.errors import InputError, LesionLocatorError
from lesionlocator.core.hashing import files_sha256
from lesionlocator.core.io import (
    IMAGE_SUFFIXES,
    Geometry,
    check_plausible_geometry,
    geometry_difference,
    image_suffix,
    is_dicom_dir,
    read_geometry,
    read_image,
    write_parquet,
)
from lesionlocator.core.layout import LABEL_PATTERN
from lesionlocator.core.prompts import check_lesion_labels, check_prompt_mask_labels, check_prompts_inside, read_prompts
from lesionlocator.core.schema import arrow_schema

log = logging.getLogger(__name__)

PROMPT_MASK_STEM = "prompt_mask"
GROUNDTRUTH_DIR = Path("derivatives") / "groundtruth"
FORMATS = {".nii.gz": "nifti", ".nii": "nifti", ".nrrd": "nrrd", ".mha": "metaimage", ".mhd": "metaimage"}


class CohortError(LesionLocatorError):
    """Several problems found in one cohort; the message lists each (file: problem)."""

    def __init__(self, problems: list[InputError]):
        self.problems = problems
        lines = [f"{len(problems)} problem(s) in the cohort:"] + [f"  {p}" for p in problems]
        super().__init__("\n".join(lines))


class SessionEntry(BaseModel):
    """One patient x session as found on disk, before validation of the files."""

    model_config = ConfigDict(extra="forbid")

    patient: str
    session: str
    image: Path | None
    acq_time: str | None = None
    order: float | None = None
    prompts: Path | None = None
    prompt_mask: Path | None = None
    groundtruth: Path | None = None
    source: Path = Field(description="The folder or table row this entry came from (for errors).")
    order_source: Path | None = Field(None, description="The sessions.tsv or cohort.tsv that gave acq_time/order (for errors).")


class ManifestRow(BaseModel):
    """One validated row of the manifest (one patient x session)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    patient: str = Field(pattern=LABEL_PATTERN.pattern, description="Patient label.")
    session: str = Field(pattern=LABEL_PATTERN.pattern, description="Session label.")
    session_index: int = Field(ge=0, description="0 for the baseline, then in time order.", json_schema_extra={"arrow": "int32"})
    is_baseline: bool = Field(description="True for the first session of the patient.")
    acq_time: str | None = Field(description="Acquisition date/time (ISO 8601) when known.")
    image: str = Field(description="Image file or DICOM series folder.")
    image_format: str = Field(description="nifti, nrrd, metaimage or dicom.")
    size: list[int] = Field(min_length=3, max_length=3, description="Image size (x, y, z) in voxels.")
    spacing: list[float] = Field(min_length=3, max_length=3, description="Voxel spacing (x, y, z), mm.")
    origin: list[float] = Field(min_length=3, max_length=3, description="World position of voxel 0, mm (LPS).")
    direction: list[float] = Field(min_length=9, max_length=9, description="Direction cosines, row-major.")
    prompts: str | None = Field(description="prompts.json of the session, if any (a follow-up's: a reader's corrections and reviews).")
    n_prompts: int = Field(ge=0, description="Number of lesions prompted in prompts.json.", json_schema_extra={"arrow": "int32"})
    prompt_mask: str | None = Field(description="Lesion instance mask used as prompt, if any.")
    groundtruth: str | None = Field(description="Ground-truth lesion instance mask, if any.")
    fingerprint: str = Field(
        pattern=r"^[0-9a-f]{64}$",
        description="SHA-256 over the bytes of the image, prompts, prompt mask and ground truth: "
        "a session whose fingerprint is unchanged needs no recomputation.",
    )
    image_sha256: str = Field(
        pattern=r"^[0-9a-f]{64}$",
        description="SHA-256 over the image's bytes alone: what registration depends on (a reader's new prompts "
        "at a session do not register it again).",
    )
    prompts_sha256: str = Field(
        pattern=r"^[0-9a-f]{64}$",
        description="SHA-256 over the session's prompts.json and prompt mask (markers when absent): what the "
        "segmentation of that session depends on besides its image.",
    )


MANIFEST_SCHEMA = arrow_schema(ManifestRow)


def natural_key(label: str) -> list:
    """Sort key that orders ``2`` before ``10`` (natural order of labels)."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", label)]


def check_label(label: str, where: Path, kind: str) -> None:
    if not LABEL_PATTERN.fullmatch(label):  # fullmatch: "$" alone would accept a trailing newline
        raise InputError(where, f"{kind} label {label!r} must match [A-Za-z0-9]+ (no path characters)")


def _scan(folder: Path) -> list[os.DirEntry]:
    """The entries of ``folder``, sorted by name (one directory read; whether an entry is a file or a
    folder comes with it, without a stat on most file systems); an unreadable folder is an
    :class:`InputError` saying why."""
    try:
        with os.scandir(folder) as entries:
            return sorted(entries, key=lambda entry: entry.name)
    except OSError as err:
        raise InputError(folder, f"cannot read the folder ({err.strerror or err})") from None


def _entry_is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False


def _image_suffix(name: str) -> str | None:
    """:func:`~lesionlocator.core.io.image_suffix` of a file name (no path to parse)."""
    lower = name.lower()
    if not lower.endswith(IMAGE_SUFFIXES):
        return None
    for suffix in IMAGE_SUFFIXES:
        if lower.endswith(suffix):
            return suffix


def _single_image(folder: Path, exclude_stem: str | None = None, entries: list[os.DirEntry] | None = None) -> Path | None:
    """The one image of ``folder`` (``entries``: its listing, when already read), or None."""
    candidates = []
    for entry in _scan(folder) if entries is None else entries:
        name = entry.name
        if name.startswith("."):
            continue
        suffix = _image_suffix(name)
        if suffix and entry.is_file():
            if exclude_stem and name[: -len(suffix)] == exclude_stem:
                continue
            candidates.append(folder / name)
        elif entry.is_dir() and is_dicom_dir(folder / name):
            candidates.append(folder / name)
    if len(candidates) > 1:
        names = ", ".join(c.name for c in candidates)
        raise InputError(folder, f"holds {len(candidates)} images ({names}); keep exactly one image per session")
    return candidates[0] if candidates else None


def _prompt_mask(folder: Path, entries: list[os.DirEntry]) -> Path | None:
    for entry in entries:
        if not entry.name.startswith(PROMPT_MASK_STEM):
            continue
        suffix = _image_suffix(entry.name)
        if suffix and entry.name[: -len(suffix)] == PROMPT_MASK_STEM and entry.is_file():
            return folder / entry.name
    return None


def read_tsv(path: Path) -> tuple[list[str], list[tuple[Path, dict[str, str]]]]:
    """The header and rows of a tab-separated UTF-8 table; each row with its ``path:line`` (for errors).

    A row with more or fewer fields than the header is an :class:`InputError` naming its line (a
    short row would otherwise read as missing values); blank lines are skipped.
    """
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            lines = list(csv.reader(handle, delimiter="\t"))
    except OSError as err:
        raise InputError(path, f"cannot read the table ({err.strerror or err})") from None
    except UnicodeDecodeError as err:
        raise InputError(path, f"not UTF-8 text (byte {err.start} is not UTF-8): save it as UTF-8, tab-separated") from None
    except csv.Error as err:
        raise InputError(path, f"not a valid tab-separated table ({err})") from None
    numbered = [(n, fields) for n, fields in enumerate(lines, start=1) if fields]
    if not numbered:
        return [], []
    (_, header), body = numbered[0], numbered[1:]
    rows = []
    for number, fields in body:
        if len(fields) != len(header):
            raise InputError(
                f"{path}:{number}",
                f"row has {len(fields)} field(s) but the header has {len(header)} ({', '.join(header)}); "
                "fields are separated by tabs, an empty value is an empty field",
            )
        rows.append((Path(f"{path}:{number}"), dict(zip(header, fields))))
    return header, rows


def _parse_order(value: str | None, where: Path, session: str) -> float | None:
    """The ``order`` of a session as a finite number; None when the cell is empty."""
    if not value:
        return None
    try:
        order = float(value)
    except ValueError:
        order = math.nan
    if not math.isfinite(order):
        raise InputError(where, f"session {session!r}: order {value!r} is not a number (order is 1, 2, 3, ...)")
    return order


def _read_sessions_tsv(path: Path) -> dict[str, tuple[Path, dict[str, str]]]:
    """``{session label: (path:line, row)}`` of a ``sub-<patient>_sessions.tsv``."""
    header, rows = read_tsv(path)
    if "session_id" not in header:
        raise InputError(path, "needs a session_id column (and acq_time or order)")
    if not ({"acq_time", "order"} & set(header)):
        raise InputError(path, "needs an acq_time or an order column to order the sessions")
    table: dict[str, tuple[Path, dict[str, str]]] = {}
    for where, row in rows:
        label = row["session_id"].removeprefix("ses-")
        if label.lower() in {k.lower() for k in table}:
            raise InputError(path, f"session {label!r} listed twice")
        table[label] = (where, row)
    return table


#: A name that looks like a patient (session) folder but is not ``sub-<label>`` (``ses-<label>``):
#: the prefix in another case, a long form (subject, session), ``_`` or ``.`` or a space instead of
#: ``-``, or no separator before a digit. Group ``label`` is what follows the prefix.
_NEAR_MISS = {
    "patient": (re.compile(r"(?i)^(?:sub|subject)(?:[-_. ]+|(?=[0-9]))(?P<label>[A-Za-z0-9].*)$"), "sub-"),
    "session": (re.compile(r"(?i)^(?:ses|session)(?:[-_. ]+|(?=[0-9]))(?P<label>[A-Za-z0-9].*)$"), "ses-"),
}


def near_miss(path: Path, kind: str) -> InputError | None:
    """An :class:`InputError` saying why ingest ignores ``path`` when its name looks like a ``kind``
    ("patient" or "session") folder but is not one; None when it does not look like one."""
    pattern, prefix = _NEAR_MISS[kind]
    name = path.name
    if name.startswith(prefix):
        if _is_dir(path):
            return None
        return InputError(path, f"ignored: looks like a {kind} folder ({prefix}<label>) but is a file, not a folder")
    match = pattern.match(name)
    if match is None:
        return None
    return InputError(
        path,
        f"ignored: looks like a {kind} folder but {kind} folders are named {prefix}<label> (lower case, '-'): "
        f"rename it {prefix}{match['label']}",
    )


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:
        return False


@dataclass(frozen=True)
class Discovery:
    """What :func:`discover_bids` found: the sessions, and the near-miss names it ignored."""

    entries: list[SessionEntry]
    ignored: list[InputError]


def _warn_ignored(ignored: list[InputError]) -> None:
    """One warning listing every near-miss name ingest ignores."""
    if not ignored:
        return
    log.warning(
        "ignored %d folder(s)/file(s) whose names look like patients or sessions (set cohort.strict: true, or "
        "--strict, to refuse them):\n%s",
        len(ignored), "\n".join(f"  {err}" for err in ignored),
    )


def discover_bids(root: str | Path, strict: bool = False) -> Discovery:
    """Find every patient x session under a BIDS-like ``root`` (files are not opened).

    A folder or file whose name looks like a patient or session but is not ``sub-<label>`` /
    ``ses-<label>`` (or a ``sessions.tsv`` under another name) is ignored: it is listed in
    ``Discovery.ignored`` and logged, or, with ``strict``, is one of the problems raised.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(root, "cohort root is not a folder")
    entries: list[SessionEntry] = []
    problems: list[InputError] = []
    ignored: list[InputError] = []
    seen_patients: dict[str, str] = {}
    has_groundtruth = (root / GROUNDTRUTH_DIR).is_dir()
    for entry in _scan(root):
        if entry.name.startswith("."):
            continue
        if not (entry.name.startswith("sub-") and _entry_is_dir(entry)):
            if (miss := near_miss(root / entry.name, "patient")) is not None:
                ignored.append(miss)
            continue
        subject_dir, patient = root / entry.name, entry.name[len("sub-"):]
        try:
            check_label(patient, subject_dir, "patient")
            if patient.lower() in seen_patients:
                raise InputError(subject_dir, f"patient label duplicates sub-{seen_patients[patient.lower()]} (labels are compared case-insensitively)")
            seen_patients[patient.lower()] = patient
            entries.extend(_discover_subject(root, subject_dir, patient, ignored, has_groundtruth))
        except InputError as err:
            problems.append(err)
        except OSError as err:  # a folder or file below the patient that cannot be listed or examined
            problems.append(InputError(err.filename or subject_dir, f"cannot read it ({err.strerror or err})"))
    if strict:
        problems.extend(ignored)
    if problems:
        raise problems[0] if len(problems) == 1 else CohortError(problems)
    if not entries:
        raise InputError(root, "cohort is empty: no sub-<patient>/ses-<session>/ folders found")
    _warn_ignored(ignored)
    return Discovery(entries, ignored)


def _discover_subject(root: Path, subject_dir: Path, patient: str, ignored: list[InputError],
                      has_groundtruth: bool = True) -> list[SessionEntry]:  # fmt: skip
    """The sessions of one patient folder; each folder is listed once (``has_groundtruth``: whether
    the cohort has a ground-truth folder at all)."""
    sessions_tsv = subject_dir / f"sub-{patient}_sessions.tsv"
    session_dirs = []
    names = set()
    for entry in _scan(subject_dir):
        name = entry.name
        names.add(name)
        if name.startswith("."):
            continue
        if name.startswith("ses-") and _entry_is_dir(entry):
            session_dirs.append(subject_dir / name)
        elif (miss := near_miss(subject_dir / name, "session")) is not None:
            ignored.append(miss)
        elif name.lower().endswith("sessions.tsv") and name != sessions_tsv.name:
            ignored.append(InputError(subject_dir / name, f"ignored: the session table of this patient is named {sessions_tsv.name}"))
    if not session_dirs:
        raise InputError(subject_dir, "patient has no ses-<session>/ folder")
    order_table = _read_sessions_tsv(sessions_tsv) if sessions_tsv.name in names and sessions_tsv.exists() else None
    entries = []
    seen: dict[str, str] = {}
    for session_dir in session_dirs:
        session = session_dir.name[len("ses-"):]
        check_label(session, session_dir, "session")
        if session.lower() in seen:
            raise InputError(session_dir, f"session label duplicates ses-{seen[session.lower()]} (labels are compared case-insensitively)")
        seen[session.lower()] = session
        where, row = sessions_tsv, {}
        if order_table is not None:
            if session not in order_table:
                raise InputError(sessions_tsv, f"session {session!r} has a folder but no row")
            where, row = order_table[session]
        gt_dir = root / GROUNDTRUTH_DIR / f"sub-{patient}" / f"ses-{session}" if has_groundtruth else None
        listing = _scan(session_dir)
        prompts = session_dir / "prompts.json" if any(e.name == "prompts.json" for e in listing) else None
        entries.append(
            SessionEntry(
                patient=patient,
                session=session,
                image=_single_image(session_dir, exclude_stem=PROMPT_MASK_STEM, entries=listing),
                acq_time=row.get("acq_time") or None,
                order=_parse_order(row.get("order"), where, session),
                prompts=prompts if prompts is not None and prompts.exists() else None,
                prompt_mask=_prompt_mask(session_dir, listing),
                groundtruth=_single_image(gt_dir) if gt_dir is not None and gt_dir.is_dir() else None,
                source=session_dir,
                order_source=sessions_tsv if order_table is not None else None,
            )
        )
    if order_table is not None:
        missing = sorted(set(order_table) - set(seen.values()))
        if missing:
            raise InputError(sessions_tsv, f"lists session(s) {missing} that have no folder")
    return entries


TABLE_COLUMNS = {"patient", "session", "image", "acq_time", "order", "prompts", "prompt_mask", "groundtruth"}


def read_cohort_table(path: str | Path) -> list[SessionEntry]:
    """Read a ``cohort.tsv``: columns patient, session, image (required); acq_time or order,
    prompts, prompt_mask, groundtruth (optional). Relative paths are relative to the table's folder."""
    path = Path(path)
    header, rows = read_tsv(path)
    columns = set(header)
    missing = {"patient", "session", "image"} - columns
    if missing:
        raise InputError(path, f"missing column(s) {sorted(missing)}")
    unknown = columns - TABLE_COLUMNS
    if unknown:
        raise InputError(path, f"unknown column(s) {sorted(unknown)}; allowed: {sorted(TABLE_COLUMNS)}")
    if not rows:
        raise InputError(path, "cohort is empty: the table has no rows")
    base = path.parent

    def resolve(value: str | None) -> Path | None:
        return (base / value) if value else None

    entries = []
    for where, row in rows:
        check_label(row["patient"], where, "patient")
        check_label(row["session"], where, "session")
        entries.append(
            SessionEntry(
                patient=row["patient"],
                session=row["session"],
                image=resolve(row["image"]),
                acq_time=row.get("acq_time") or None,
                order=_parse_order(row.get("order"), where, row["session"]),
                prompts=resolve(row.get("prompts")),
                prompt_mask=resolve(row.get("prompt_mask")),
                groundtruth=resolve(row.get("groundtruth")),
                source=where,
                order_source=path,
            )
        )
    return entries


def _acq_times(entries: list[SessionEntry]) -> list[datetime]:
    """The acq_time of each session as a datetime; all with a time zone or all without (the two
    cannot be compared)."""
    times = []
    for e in entries:
        try:
            times.append(datetime.fromisoformat(e.acq_time))
        except ValueError:
            raise InputError(e.order_source or e.source, f"session {e.session!r}: acq_time {e.acq_time!r} is not an ISO 8601 date/time") from None
    aware = [e for e, t in zip(entries, times) if t.utcoffset() is not None]
    if aware and len(aware) < len(entries):
        naive = next(e for e, t in zip(entries, times) if t.utcoffset() is None)
        raise InputError(
            entries[0].order_source or entries[0].source,
            f"patient {entries[0].patient}: acq_time mixes values with a time zone (session {aware[0].session!r}: "
            f"{aware[0].acq_time!r}) and without (session {naive.session!r}: {naive.acq_time!r}), which cannot be "
            "ordered: give every session of the patient a time zone (+01:00, Z), or none",
        )
    return times


def _order_sessions(entries: list[SessionEntry]) -> list[SessionEntry]:
    """Sort one patient's sessions: by acq_time, else by order, else natural order of labels."""
    if all(e.acq_time for e in entries):
        keys = _acq_times(entries)
    elif all(e.order is not None for e in entries):
        keys = [e.order for e in entries]
    elif any(e.acq_time for e in entries) or any(e.order is not None for e in entries):
        raise InputError(entries[0].order_source or entries[0].source, f"patient {entries[0].patient}: acq_time/order given for some sessions but not all")
    else:
        keys = [natural_key(e.session) for e in entries]
    if len({tuple(k) if isinstance(k, list) else k for k in keys}) != len(keys):  # aware times: equal instants
        raise InputError(entries[0].order_source or entries[0].source, f"patient {entries[0].patient}: two sessions share the same acquisition time/order")
    return [e for _, e in sorted(zip(keys, entries), key=lambda pair: pair[0])]


def plan_sessions(entries: list[SessionEntry]) -> dict[str, list[str]]:
    """Patients (natural order) and their sessions in time order, without opening any image.

    This is what the workflow needs at parse time to lay out its jobs; ingest validates the files.
    """
    by_patient: dict[str, list[SessionEntry]] = {}
    for entry in entries:
        by_patient.setdefault(entry.patient, []).append(entry)
    return {p: [e.session for e in _order_sessions(by_patient[p])] for p in sorted(by_patient, key=natural_key)}


def discover(root: str | Path | None = None, table: str | Path | None = None, strict: bool = False) -> Discovery:
    """The sessions of a BIDS-like ``root`` (:func:`discover_bids`) or of a ``cohort.tsv`` (which
    lists its paths, so nothing is ignored)."""
    if (root is None) == (table is None):
        raise LesionLocatorError("give exactly one of root (BIDS-like folder) or table (cohort.tsv)")
    return discover_bids(root, strict=strict) if root is not None else Discovery(read_cohort_table(table), [])


def plan_cohort(root: str | Path | None = None, table: str | Path | None = None, strict: bool = False) -> dict[str, list[str]]:
    """:func:`plan_sessions` of a BIDS-like ``root`` or a ``cohort.tsv``."""
    return plan_sessions(discover(root, table, strict).entries)


def _check_mask(path: Path, image_geometry: Geometry, what: str, verify_pixels: bool) -> None:
    if verify_pixels:
        mask = read_image(path)
        geometry = Geometry.of(mask)
        array = sitk.GetArrayViewFromImage(mask)
        check_lesion_labels(array, path, what)
    else:
        geometry = read_geometry(path)
    difference = geometry_difference(geometry, image_geometry, tolerance=1e-3)
    if difference:
        raise InputError(path, f"{what} geometry differs from its image: {difference}")
    if what == "prompt mask":
        check_prompt_mask_labels(array, path)


def _validate_entry(entry: SessionEntry, index: int, verify_pixels: bool) -> ManifestRow:
    baseline = index == 0
    if entry.image is None:
        what = "baseline image" if baseline else "image"
        raise InputError(entry.source, f"no {what} found (expected one of {', '.join(FORMATS)} or a DICOM series folder)")
    geometry = Geometry.of(read_image(entry.image)) if verify_pixels else read_geometry(entry.image)
    check_plausible_geometry(geometry, entry.image)
    n_prompts = 0
    if entry.prompts is not None:
        prompts = read_prompts(entry.prompts)
        check_prompts_inside(prompts, geometry, entry.prompts)
        reviewed = [lesion.id for lesion in prompts.lesions if lesion.review is not None]
        if baseline and reviewed:
            raise InputError(entry.prompts, f"lesion(s) {reviewed}: a review (of a new-lesion candidate) belongs in a follow-up's prompts, not the baseline's")
        n_prompts = len(prompts.lesions)
    if entry.prompt_mask is not None:
        _check_mask(entry.prompt_mask, geometry, "prompt mask", verify_pixels=True)
    if entry.groundtruth is not None:
        _check_mask(entry.groundtruth, geometry, "ground-truth mask", verify_pixels)
    image_fmt = "dicom" if entry.image.is_dir() else FORMATS.get(image_suffix(entry.image) or "", "dicom")
    return ManifestRow(
        patient=entry.patient,
        session=entry.session,
        session_index=index,
        is_baseline=baseline,
        acq_time=entry.acq_time,
        image=str(entry.image),
        image_format=image_fmt,
        size=list(geometry.size),
        spacing=list(geometry.spacing),
        origin=list(geometry.origin),
        direction=list(geometry.direction),
        prompts=str(entry.prompts) if entry.prompts else None,
        n_prompts=n_prompts,
        prompt_mask=str(entry.prompt_mask) if entry.prompt_mask else None,
        groundtruth=str(entry.groundtruth) if entry.groundtruth else None,
        fingerprint=files_sha256([entry.image, entry.prompts, entry.prompt_mask, entry.groundtruth]),
        image_sha256=files_sha256([entry.image]),
        prompts_sha256=files_sha256([entry.prompts, entry.prompt_mask]),
    )


def build_manifest(entries: list[SessionEntry], verify_pixels: bool = True) -> pd.DataFrame:
    """Validate every entry (files opened, prompts checked) and return the manifest table.

    All problems of the cohort are collected and raised together (:class:`CohortError`).
    """
    if not entries:
        raise LesionLocatorError("cohort is empty")
    by_patient: dict[str, list[SessionEntry]] = {}
    problems: list[InputError] = []
    for entry in entries:
        by_patient.setdefault(entry.patient, []).append(entry)
    rows: list[ManifestRow] = []
    for patient in sorted(by_patient, key=natural_key):
        sessions = by_patient[patient]
        labels = [s.session.lower() for s in sessions]
        dupes = sorted({s.session for s in sessions if labels.count(s.session.lower()) > 1})
        if dupes:
            problems.append(InputError(sessions[0].source, f"patient {patient}: session label(s) {dupes} given more than once"))
            continue
        try:
            ordered = _order_sessions(sessions)
        except InputError as err:
            problems.append(err)
            continue
        for index, entry in enumerate(ordered):
            try:
                rows.append(_validate_entry(entry, index, verify_pixels))
            except InputError as err:
                problems.append(err)
    patients_lower = {}
    for patient in by_patient:
        if patient.lower() in patients_lower and patients_lower[patient.lower()] != patient:
            problems.append(InputError(by_patient[patient][0].source, f"patient label {patient!r} duplicates {patients_lower[patient.lower()]!r} (case-insensitive)"))
        patients_lower[patient.lower()] = patient
    if problems:
        raise problems[0] if len(problems) == 1 else CohortError(problems)
    table = pa.Table.from_pylist([row.model_dump() for row in rows], schema=MANIFEST_SCHEMA)
    return table.to_pandas()


def manifest_table(manifest: pd.DataFrame) -> pa.Table:
    return pa.Table.from_pandas(manifest, schema=MANIFEST_SCHEMA, preserve_index=False)


def read_manifest(path: str | Path, as_records: bool = False) -> pd.DataFrame | list[dict]:
    """Read a manifest and validate each row against :class:`ManifestRow`.

    ``as_records`` returns plain dicts (missing values as None) instead of a DataFrame.
    """
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    if not table.schema.equals(MANIFEST_SCHEMA):
        raise InputError(path, "not a manifest written by this version (schema differs)")
    records = table.to_pylist()
    for line, record in enumerate(records):
        try:
            ManifestRow.model_validate(record)
        except ValidationError as err:
            raise InputError(path, f"row {line}: {err.errors()[0]['loc']}: {err.errors()[0]['msg']}") from None
    return records if as_records else table.to_pandas()


def check_writable(output: Path) -> None:
    """Raise :class:`LesionLocatorError` (``path: problem``) when no file can be created in the folder
    of ``output``: checked before a validation that may take hours, not after."""
    if output.parent.exists() and not output.parent.is_dir():
        raise LesionLocatorError(f"{output}: cannot write the manifest there ({output.parent} is a file, not a folder)")
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=output.parent, prefix=f".{output.name}.", suffix=".probe"):
            pass
    except OSError as err:
        raise LesionLocatorError(f"{output}: cannot write the manifest there ({err.strerror or err})") from None


def ingest_cohort(
    output: str | Path,
    root: str | Path | None = None,
    table: str | Path | None = None,
    verify_pixels: bool = True,
    strict: bool = False,
) -> pd.DataFrame:
    """Discover, validate and write the manifest (Parquet) of a cohort.

    Exactly one of ``root`` (BIDS-like folder) and ``table`` (cohort.tsv) is given. Nothing is
    written unless the whole cohort is valid. The folders and files ignored for a near-miss name
    (:func:`near_miss`) are logged and listed, as ``path: problem`` lines, in
    ``manifest.attrs["ignored"]``; with ``strict`` they are errors.
    """
    output = Path(output)
    if (root is None) == (table is None):
        raise LesionLocatorError("give exactly one of root (BIDS-like folder) or table (cohort.tsv)")
    check_writable(output)
    found = discover(root, table, strict)
    manifest = build_manifest(found.entries, verify_pixels=verify_pixels)
    try:
        write_parquet(manifest_table(manifest), output)
    except OSError as err:
        raise LesionLocatorError(f"{output}: cannot write the manifest ({err.strerror or err})") from None
    manifest.attrs["ignored"] = [str(err) for err in found.ignored]
    log.info("manifest: %d patients, %d sessions -> %s", manifest.patient.nunique(), len(manifest), output)
    return manifest
