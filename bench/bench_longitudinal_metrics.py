"""Bench: the longitudinal figures of a cohort run against its ground truth, with issue 24's targets.

Reads a cohort dataset folder (``<results_dir>/cohort``, written by the aggregate step of a run
with ground truth) and prints :func:`lesionlocator.evaluate.longitudinal.headline_figures` next to
the targets, then the status confusion pooled over the follow-ups (true classes as rows, reported
classes as columns). Nothing is computed here that the library does not compute.

    .venv/bin/python bench/bench_longitudinal_metrics.py results/synth_longitudinal/cohort
"""

from __future__ import annotations

import argparse
import operator
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from lesionlocator.evaluate.longitudinal import confusion_matrix, headline_figures

#: (figure, comparison, target) of the issue's "done when".
TARGETS = [
    ("status_accuracy_present", operator.ge, 0.95),
    ("n_present_reported_vanished", operator.eq, 0),
    ("n_reported_present_far", operator.eq, 0),
    ("new_lesion_recall", operator.ge, 0.8),
    ("false_new_candidates_per_scan", operator.le, 1.0),
    ("cpm_at_r", operator.ge, 0.95),
    ("followup_dice", operator.ge, 0.80),
]
_SIGN = {operator.ge: ">=", operator.le: "<=", operator.eq: "=="}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cohort", type=Path, help="cohort dataset folder (results_dir/cohort)")
    parser.add_argument("--radius-mm", type=float, default=25.0, help="r of CPM@r (default %(default)s)")
    args = parser.parse_args()
    figures = headline_figures(args.cohort, radius_mm=args.radius_mm)
    print(f"cohort: {args.cohort}")
    print(f"{'figure':32s} {'value':>10s}  target")
    for name, compare, target in TARGETS:
        value = figures[name]
        verdict = "n/a" if pd.isna(value) else ("met" if compare(value, target) else "NOT met")
        print(f"{name:32s} {value:10.3f}  {_SIGN[compare]} {target}  {verdict}")
    print("counts: " + ", ".join(f"{k} {int(v)}" for k, v in figures.items() if k.startswith("n_")))
    confusion = pq.read_table(args.cohort / "status_confusion").to_pandas()
    print("\nstatus confusion over the follow-ups (rows: truth, columns: reported):")
    print(confusion_matrix(confusion).to_string())


if __name__ == "__main__":
    main()
