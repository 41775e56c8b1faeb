"""The end-of-run summary: what the main job did, on one screen.

Read from ``run.json`` and the cohort dataset under ``results_dir`` (nothing is recomputed), it is
printed by the Snakefile's ``onsuccess:`` handler and by ``lesionlocator summary``.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path
from typing import TextIO

import pandas as pd

from lesionlocator.core.layout import ResultsLayout
from lesionlocator.measure.response import RESPONSES, REVIEW_CATEGORIES, flagged_for_review, review_category

#: Failed patients listed one per line; the rest are counted (run.json has them all).
MAX_FAILURES_LISTED = 10


def run_summary(results_dir: str | Path) -> str:
    """A few lines: patients done and failed (each with the first reason), lesions tracked, best
    overall responses, lesion-sessions flagged for review (per category, most severe first: the
    tracker's flags; the report's review queue adds lesions out of view, volume jumps and failed
    patients), where the report and ``run.json`` are.

    Empty when ``results_dir`` has no ``run.json`` (a dry run, a ``train`` target); a cohort dataset
    that cannot be read is said in one line instead of its figures.
    """
    from lesionlocator.aggregate.cohort import read_cohort_table

    layout = ResultsLayout(Path(results_dir))
    if not layout.run_manifest.is_file():
        return ""
    run = json.loads(layout.run_manifest.read_text())
    failures: dict[str, str] = run.get("failures") or {}
    failed = sorted(set(run.get("failed_patients") or []) | set(failures))
    lines = [f"LesionLocator run summary (run.json written {run.get('written_at', '?')})"]
    try:
        patients = read_cohort_table(layout.cohort_dataset, "patients", columns=["patient", "best_response"])
        lesions = read_cohort_table(layout.cohort_dataset, "lesions", columns=REVIEW_READ)
    except Exception as err:  # the summary must not fail a run that finished
        lines.append(f"  patients   {len(failed)} failed; cohort tables unreadable ({err})")
        patients = lesions = None
    if patients is not None:
        lines.append(f"  patients   {len(patients)} done, {len(failed)} failed")
    for patient in failed[:MAX_FAILURES_LISTED]:
        reason = (failures.get(patient) or "unknown").strip().splitlines()[0]
        lines.append(f"             {patient}: {reason[:100]}")
    if len(failed) > MAX_FAILURES_LISTED:
        lines.append(f"             ... and {len(failed) - MAX_FAILURES_LISTED} more (run.json: failures)")
    if patients is not None:
        n_tracked = len(lesions[["patient", "lesion_id"]].drop_duplicates())
        lines.append(f"  lesions    {n_tracked} tracked ({len(lesions)} lesion-sessions)")
        lines.append(f"  response   best overall (RECIST 1.1): {_response_counts(patients['best_response'])}")
        lines.append(f"  review     {_review_counts(lesions)}")
    report = layout.report
    lines.append(f"  report     {report}" + ("" if report.is_file() else " (not written)"))
    lines.append(f"  run.json   {layout.run_manifest}")
    return "\n".join(lines) + "\n"


#: Lesion table columns the summary reads: the lesions tracked and the review flags.
REVIEW_READ = ["patient", "lesion_id", "status", "voxel_count", "by_fallback", "new_lesion", "needs_review"]


def _review_counts(lesions: pd.DataFrame) -> str:
    """``"7 lesion-session(s) flagged for review (lost 1, uncertain 2, new lesion 4)"``."""
    flagged = lesions[flagged_for_review(lesions.assign(needs_review=lesions["needs_review"].fillna(False))).to_numpy(bool)]
    counts = pd.Series(review_category(flagged)).value_counts()
    parts = ", ".join(f"{name} {int(counts[k])}" for k, name in enumerate(REVIEW_CATEGORIES) if k in counts)
    return f"{len(flagged)} lesion-session(s) flagged for review" + (f" ({parts})" if parts else "")


def _response_counts(responses: pd.Series) -> str:
    counts = Counter(str(r) for r in responses.fillna("none"))
    order = [r for r in RESPONSES if counts[r]] + sorted(set(counts) - set(RESPONSES))
    return ", ".join(f"{r} {counts[r]}" for r in order) or "no patients"


def print_run_summary(results_dir: str | Path, file: TextIO | None = None) -> None:
    """Print :func:`run_summary`; never raises (one line says why when it cannot be built)."""
    file = file or sys.stdout
    try:
        text = run_summary(results_dir)
    except Exception as err:  # a Snakemake onsuccess handler must not fail the run
        text = f"run summary unavailable: {type(err).__name__}: {err}\n"
    print(text, end="", file=file)
