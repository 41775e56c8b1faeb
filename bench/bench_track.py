"""Benchmark of longitudinal tracking: per follow-up, registration time, tracking time per lesion,
registrations per image pair (must be 1 whatever the lesion count) and peak memory.

Cases: a 3-session synthetic patient built from the embedded real CT, and one from a 512x512x150
phantom. Prints one table row per follow-up.

    .venv/bin/python bench/bench_track.py [--cases ct phantom] [--phantom-size 512x512x150] [--out DIR]
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import tempfile
import time
import tracemalloc
from pathlib import Path

import pyarrow.parquet as pq

from lesionlocator import pipeline
from lesionlocator.core.config import StudyConfig, SyntheticConfig
from lesionlocator.core.layout import ResultsLayout
from lesionlocator.ingest.cohort import ingest_cohort
from synthetic.cohort import generate_cohort

REPO = Path(__file__).resolve().parent.parent


class CountingRegistration:
    """Wraps a registration backend and counts its calls per (fixed, moving) image pair."""

    def __init__(self, inner):
        self.inner = inner
        self.calls: dict[tuple, int] = {}

    def register(self, fixed, moving):
        key = (fixed.GetSize(), fixed.GetOrigin(), moving.GetSize(), moving.GetOrigin())
        self.calls[key] = self.calls.get(key, 0) + 1
        return self.inner.register(fixed, moving)


def _measure(func):
    """Run ``func``; return (result, wall seconds, CPU seconds, peak numpy/Python MiB traced)."""
    tracemalloc.start()
    start, cpu = time.perf_counter(), time.process_time()
    result = func()
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return result, seconds, cpu, peak


def run_case(name: str, source: str, out: Path) -> list[dict]:
    synthetic = SyntheticConfig(seed=3, n_patients=1, n_sessions=3, sources=[source], p_new=1.0, lesions_per_patient=(3, 4))
    _, gen_seconds, _, _ = _measure(lambda: generate_cohort(synthetic, out / "cohort"))
    manifest = out / "results" / "ingest" / "manifest.parquet"
    ingest_cohort(manifest, root=out / "cohort")
    config = StudyConfig(results_dir=out / "results")
    layout = ResultsLayout(config.results_dir)
    reports = out / "results" / "reports"
    counters: list[CountingRegistration] = []
    original = pipeline.build_registration

    def counting(register_config):
        counters.append(CountingRegistration(original(register_config)))
        return counters[-1]

    pipeline.build_registration = counting
    try:
        _, base_seconds, _, _ = _measure(lambda: pipeline.segment_baseline_shard(manifest, ["P001"], config, reports / "b.json"))
        sessions = pipeline.patient_sessions(manifest)["P001"]
        rows = []
        for t in range(1, len(sessions)):
            _, reg_seconds, reg_cpu, reg_peak = _measure(
                lambda: pipeline.register_shard(manifest, ["P001"], t, config, reports / f"r{t}.json")
            )
            _, track_seconds, track_cpu, track_peak = _measure(
                lambda: pipeline.track_shard(manifest, ["P001"], t, config, reports / f"t{t}.json")
            )
            table = pq.read_table(layout.tracking("P001", sessions[t]["session"])).to_pylist()
            lesions = sum(not r["is_candidate"] for r in table)
            calls = sum(counters[-1].calls.values()) if counters else 0
            pairs = len(counters[-1].calls) if counters else 0
            rows.append(
                {
                    "case": name,
                    "followup": f"ses-{sessions[t]['session']}",
                    "size": "x".join(str(v) for v in _size(sessions[t]["image"])),
                    "lesions": lesions,
                    "candidates": len(table) - lesions,
                    "register_s": reg_seconds,
                    "register_cpu_s": reg_cpu,
                    "track_s": track_seconds,
                    "track_s_per_lesion": track_seconds / max(lesions, 1),
                    "track_cpu_s_per_lesion": track_cpu / max(lesions, 1),
                    "registrations_per_pair": calls / max(pairs, 1),
                    "peak_traced_mib": max(reg_peak, track_peak),
                }
            )
    finally:
        pipeline.build_registration = original
    print(f"# {name}: generated in {gen_seconds:.1f} s, baseline segmentation {base_seconds:.1f} s")
    return rows


def _size(path: str) -> tuple[int, ...]:
    from lesionlocator.core.io import read_geometry

    return read_geometry(path).size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=["ct", "phantom"], choices=["ct", "phantom"])
    parser.add_argument("--phantom-size", default="512x512x150", help="phantom size XxYxZ (voxels)")
    parser.add_argument("--out", help="work folder (default: a temporary folder)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    sources = {"ct": "ct:data/real/example_ct.nii.gz", "phantom": f"phantom:{args.phantom_size}"}
    os.chdir(REPO)  # the synthetic sources and organ labels are named relative to the repository
    out = Path(args.out).resolve() if args.out else Path(tempfile.mkdtemp(prefix="bench_track-"))
    rows = []
    for case in args.cases:
        rows += run_case(case, sources[case], out / case)
    header = ["case", "followup", "size", "lesions", "candidates", "register_s", "register_cpu_s", "track_s", "track_s_per_lesion",
              "track_cpu_s_per_lesion",
              "registrations_per_pair", "peak_traced_mib"]
    print("\t".join(header))
    for row in rows:
        print("\t".join(f"{row[h]:.2f}" if isinstance(row[h], float) else str(row[h]) for h in header))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("# seconds are wall clock; *_cpu_s is this process's CPU time (the honest figure on a shared machine)")
    print(f"# peak resident memory of the whole run: {rss:.0f} MiB (tracemalloc peaks cover numpy/Python, not ITK)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
