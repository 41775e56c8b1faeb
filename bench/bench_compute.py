"""Issue #22's figures in one command: per-patient compute, inference, registration, aggregation, DAG.

    .venv/bin/python bench/bench_compute.py [--out DIR] [--skip patient register aggregate dag segment]

Runs each bench in its own process (so each peak memory is its own) and prints its output, the goal
next to each in the list below:

* ``bench_patient.py``: the realistic CT patient (512 x 512 x 168, 0.8 x 0.8 x 2 mm, 3 sessions,
  5 lesions) through ``snakemake --profile profiles/default --cores 2``: whole run and per-job wall,
  CPU seconds and peak memory (goal: <= 3 min, every job <= 3 GB);
* ``bench_segment.py --segmenter timing --threads 1``: preprocessing of a 512^2 CT (goal <= 2 s) and
  seconds per lesion, wall and CPU;
* ``bench_register_tre.py --case ct512``: registration of the 512^2 CT pair, wall and CPU seconds,
  target registration error;
* ``bench_aggregate.py --evaluation``: 10,000 per-patient files, as the real rule reads them
  (goal <= 6 s, <= 1 GB);
* ``bench_dag.py --patients 10000``: the 10,000-patient dry run (goal <= 10 s).

The machine is shared: CPU seconds, printed next to every wall time, are the steadier figure.
About 25 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PARTS = {
    "patient": ["bench_patient.py", "--out", "{out}/patient"],
    "segment": ["bench_segment.py", "--segmenter", "timing", "--threads", "1"],
    "register": ["bench_register_tre.py", "--case", "ct512"],
    "aggregate": ["bench_aggregate.py", "--evaluation"],
    "dag": ["bench_dag.py", "--patients", "10000"],
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="work folder (default: a temporary folder)")
    parser.add_argument("--skip", nargs="*", default=[], choices=sorted(PARTS))
    args = parser.parse_args(argv)
    out = Path(args.out).resolve() if args.out else Path(tempfile.mkdtemp(prefix="bench_compute-"))
    failed = []
    for name, command in PARTS.items():
        if name in args.skip:
            continue
        command = [sys.executable, str(REPO / "bench" / command[0]), *(c.format(out=out) for c in command[1:])]
        print(f"\n## {name}: {' '.join(command[1:])}", flush=True)
        start = time.perf_counter()
        result = subprocess.run(command, cwd=REPO, text=True, capture_output=True)
        print(result.stdout.rstrip())
        if result.returncode:
            print(result.stderr[-3000:])
            failed.append(name)
        print(f"## {name}: {time.perf_counter() - start:.0f} s, exit {result.returncode}", flush=True)
    if failed:
        print(f"# failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
