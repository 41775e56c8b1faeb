"""Helpers to run the Snakemake workflow on tiny synthetic cohorts in a temporary results folder."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")

TINY = {
    "synthetic": {
        "n_patients": 2,
        "n_sessions": 3,
        "seed": 0,
        "sources": ["ct:data/real/example_ct.nii.gz"],
    },
    "workflow": {"shard_size": 1},
}


def write_config(folder: Path, overrides: dict | None = None) -> Path:
    data = {**TINY, "results_dir": str(folder / "results"), **(overrides or {})}
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def run_snakemake(args: list[str], timeout: float = 900, **kwargs) -> subprocess.CompletedProcess:
    """Run snakemake in the repository; a hung run is killed with its whole process group."""
    process = subprocess.Popen(
        [SNAKEMAKE, *args], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True, **kwargs,
    )
    try:
        out, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, _ = process.communicate()
        pytest.fail(f"snakemake {' '.join(args)} did not finish in {timeout} s:\n{out[-4000:]}")
    return subprocess.CompletedProcess(process.args, process.returncode, out, "")


def result_digests(results: Path) -> dict[str, str]:
    """SHA-256 of every mask and table the run produced (logs, timings and provenance excluded)."""
    digests = {}
    for path in sorted(results.rglob("*")):
        relative = path.relative_to(results)
        if not path.is_file() or relative.parts[0] in ("logs", "benchmarks") or path.name in ("run.json", "report.html"):
            continue
        if ".done" in relative.parts or path.name == ".snakemake_timestamp":
            continue
        if path.name == "manifest.parquet":
            # the manifest names the input files, which lie under this run's own results folder
            import pyarrow.parquet as pq

            text = str(pq.read_table(path).to_pylist()).replace(str(results), "<results>")
            digests[str(relative)] = hashlib.sha256(text.encode()).hexdigest()
            continue
        digests[str(relative)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digests
