"""End-to-end runs of the workflow on a tiny synthetic cohort (2 patients x 3 sessions from the real CT).

One local run is shared by the tests of this module; the kill-and-resume and SLURM runs must give
byte-identical masks and tables.
"""

import importlib.util
import json
import os
import signal
import subprocess
import time

import pandas as pd
import pytest
import yaml

from tests.report_browser import CHROMIUM, SKIP_REASON, inspect
from tests.workflow.conftest import REPO, SNAKEMAKE, result_digests, run_snakemake, write_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("local")
    config = write_config(folder)
    result = run_snakemake(["--profile", "profiles/default", "--cores", "2", "--configfile", str(config)])
    assert result.returncode == 0, result.stdout[-6000:]
    return folder, config


def test_outputs_of_the_whole_dag(local_run):
    folder, _ = local_run
    results = folder / "results"
    assert (results / "report.html").stat().st_size > 10_000
    run = json.loads((results / "run.json").read_text())
    assert run["failed_patients"] == [] and run["config_sha256"]
    for patient in ("P001", "P002"):
        for session in ("01", "02", "03"):
            assert (results / "patients" / f"sub-{patient}" / f"ses-{session}" / "lesions.nii.gz").exists()
            assert (results / "patients" / f"sub-{patient}" / f"ses-{session}" / "tracking.parquet").exists()
        assert (results / "patients" / f"sub-{patient}" / "ses-02" / "to_previous.tfm").exists()
    lesions = pd.read_parquet(results / "cohort" / "lesions")
    assert set(lesions.patient) == {"P001", "P002"}
    import duckdb

    count = duckdb.sql(f"select count(*) from read_parquet('{results}/cohort/lesions/**/*.parquet', hive_partitioning=true)").fetchall()[0][0]
    assert count == len(lesions)
    # every rule logged and was timed
    for rule in ("ingest", "segment_baseline", "register_pair", "track_followup", "measure_lesions", "aggregate", "report"):
        assert any((results / "logs" / rule).iterdir()), rule
        assert any((results / "benchmarks" / rule).iterdir()), rule


@pytest.mark.skipif(CHROMIUM is None, reason=SKIP_REASON)
def test_the_runs_report_in_chromium(local_run, tmp_path):
    """The report the workflow wrote, opened at its first patient: every section laid out, the
    patients labelled on the waterfall and swimmer plot, the plots and that patient's thumbnails
    (from the run's scans and label maps) decoded and visible."""
    folder, _ = local_run
    seen = inspect(folder / "results" / "report.html", tmp_path, fragment="patient-P001")
    assert seen["errors"] == 0 and all(seen["sections"].values()), seen["sections"]
    assert sorted(name for name, _, visible in seen["swimmer"] if visible) == ["P001", "P002"]
    assert {name for name, _, visible in seen["waterfall"] if visible} <= {"P001", "P002"} and seen["waterfall"]
    assert seen["plots"] == seen["plots_drawn"] >= 3
    assert seen["open"] == "patient-P001" and seen["thumbnails"] >= 3 and seen["thumbnails_drawn"] == seen["thumbnails"]


def test_tracking_against_ground_truth(local_run):
    folder, _ = local_run
    evaluation = pd.read_parquet(folder / "results" / "cohort" / "evaluation")
    evaluation["session_index"] = evaluation["session_index"].astype(int)  # a hive partition key
    baseline_ids = evaluation[evaluation.session_index == 0].groupby("patient")["gt_lesion_id"].apply(set)
    tracked = evaluation[
        (evaluation.session_index > 0)
        & evaluation.gt_lesion_id.notna()
        & evaluation.apply(lambda r: r.gt_lesion_id in baseline_ids.get(r.patient, set()), axis=1)
    ]
    assert len(tracked) > 0
    # lesions marked at baseline and present at follow-up are found, with their ID, near their true centre
    cpm25 = (tracked.centre_distance_mm <= 25).mean()
    assert cpm25 >= 0.95, tracked.to_string()
    metrics = pd.read_parquet(folder / "results" / "cohort" / "session_metrics")
    assert set(metrics.session_index.astype(int)) == {0, 1, 2}


