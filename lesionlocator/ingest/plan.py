"""The cohort plan the workflow needs at parse time: patients and their sessions in time order.

Nothing here opens an image, so planning 10,000 patients costs a directory listing. A problem it
meets (an unreadable folder, acq_time that cannot be ordered, with ``cohort.strict`` a near-miss
folder name) is an :class:`~lesionlocator.core.errors.InputError` naming the file, as at ingest.
"""

from __future__ import annotations

from pathlib import Path

from lesionlocator.core.config import StudyConfig
from lesionlocator.ingest.cohort import GROUNDTRUTH_DIR, plan_cohort, read_tsv


def synthetic_labels(n_patients: int, n_sessions: int) -> dict[str, list[str]]:
    """The labels the synthetic generator gives (P001.., sessions 01..); a test checks they agree."""
    return {f"P{i + 1:03d}": [f"{t + 1:02d}" for t in range(n_sessions)] for i in range(n_patients)}


def cohort_plan(config: StudyConfig) -> dict[str, list[str]]:
    """Patients and their sessions in time order, known before any job runs (no image is opened)."""
    if config.cohort.is_synthetic:
        return synthetic_labels(config.synthetic.n_patients, config.synthetic.n_sessions)
    return plan_cohort(root=config.cohort.root, table=config.cohort.table, strict=config.cohort.strict)


def cohort_has_groundtruth(config: StudyConfig) -> bool:
    """Whether evaluation applies: the synthetic cohort, ``derivatives/groundtruth/`` under the root,
    or a ``groundtruth`` column in the cohort table."""
    if config.cohort.is_synthetic:
        return True
    if config.cohort.root is not None:
        return (Path(config.cohort.root) / GROUNDTRUTH_DIR).is_dir()
    header, _ = read_tsv(Path(config.cohort.table))
    return "groundtruth" in header
