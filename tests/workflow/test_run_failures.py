"""Short Snakemake runs that stop before any real work: a cohort that ingest refuses (its log says
why), and a results folder locked by another run (refused, and a dry run is unaffected)."""

from __future__ import annotations

import json
import logging
import os
import socket

import pytest

from lesionlocator.core.lock import LOCK_NAME, _start_time, read_lock
from lesionlocator.core.logs import log_to_file
from lesionlocator.ingest.cohort import CohortError
from lesionlocator.pipeline import ingest_manifest
from tests.helpers import make_image, write_session
from tests.workflow.conftest import run_snakemake, write_config


def _bad_cohort(root):
    """A1: a truncated NIfTI; B2: a session folder with no image. Two problems, one per patient."""
    path = write_session(root, "A1", "1", make_image())
    path.write_bytes(path.read_bytes()[:200])
    write_session(root, "B2", "1", make_image(seed=1))
    (root / "sub-B2" / "ses-2").mkdir()
    return path


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    for handler in root.handlers:
        handler.close()
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.captureWarnings(False)


def test_the_ingest_job_logs_why_before_it_fails(tmp_path, restore_logging):
    """What the ingest script does, without Snakemake: its log file lists every file with its problem."""
    truncated = _bad_cohort(tmp_path / "cohort")
    log_file = tmp_path / "logs" / "ingest_cohort.log"
    log_to_file(log_file)
    with pytest.raises(CohortError) as err:
        ingest_manifest(tmp_path / "results" / "manifest.parquet", root=tmp_path / "cohort")
    text = log_file.read_text()
    assert "ERROR lesionlocator.pipeline: the cohort cannot be ingested" in text
    assert str(err.value) in text and f"{truncated}: " in text
    assert not (tmp_path / "results" / "manifest.parquet").exists()


def test_a_cohort_that_ingest_refuses_is_explained_in_the_ingest_log(tmp_path):
    truncated = _bad_cohort(tmp_path / "cohort")
    config = write_config(tmp_path, {"cohort": {"root": str(tmp_path / "cohort")}})
    result = run_snakemake(["--cores", "1", "--configfile", str(config)], timeout=300)
    assert result.returncode != 0, result.stdout[-4000:]
    log_file = tmp_path / "results" / "logs" / "ingest" / "ingest_cohort.log"
    assert f"log: {log_file} (check log file(s)" in result.stdout  # where Snakemake points
    text = log_file.read_text()
    assert "2 problem(s) in the cohort" in text, text
    assert f"{truncated}: " in text
    assert str(tmp_path / "cohort" / "sub-B2" / "ses-2") in text
    assert not (tmp_path / "results" / "ingest" / "manifest.parquet").exists()
    assert not (tmp_path / "results" / LOCK_NAME).exists(), "onerror releases the results lock"


def _lock_held_by(results, pid: int, host: str | None = None) -> dict:
    holder = {
        "host": host or socket.gethostname(), "pid": pid, "started": _start_time(pid),
        "command": "snakemake --cores 2", "cwd": "/elsewhere/clone", "since": "2024-01-01 10:00:00 +0000",
    }
    results.mkdir(parents=True)
    (results / LOCK_NAME).write_text(json.dumps(holder))
    return holder


def test_a_results_folder_held_by_a_live_run_is_refused_and_a_dry_run_is_not(tmp_path):
    results = tmp_path / "results"
    holder = _lock_held_by(results, os.getpid())  # this test process: alive, on this host
    config = write_config(tmp_path)
    result = run_snakemake(["--cores", "1", "--configfile", str(config)], timeout=300)
    assert result.returncode != 0
    assert f"{results / LOCK_NAME}: the results folder is in use by another run" in result.stdout, result.stdout[-3000:]
    assert f"pid {os.getpid()} on host {socket.gethostname()}" in result.stdout and "/elsewhere/clone" in result.stdout
    assert sorted(p.name for p in results.iterdir()) == [LOCK_NAME], "nothing ran"
    assert read_lock(results) == holder, "the refused run leaves the holder's lock alone"

    dry = run_snakemake(["-n", "--cores", "1", "--configfile", str(config)], timeout=300)
    assert dry.returncode == 0, dry.stdout[-3000:]
    assert read_lock(results) == holder


def test_a_lock_from_another_host_is_refused_with_how_to_remove_it(tmp_path):
    results = tmp_path / "results"
    _lock_held_by(results, 12345, host="another-node")
    result = run_snakemake(["--cores", "1", "--configfile", str(write_config(tmp_path))], timeout=300)
    assert result.returncode != 0
    assert "check on another-node" in result.stdout and f"delete {results / LOCK_NAME}" in result.stdout, result.stdout[-3000:]