def test_rerun_does_nothing(local_run):
    _, config = local_run
    result = run_snakemake(["--profile", "profiles/default", "--cores", "2", "--configfile", str(config)])
    assert result.returncode == 0, result.stdout[-4000:]
    assert "Nothing to be done" in result.stdout


def _jobs_to_run(result: subprocess.CompletedProcess) -> set[str]:
    """Rule names of a dry run's "Job stats" table (``rule  count`` rows up to ``total``)."""
    lines = result.stdout.splitlines()
    if "Job stats:" not in lines:
        return set()
    rules = set()
    for line in lines[lines.index("Job stats:") + 3 :]:  # after the header and its rule
        name, _, count = line.partition(" ")
        if name == "total" or not count.strip().isdigit():
            break
        rules.add(name)
    return rules


def test_a_recist_threshold_reruns_only_the_aggregation(local_run, tmp_path):
    _, config = local_run
    changed = yaml.safe_load(config.read_text())
    changed["metrics"] = {"pd_pct": 25.0, "min_measurable_mm": 12.0}
    path = tmp_path / "changed.yaml"
    path.write_text(yaml.safe_dump(changed))
    result = run_snakemake(["-n", "--profile", "profiles/default", "--cores", "2", "--configfile", str(path)])
    assert result.returncode == 0, result.stdout[-4000:]
    assert _jobs_to_run(result) == {"aggregate_cohort", "report_cohort", "all"}, result.stdout[-4000:]


def test_kill_mid_run_and_resume_gives_identical_outputs(local_run, tmp_path):
    reference, _ = local_run
    config = write_config(tmp_path)
    args = [SNAKEMAKE, "--profile", "profiles/default", "--cores", "2", "--configfile", str(config)]
    process = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 600
    # kill while tracking runs: after the registration of the first follow-up has finished
    while time.time() < deadline and not list((tmp_path / "results" / "shards" / "register").glob("*.json")):
        time.sleep(0.5)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not (tmp_path / "results" / "report.html").exists(), "the run finished before it could be killed"
    # no partial file survives under a final name: every write goes through a temporary file
    leftovers = [p for p in (tmp_path / "results").rglob(".*.part*")]
    # the killed run left Snakemake's lock behind (README, Troubleshooting): unlock, then rerun
    unlock = run_snakemake(["--unlock", "--configfile", str(config)])
    assert unlock.returncode == 0, unlock.stdout[-2000:]
    result = run_snakemake(["--profile", "profiles/default", "--cores", "2", "--configfile", str(config)])
    assert result.returncode == 0, result.stdout[-4000:]
    assert result_digests(tmp_path / "results") == result_digests(reference / "results")
    assert not [p for p in leftovers if p.exists()]


@pytest.mark.skipif(os.geteuid() != 0, reason="the local SLURM cluster needs root (apt-get, munged)")
@pytest.mark.skipif(importlib.util.find_spec("snakemake_executor_plugin_slurm") is None, reason="the SLURM profile needs lesionlocator[slurm]")
def test_slurm_run_equals_local_run(local_run, tmp_path):
    reference, _ = local_run
    cluster = REPO / "tests" / "workflow" / "local_slurm.sh"
    started = subprocess.run(["bash", str(cluster), "start"], capture_output=True, text=True, timeout=300)
    assert started.returncode == 0, started.stdout + started.stderr
    try:
        config = write_config(tmp_path)
        result = run_snakemake(
            ["--profile", "profiles/slurm", "--configfile", str(config), *SLURM_TEST_OVERRIDES], timeout=1500
        )
        assert result.returncode == 0, result.stdout[-6000:]
        assert result_digests(tmp_path / "results") == result_digests(reference / "results")
    finally:
        subprocess.run(["bash", str(cluster), "stop"], capture_output=True, timeout=120)


# The documented override that runs the SLURM profile on a test cluster without GPU, accounting or
# the user's partitions (README, "Running on SLURM"): nothing in profiles/slurm is edited.
SLURM_TEST_OVERRIDES = [
    "--slurm-no-account",
    "--default-resources", "slurm_partition=debug", "mem_mb=2000", "runtime=30",
    "--set-resources", "segment_baseline:slurm_partition=debug", "track_followup:slurm_partition=debug",
    "segment_baseline:gpu_model=", "track_followup:gpu_model=",
    "--jobs", "2", "--latency-wait", "5",
]
