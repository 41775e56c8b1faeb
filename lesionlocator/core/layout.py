"""Where every output lives under ``results_dir``: one place that names the files.

Labels are validated as ``[A-Za-z0-9]+`` at ingest, so no patient or session ID can form a path
outside ``results_dir``; :meth:`ResultsLayout.patient_dir` checks it again.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

#: Patient and session labels: letters and digits only, so no label can form a path outside the results.
LABEL_PATTERN = re.compile(r"^[A-Za-z0-9]+$")


@dataclass(frozen=True)
class ResultsLayout:
    root: Path

    @property
    def synthetic_cohort(self) -> Path:
        return self.root / "synthetic" / "cohort"

    @property
    def manifest(self) -> Path:
        return self.root / "ingest" / "manifest.parquet"

    def shard_report(self, stage: str, shard: int | str, session_index: int | str | None = None) -> Path:
        """A shard job's report; ``shard``/``session_index`` may be Snakemake wildcards ("{shard}")."""
        shard = f"{shard:04d}" if isinstance(shard, int) else shard
        suffix = "" if session_index is None else f"_t{session_index}"
        return self.root / "shards" / stage / f"shard-{shard}{suffix}.json"

    def patient_dir(self, patient: str) -> Path:
        if not LABEL_PATTERN.fullmatch(patient):
            raise ValueError(f"patient label {patient!r} must match [A-Za-z0-9]+")
        return self.root / "patients" / f"sub-{patient}"

    def session_dir(self, patient: str, session: str) -> Path:
        if not LABEL_PATTERN.fullmatch(session):
            raise ValueError(f"session label {session!r} must match [A-Za-z0-9]+")
        return self.patient_dir(patient) / f"ses-{session}"

    def labels(self, patient: str, session: str) -> Path:
        """uint32 lesion instance map of a session (same ID = same lesion in every session)."""
        return self.session_dir(patient, session) / "lesions.nii.gz"

    def dicom_seg(self, patient: str, session: str) -> Path:
        """DICOM-SEG of the tracked lesions, for sessions whose input was a DICOM series."""
        return self.session_dir(patient, session) / "lesions_seg.dcm"

    def candidates(self, patient: str, session: str) -> Path:
        """uint32 label map of the new-lesion candidates found at a follow-up (flagged for review)."""
        return self.session_dir(patient, session) / "candidates.nii.gz"

    def transform(self, patient: str, session: str) -> Path:
        """ITK transform mapping world points of this session to the previous session."""
        return self.session_dir(patient, session) / "to_previous.tfm"

    def tracking(self, patient: str, session: str) -> Path:
        """Per-lesion tracking table (status, centroid, volume) of a session."""
        return self.session_dir(patient, session) / "tracking.parquet"

    def measurements(self, patient: str) -> Path:
        """Per lesion x session measurements (the lesion table users read): Parquet."""
        return self.patient_dir(patient) / "measurements.parquet"

    def measurements_arrow(self, patient: str) -> Path:
        """The same table as :meth:`measurements`, written beside it as an Arrow IPC file (``.arrow``,
        ``pandas.read_feather``): what aggregation reads, at a tenth of the cost of opening Parquet."""
        return self.patient_dir(patient) / "measurements.arrow"

    def evaluation(self, patient: str) -> Path:
        """Per lesion x session evaluation against the ground truth: an Arrow IPC file (``.arrow``, read
        with ``pandas.read_feather``), which only aggregation reads back, at a tenth of Parquet's cost."""
        return self.patient_dir(patient) / "evaluation.arrow"

    @property
    def cohort_dataset(self) -> Path:
        return self.root / "cohort"

    @property
    def report(self) -> Path:
        return self.root / "report.html"

    @property
    def run_manifest(self) -> Path:
        return self.root / "run.json"
