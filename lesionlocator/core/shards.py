"""Batches ("shards") of patients: the unit of a workflow job.

A cohort of 10,000 patients is not 10,000 jobs nor 10,000 model loads: each stage runs one job per
shard of ``workflow.shard_size`` patients, builds its model once, and loops over the patients. The
outputs stay per patient, and so does resume:

* every patient's stage result is recorded in ``<patient dir>/.done/<stage>.json`` with its
  *rerun key* (:mod:`lesionlocator.stage_keys`: the stage's config fields, input and weight hashes,
  code version); a rerun of the shard skips the patients whose key is unchanged, so a changed or
  failed patient is recomputed alone;
* one patient's failure does not stop its shard: it is recorded in the shard's report (the job's
  declared output) and the stages after it skip that patient (``upstream_failed``, carrying the
  first failure's ``"<stage>: <error>"``); ``run.json`` (``failed_patients``, ``failures``) and the
  cohort report list such patients with that reason. ``snakemake --forcerun <rule>`` retries them
  (the others are skipped in milliseconds).
"""

from __future__ import annotations

import json
import logging
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Literal

from lesionlocator.core.io import write_json

log = logging.getLogger(__name__)

Outcome = Literal["done", "up_to_date", "failed", "upstream_failed"]


def shard_patients(patients: list[str], shard_size: int) -> list[list[str]]:
    """Split the (already ordered) patient list into consecutive shards of ``shard_size``."""
    if shard_size < 1:
        raise ValueError("shard_size must be >= 1")
    return [patients[i : i + shard_size] for i in range(0, len(patients), shard_size)]


def done_path(patient_dir: Path, stage: str) -> Path:
    return Path(patient_dir) / ".done" / f"{stage}.json"


def read_done(patient_dir: Path, stage: str) -> str | None:
    """The fingerprint recorded when ``stage`` last finished for this patient, or None."""
    path = done_path(patient_dir, stage)
    try:
        return json.loads(path.read_text())["fingerprint"]
    except (OSError, ValueError, KeyError):
        return None


def failed_patients(reports: Iterable[str | Path]) -> set[str]:
    """Patients that failed (or were skipped for an upstream failure) in any of the shard reports."""
    failed = set()
    for report in reports:
        data = json.loads(Path(report).read_text())
        failed |= {p for p, item in data["patients"].items() if item["outcome"] in ("failed", "upstream_failed")}
    return failed


def failure_reasons(reports: Iterable[str | Path]) -> dict[str, str]:
    """Per failed patient, why: ``"<stage>: <error>"`` of the stage that failed. A stage skipped for an
    upstream failure carries the upstream reason, so the reports of the last stages name the root cause."""
    reasons: dict[str, str] = {}
    for report in reports:
        data = json.loads(Path(report).read_text())
        for patient, item in data["patients"].items():
            if item["outcome"] == "failed":
                reasons[patient] = f"{data['stage']}: {item['error']}"
            elif item["outcome"] == "upstream_failed":
                reasons.setdefault(patient, item["error"])
    return dict(sorted(reasons.items()))


def failure_table(reports: Iterable[str | Path]):
    """:func:`failure_reasons` as a ``pandas.DataFrame`` (patient, reason), as the cohort report lists them."""
    import pandas as pd

    return pd.DataFrame(list(failure_reasons(reports).items()), columns=["patient", "reason"])


@dataclass
class PatientTask:
    """One patient's work in a stage: ``run()`` writes the outputs; ``key`` fingerprints its inputs."""

    patient: str
    patient_dir: Path
    key: str
    run: Callable[[], None]


def run_shard(stage: str, tasks: list[PatientTask], report_path: str | Path, upstream_reports: Iterable[str | Path] = ()) -> dict:
    """Run ``tasks`` (one per patient) with per-patient skip, failure isolation and a shard report.

    Returns the report (also written atomically to ``report_path``): per patient its outcome and,
    for failures, the error message. The report holds no timings, so reruns are byte-identical.
    """
    from lesionlocator.core.progress import Progress

    upstream_failed = failure_reasons(upstream_reports)
    outcomes: dict[str, dict] = {}
    # a log line per patient at most every 10 s (a bar on a terminal); failures are logged in full
    with Progress(stage, total=len(tasks), unit="patient", logger=log) as progress:
        for task in tasks:
            if task.patient in upstream_failed:
                outcomes[task.patient] = {"outcome": "upstream_failed", "error": upstream_failed[task.patient]}
                progress.advance(f"{task.patient} skipped: upstream failed")
                continue
            if read_done(task.patient_dir, stage) == task.key:
                log.debug("%s %s: up to date", stage, task.patient)
                outcomes[task.patient] = {"outcome": "up_to_date", "error": None}
                progress.advance(f"{task.patient} up to date")
                continue
            done_path(task.patient_dir, stage).unlink(missing_ok=True)
            start = time.perf_counter()
            try:
                task.run()
            except Exception as err:  # one patient's failure must not stop the shard
                log.error("%s %s failed: %s\n%s", stage, task.patient, err, traceback.format_exc())
                outcomes[task.patient] = {"outcome": "failed", "error": f"{type(err).__name__}: {err}"}
                progress.advance(f"{task.patient} FAILED")
                continue
            write_json({"fingerprint": task.key, "stage": stage}, done_path(task.patient_dir, stage))
            log.debug("%s %s: done in %.1f s", stage, task.patient, time.perf_counter() - start)
            outcomes[task.patient] = {"outcome": "done", "error": None}
            progress.advance(f"{task.patient} done")
    # "done" and "up_to_date" are the same result; the report records only what downstream needs.
    report = {
        "stage": stage,
        "patients": {
            p: {"outcome": "ok" if o["outcome"] in ("done", "up_to_date") else o["outcome"], "error": o["error"]}
            for p, o in outcomes.items()
        },
    }
    write_json(report, report_path)
    n_failed = sum(o["outcome"] == "failed" for o in outcomes.values())
    if n_failed:
        log.warning("%s: %d of %d patient(s) failed; see %s", stage, n_failed, len(tasks), report_path)
    return report
