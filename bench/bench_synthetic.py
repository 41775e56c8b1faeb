"""Bench of the synthetic generator: seconds per generated follow-up volume and peak memory.

    .venv/bin/python bench/bench_synthetic.py [--sessions 4] [--cases real-ct phantom-512]

Each case runs in its own process (so its peak resident memory is its own): one patient, planned
once, then every follow-up session rendered (mass effect, repositioning, resampling, lesions,
noise) and written (image + mask, gzip NIfTI). Goal: <= 5 s per follow-up. "render CPU s" is the
process CPU time (all threads), steadier than wall time on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CASES = {
    "real-ct": {"sources": [f"ct:{REPO / 'data/real/example_ct.nii.gz'}"],
                "organ_labels": {str(REPO / "data/real/example_ct.nii.gz"): str(REPO / "data/real/example_seg.nii.gz")}},
    "real-mr": {"sources": [f"mr:{REPO / 'data/real/example_mr_sm.nii.gz'}"], "organ_labels": {}},
    "phantom-512": {"sources": ["phantom:512x512x150"], "organ_labels": {}},
}


def run_case(name: str, sessions: int) -> dict:
    sys.path.insert(0, str(REPO))
    from lesionlocator.core.config import SyntheticConfig
    from lesionlocator.core.io import image_from_array, write_image
    from synthetic.cohort import plan_cohort, render_session

    config = SyntheticConfig(n_patients=1, n_sessions=sessions, p_new=0.5, **CASES[name])
    start = time.perf_counter()
    plans, sources = plan_cohort(config)
    plan_s = time.perf_counter() - start
    plan = plans[0]
    source = sources[plan.spec]
    render, write, cpu = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for t in range(1, sessions):
            start, cpu_start = time.perf_counter(), time.process_time()
            image, labels, *_ = render_session(plan, source, t, config)
            render.append(time.perf_counter() - start)
            cpu.append(time.process_time() - cpu_start)
            start = time.perf_counter()
            geometry = plan.sessions[t].geometry
            write_image(image_from_array(image, geometry), Path(tmp) / f"image{t}.nii.gz")
            write_image(image_from_array(labels, geometry), Path(tmp) / f"labels{t}.nii.gz")
            write.append(time.perf_counter() - start)
    size = list(source.geometry.size)
    return {
        "case": name, "size_xyz": size, "follow_ups": sessions - 1, "load_and_plan_s": round(plan_s, 2),
        "render_s_per_follow_up": round(sum(render) / len(render), 2),
        "render_cpu_s_per_follow_up": round(sum(cpu) / len(cpu), 2),
        "render_and_write_s_per_follow_up": round((sum(render) + sum(write)) / len(render), 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 0),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=4, help="sessions incl. baseline (default 4: 3 follow-ups)")
    parser.add_argument("--cases", nargs="+", default=["real-ct", "real-mr", "phantom-512"], choices=sorted(CASES))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_case(args.child, args.sessions)))
        return 0
    print(f"{'case':<12} {'size (x,y,z)':<16} {'load+plan s':>11} {'render s/fu':>12} {'render CPU s':>12} {'+write s/fu':>12} {'peak RSS MB':>12}")
    for name in args.cases:
        out = subprocess.run([sys.executable, __file__, "--child", name, "--sessions", str(args.sessions)],
                             check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
        r = json.loads(out)
        print(f"{r['case']:<12} {'x'.join(map(str, r['size_xyz'])):<16} {r['load_and_plan_s']:>11} "
              f"{r['render_s_per_follow_up']:>12} {r['render_cpu_s_per_follow_up']:>12} {r['render_and_write_s_per_follow_up']:>12} {r['peak_rss_mb']:>12.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
