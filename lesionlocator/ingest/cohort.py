"""Cohort ingest: discover a BIDS-like cohort (or read a cohort.tsv), validate it, write a manifest.

BIDS-like layout (labels are ``[A-Za-z0-9]+``)::

    <root>/sub-<patient>/sub-<patient>_sessions.tsv     optional: session_id + acq_time or order
    <root>/sub-<patient>/ses-<session>/<image>          one image: .nii.gz .nii .nrrd .mha .mhd,
                                                        or a sub-folder holding one DICOM series
    <root>/sub-<patient>/ses-<session>/prompts.json     optional, baseline only
    <root>/sub-<patient>/ses-<session>/prompt_mask.nii.gz   optional, baseline only (instance mask)
    <root>/derivatives/groundtruth/sub-<patient>/ses-<session>/<lesion instance mask>   optional

The manifest has one row per patient x session, validated row by row against :class:`ManifestRow`.
"""

from __future__ import annotations

import csv
import logging
import re
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import SimpleITK as sitk
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lesionlocator.core.errors import InputError, LesionLocatorError
from lesionlocator.core.hashing import files_sha256
from lesionlocator.core.io import (
    Geometry,
    geometry_difference,
    image_suffix,
    is_dicom_dir,
    read_geometry,
    read_image,
    write_parquet,
)
from lesionlocator.core.layout import LABEL_PATTERN
from lesionlocator.core.prompts import check_prompt_mask_labels, check_prompts_inside, read_prompts
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
    prompts: str | None = Field(description="prompts.json of the baseline, if any.")
    n_prompts: int = Field(ge=0, description="Number of lesions prompted in prompts.json.", json_schema_extra={"arrow": "int32"})
    prompt_mask: str | None = Field(description="Lesion instance mask used as prompt, if any.")
    groundtruth: str | None = Field(description="Ground-truth lesion instance mask, if any.")
    fingerprint: str = Field(
        pattern=r"^[0-9a-f]{64}$",
        description="SHA-256 over the bytes of the image, prompts, prompt mask and ground truth: "
        "a session whose fingerprint is unchanged needs no recomputation.",
    )


MANIFEST_SCHEMA = arrow_schema(ManifestRow)


def natural_key(label: str) -> list:
    """Sort key that orders ``2`` before ``10`` (natural order of labels)."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", label)]


def check_label(label: str, where: Path, kind: str) -> None:
    if not LABEL_PATTERN.fullmatch(label):  # fullmatch: "$" alone would accept a trailing newline
        raise InputError(where, f"{kind} label {label!r} must match [A-Za-z0-9]+ (no path characters)")


def _single_image(folder: Path, exclude_stem: str | None = None) -> Path | None:
    candidates = []
    for child in sorted(folder.iterdir()):
        if child.name.startswith("."):
            continue
        if child.is_file() and image_suffix(child):
            if exclude_stem and child.name[: -len(image_suffix(child))] == exclude_stem:
                continue
            candidates.append(child)
        elif child.is_dir() and is_dicom_dir(child):
            candidates.append(child)
    if len(candidates) > 1:
        names = ", ".join(c.name for c in candidates)
        raise InputError(folder, f"holds {len(candidates)} images ({names}); keep exactly one image per session")
    return candidates[0] if candidates else None


def _prompt_mask(folder: Path) -> Path | None:
    found = [c for c in sorted(folder.iterdir()) if c.is_file() and image_suffix(c) and c.name[: -len(image_suffix(c))] == PROMPT_MASK_STEM]
    return found[0] if found else None


def _read_sessions_tsv(path: Path) -> dict[str, dict[str, str]]:
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    if not rows or "session_id" not in rows[0]:
        raise InputError(path, "needs a session_id column (and acq_time or order)")
    if not ({"acq_time", "order"} & set(rows[0])):
        raise InputError(path, "needs an acq_time or an order column to order the sessions")
    table = {}
    for row in rows:
        label = row["session_id"].removeprefix("ses-")
        if label.lower() in {k.lower() for k in table}:
            raise InputError(path, f"session {label!r} listed twice")
        table[label] = row
    return table


def discover_bids(root: str | Path) -> list[SessionEntry]:
    """Find every patient x session under a BIDS-like ``root`` (files are not opened)."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(root, "cohort root is not a folder")
    entries: list[SessionEntry] = []
    problems: list[InputError] = []
    seen_patients: dict[str, str] = {}
    for subject_dir in sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("sub-")):
        patient = subject_dir.name[len("sub-"):]
        try:
            check_label(patient, subject_dir, "patient")
            if patient.lower() in seen_patients:
                raise InputError(subject_dir, f"patient label duplicates sub-{seen_patients[patient.lower()]} (labels are compared case-insensitively)")
            seen_patients[patient.lower()] = patient
            entries.extend(_discover_subject(root, subject_dir, patient))
        except InputError as err:
            problems.append(err)
    if problems:
        raise problems[0] if len(problems) == 1 else CohortError(problems)
    if not entries:
        raise InputError(root, "cohort is empty: no sub-<patient>/ses-<session>/ folders found")
    return entries


