"""Bench: zero-shot Dice of the bundled model on real scans it never saw, per source, lesion size and prompt.

The bundled model on real scans it never saw in training, with synthetic lesions (sources, cohorts and
scoring: :mod:`lesionlocator.train.zero_shot`): Dice per source, pooled per modality, by lesion size
(the diameter of a ball of the lesion's volume: <= 10 mm, 10-30 mm, > 30 mm) and prompt type, next
to the classical segmenter. Prints the table and the run's wall and CPU seconds.

    PYTHONPATH=. .venv/bin/python bench/bench_zero_shot.py                      # prints the table
    PYTHONPATH=. .venv/bin/python bench/bench_zero_shot.py --write-card         # and rewrites the card's TSV
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from lesionlocator.core.config import REPO_ROOT
from lesionlocator.train.zero_shot import CARD_TABLE, PATIENTS, zero_shot_scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patients", type=int, default=PATIENTS, help="patients per source (default %(default)s)")
    parser.add_argument("--workdir", help="keep the cohorts and tables here (default: a temporary folder)")
    parser.add_argument("--write-card", action="store_true", help=f"write the summary to {CARD_TABLE.relative_to(REPO_ROOT)}")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.workdir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        start, cpu = time.perf_counter(), time.process_time()
        table, summary = zero_shot_scores(work, args.patients)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
        wide = summary.pivot_table(index=["cohort", "modality", "size", "lesions"], columns="segmenter",
                                   values=["point", "box", "mask"]).round(3)  # fmt: skip
        with pd.option_context("display.width", 200, "display.max_columns", 20, "display.max_rows", 200):
            print(wide)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"{len(table) // 6} lesions in {wall:.0f} s wall, {cpu:.0f} CPU-s, peak RSS {peak:.0f} MB", file=sys.stderr)
        if args.write_card:
            summary.to_csv(CARD_TABLE, sep="\t", index=False)
            print(f"-> {CARD_TABLE}", file=sys.stderr)


if __name__ == "__main__":
    main()
