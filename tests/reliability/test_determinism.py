"""Determinism and crash safety of the whole pipeline on a tiny synthetic cohort (1 MR patient x 3 sessions).

* The same inputs give byte-identical masks, transforms and Parquet tables with 1 thread and with
  2 threads everywhere (OMP_NUM_THREADS, torch, SimpleITK's global default, segment.cpu_threads),
  with ``register.threads: 1`` — the only registration setting that is reproducible (ITK's mutual
  information metric sums per-thread partial histograms in a varying order: with 2 registration
  threads even two reruns on the same machine differ, and the masks with them).
* A run SIGKILLed at the worst moment of a write (the temporary file complete, not yet renamed)
  leaves no file under a final name that a later step could trust, and its rerun gives exactly the
  uninterrupted run's bytes, with no temporary file left.

Every run is a fresh process (tests/reliability/run_cohort.py), so thread settings take effect.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.reliability.builders import partial_files

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
RUNNER = Path(__file__).with_name("run_cohort.py")


def run_cohort(cohort: Path, results: Path, threads: int, kill_at: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "OPENBLAS_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    env.pop("LESIONLOCATOR_TEST_KILL_AT", None)
    if kill_at:
        env["LESIONLOCATOR_TEST_KILL_AT"] = kill_at
    return subprocess.run(
        [sys.executable, str(RUNNER), str(cohort), str(results), str(threads)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )


def digests(results: Path) -> dict[str, str]:
    """SHA-256 of every output file: masks, transforms, tables, manifest, shard reports (not .done,
    whose fingerprints include the config and so the thread counts)."""
    return {
        str(p.relative_to(results)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(results.rglob("*"))
        if p.is_file() and ".done" not in p.parts
    }


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    from lesionlocator.core.config import validate_config
    from synthetic import generate_cohort

    folder = tmp_path_factory.mktemp("cohort") / "cohort"
    config = validate_config({"synthetic": {"n_patients": 1, "n_sessions": 3, "seed": 3, "sources": ["mr:data/real/example_mr_sm.nii.gz"]}})
    generate_cohort(config.synthetic, folder)
    return folder


@pytest.fixture(scope="module")
def reference(cohort, tmp_path_factory) -> dict[str, str]:
    results = tmp_path_factory.mktemp("one_thread") / "results"
    done = run_cohort(cohort, results, threads=1)
    assert done.returncode == 0, done.stderr[-4000:]
    found = digests(results)
    for report in (results / "shards" / "P001").glob("*.json"):
        assert '"failed"' not in report.read_text(), report.read_text()
    # every stage wrote its outputs: 3 label maps, 2 transforms, tables
    assert sum(name.endswith("lesions.nii.gz") for name in found) == 3
    assert sum(name.endswith("to_previous.tfm") for name in found) == 2
    assert {"patients/sub-P001/measurements.parquet", "patients/sub-P001/measurements.arrow", "patients/sub-P001/evaluation.arrow"} <= set(found)
    return found


def test_one_and_two_threads_give_byte_identical_outputs(cohort, reference, tmp_path):
    results = tmp_path / "results"
    done = run_cohort(cohort, results, threads=2)
    assert done.returncode == 0, done.stderr[-4000:]
    two = digests(results)
    assert sorted(two) == sorted(reference)
    different = [name for name in reference if two[name] != reference[name]]
    assert different == [], f"outputs differ between 1 and 2 threads: {different}"


def test_sigkill_mid_write_then_rerun_equals_the_uninterrupted_run(cohort, reference, tmp_path):
    results = tmp_path / "results"
    follow_up = results / "patients" / "sub-P001" / "ses-02"
    # 1. killed while writing the first follow-up's label map
    killed = run_cohort(cohort, results, threads=1, kill_at="ses-02/lesions.nii.gz")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert not (follow_up / "lesions.nii.gz").exists(), "a file under its final name was left half-written"
    assert [Path(p).name.startswith(".lesions.nii.gz.") for p in partial_files(follow_up)] == [True]
    assert not (results / "patients" / "sub-P001" / ".done" / "track_t1.json").exists()
    # 2. the rerun is killed again between the last follow-up's label map and its tracking table
    killed = run_cohort(cohort, results, threads=1, kill_at="ses-03/tracking.parquet")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert (results / "patients" / "sub-P001" / "ses-03" / "lesions.nii.gz").exists()
    assert not (results / "patients" / "sub-P001" / ".done" / "track_t2.json").exists()
    assert partial_files(follow_up) == [], "the rerun removes what the killed writer left"
    # 3. the final rerun finishes the work and equals the uninterrupted run byte for byte
    done = run_cohort(cohort, results, threads=1)
    assert done.returncode == 0, done.stderr[-4000:]
    assert partial_files(results) == []
    assert digests(results) == reference
    assert "up to date" in done.stderr  # finished patients' stages were not recomputed