def _discover_subject(root: Path, subject_dir: Path, patient: str) -> list[SessionEntry]:
    session_dirs = sorted(p for p in subject_dir.iterdir() if p.is_dir() and p.name.startswith("ses-"))
    if not session_dirs:
        raise InputError(subject_dir, "patient has no ses-<session>/ folder")
    sessions_tsv = subject_dir / f"sub-{patient}_sessions.tsv"
    order_table = _read_sessions_tsv(sessions_tsv) if sessions_tsv.exists() else None
    entries = []
    seen: dict[str, str] = {}
    for session_dir in session_dirs:
        session = session_dir.name[len("ses-"):]
        check_label(session, session_dir, "session")
        if session.lower() in seen:
            raise InputError(session_dir, f"session label duplicates ses-{seen[session.lower()]} (labels are compared case-insensitively)")
        seen[session.lower()] = session
        row = None
        if order_table is not None:
            row = order_table.get(session)
            if row is None:
                raise InputError(sessions_tsv, f"session {session!r} has a folder but no row")
        gt_dir = root / GROUNDTRUTH_DIR / f"sub-{patient}" / f"ses-{session}"
        prompts = session_dir / "prompts.json"
        entries.append(
            SessionEntry(
                patient=patient,
                session=session,
                image=_single_image(session_dir, exclude_stem=PROMPT_MASK_STEM),
                acq_time=(row or {}).get("acq_time") or None,
                order=float(row["order"]) if row and row.get("order") else None,
                prompts=prompts if prompts.exists() else None,
                prompt_mask=_prompt_mask(session_dir),
                groundtruth=_single_image(gt_dir) if gt_dir.is_dir() else None,
                source=session_dir,
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
    try:
        with open(path, newline="") as handle:
            reader = csv.DictReader(handle, delimiter="\t")
            rows = list(reader)
            columns = set(reader.fieldnames or [])
    except OSError as err:
        raise InputError(path, f"cannot read cohort table ({err.strerror})") from None
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
    for line, row in enumerate(rows, start=2):
        where = Path(f"{path}:{line}")
        check_label(row["patient"], where, "patient")
        check_label(row["session"], where, "session")
        entries.append(
            SessionEntry(
                patient=row["patient"],
                session=row["session"],
                image=resolve(row["image"]),
                acq_time=row.get("acq_time") or None,
                order=float(row["order"]) if row.get("order") else None,
                prompts=resolve(row.get("prompts")),
                prompt_mask=resolve(row.get("prompt_mask")),
                groundtruth=resolve(row.get("groundtruth")),
                source=where,
            )
        )
    return entries


def _order_sessions(entries: list[SessionEntry]) -> list[SessionEntry]:
    """Sort one patient's sessions: by acq_time, else by order, else natural order of labels."""
    if all(e.acq_time for e in entries):
        def key(e: SessionEntry):
            try:
                return datetime.fromisoformat(e.acq_time)
            except ValueError:
                raise InputError(e.source, f"acq_time {e.acq_time!r} is not an ISO 8601 date/time") from None
        keys = [key(e) for e in entries]
    elif all(e.order is not None for e in entries):
        keys = [e.order for e in entries]
    elif any(e.acq_time for e in entries) or any(e.order is not None for e in entries):
        raise InputError(entries[0].source, f"patient {entries[0].patient}: acq_time/order given for some sessions but not all")
    else:
        keys = [natural_key(e.session) for e in entries]
    if len(set(map(str, keys))) != len(keys):
        raise InputError(entries[0].source, f"patient {entries[0].patient}: two sessions share the same acquisition time/order")
    return [e for _, e in sorted(zip(keys, entries), key=lambda pair: pair[0])]


def plan_sessions(entries: list[SessionEntry]) -> dict[str, list[str]]:
    """Patients (natural order) and their sessions in time order, without opening any image.

    This is what the workflow needs at parse time to lay out its jobs; ingest validates the files.
    """
    by_patient: dict[str, list[SessionEntry]] = {}
    for entry in entries:
        by_patient.setdefault(entry.patient, []).append(entry)
    return {p: [e.session for e in _order_sessions(by_patient[p])] for p in sorted(by_patient, key=natural_key)}


def plan_cohort(root: str | Path | None = None, table: str | Path | None = None) -> dict[str, list[str]]:
    """:func:`plan_sessions` of a BIDS-like ``root`` or a ``cohort.tsv``."""
    return plan_sessions(discover_bids(root) if root is not None else read_cohort_table(table))


def _check_mask(path: Path, image_geometry: Geometry, what: str, verify_pixels: bool) -> None:
    if verify_pixels:
        mask = read_image(path)
        geometry = Geometry.of(mask)
        array = sitk.GetArrayViewFromImage(mask)
        if mask.GetPixelID() in (sitk.sitkFloat32, sitk.sitkFloat64):
            if not np.array_equal(array, np.round(array)) or array.min() < 0:
                raise InputError(path, f"{what} must hold non-negative integer lesion IDs")
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
    if not baseline and (entry.prompts or entry.prompt_mask):
        raise InputError(entry.prompts or entry.prompt_mask, "prompts are read at the baseline session only; move them there or remove them")
    n_prompts = 0
    if entry.prompts is not None:
        prompts = read_prompts(entry.prompts)
        check_prompts_inside(prompts, geometry, entry.prompts)
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


def ingest_cohort(
    output: str | Path,
    root: str | Path | None = None,
    table: str | Path | None = None,
    verify_pixels: bool = True,
) -> pd.DataFrame:
    """Discover, validate and write the manifest (Parquet) of a cohort.

    Exactly one of ``root`` (BIDS-like folder) and ``table`` (cohort.tsv) is given. Nothing is
    written unless the whole cohort is valid.
    """
    if (root is None) == (table is None):
        raise LesionLocatorError("give exactly one of root (BIDS-like folder) or table (cohort.tsv)")
    entries = discover_bids(root) if root is not None else read_cohort_table(table)
    manifest = build_manifest(entries, verify_pixels=verify_pixels)
    write_parquet(manifest_table(manifest), output)
    log.info("manifest: %d patients, %d sessions -> %s", manifest.patient.nunique(), len(manifest), output)
    return manifest
