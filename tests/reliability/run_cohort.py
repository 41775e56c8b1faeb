"""Run every stage of the pipeline on a cohort in this process, with a given number of threads.

    python tests/reliability/run_cohort.py COHORT RESULTS THREADS [REGISTER_THREADS]

Used by the determinism and kill tests: each run is a fresh process so that OMP_NUM_THREADS (set by
the caller) takes effect. With ``LESIONLOCATOR_TEST_KILL_AT=<path suffix>`` the process SIGKILLs
itself at the moment an atomic write would rename its finished temporary file onto that path: the
worst moment for a crash (the bytes are on disk, the final name is not).
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path


def _kill_before_rename(suffix: str) -> None:
    real_replace = os.replace

    def replace(src, dst, *args, **kwargs):
        if str(dst).endswith(suffix):
            os.kill(os.getpid(), signal.SIGKILL)
        return real_replace(src, dst, *args, **kwargs)

    os.replace = replace


def main(cohort: str, results: str, threads: int, register_threads: int) -> None:
    import logging

    import SimpleITK as sitk
    import torch

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(threads)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
    if os.environ.get("LESIONLOCATOR_TEST_KILL_AT"):
        _kill_before_rename(os.environ["LESIONLOCATOR_TEST_KILL_AT"])

    from lesionlocator.core.config import validate_config
    from lesionlocator.core.layout import ResultsLayout
    from lesionlocator.ingest.cohort import ingest_cohort
    from lesionlocator.pipeline import evaluate_shard, measure_shard, track_patient

    config = validate_config(
        {"results_dir": results, "segment": {"cpu_threads": threads}, "register": {"threads": register_threads}}
    )
    layout = ResultsLayout(Path(results))
    manifest = ingest_cohort(layout.manifest, root=cohort)
    shards = layout.root / "shards"
    for patient in sorted(manifest.patient.unique()):
        reports = track_patient(layout.manifest, patient, config, shards / patient)
        last = shards / patient / f"{reports[-1]['stage']}.json"
        measure_shard(layout.manifest, [patient], config, shards / patient / "measure.json", [last])
        evaluate_shard(layout.manifest, [patient], config, shards / patient / "evaluate.json", [last])


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]) if len(sys.argv) > 4 else 1)
