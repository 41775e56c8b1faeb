"""DAG-scale bench: `snakemake -n` build time and peak memory for large (fake) cohorts.

Makes BIDS-like cohorts of N patients x 4 sessions whose images are empty placeholder files (the
DAG is planned without opening an image), then times a dry run of the whole workflow on each.

    .venv/bin/python bench/bench_dag.py [--patients 100 1000 10000] [--shard-size 50]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")


def fake_cohort(root: Path, n_patients: int, n_sessions: int = 4) -> Path:
    for p in range(n_patients):
        for s in range(n_sessions):
            folder = root / f"sub-{p:05d}" / f"ses-{s + 1:02d}"
            folder.mkdir(parents=True)
            (folder / "image.nii.gz").touch()
        (root / f"sub-{p:05d}" / "ses-01" / "prompts.json").touch()
    return root


def dry_run(config: Path) -> tuple[float, float, float, int]:
    """Wall seconds, CPU seconds (user + system) and peak RSS (MB) of the snakemake process, and the
    number of jobs planned."""
    start = time.perf_counter()
    process = subprocess.Popen(
        [SNAKEMAKE, "-n", "--cores", "2", "--quiet", "rules", "--configfile", str(config)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    if status != 0:
        raise SystemExit(output[-3000:])
    jobs = 0
    for line in output.splitlines():
        if line.strip().startswith("total"):
            jobs = int(line.split()[-1])
    return seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, jobs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patients", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--shard-size", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=1, help="dry runs per cohort size")
    args = parser.parse_args()
    print(f"{'patients':>9} {'sessions':>9} {'jobs':>6} {'dry run s':>10} {'CPU s':>6} {'peak MB':>8}")
    for n in args.patients:
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            root = fake_cohort(tmp / "cohort", n)
            config = tmp / "study.yaml"
            config.write_text(yaml.safe_dump({
                "results_dir": str(tmp / "results"),
                "cohort": {"root": str(root)},
                "workflow": {"shard_size": args.shard_size},
            }))
            for _ in range(args.repeat):
                seconds, cpu, peak, jobs = dry_run(config)
                print(f"{n:>9} {n * 4:>9} {jobs:>6} {seconds:>10.1f} {cpu:>6.1f} {peak:>8.0f}", flush=True)


if __name__ == "__main__":
    main()
