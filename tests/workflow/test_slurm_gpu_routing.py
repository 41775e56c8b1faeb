"""SLURM profile: every job that requests a GPU is submitted to a GPU partition, every other job to a
CPU partition, for each registration backend and with the networks on GPU or on CPU.

A dry run with `--profile profiles/slurm` builds the DAG as a user's run would (profile, workflow
profile, config); for each job, the slurm executor plugin's own submission code turns the job's
resources into its sbatch line (partition, `--gpus`). No SLURM controller is contacted: the dry run
submits nothing, and the plugin's fallback to the cluster's default partition (sinfo) is disabled, so
a job that no partition fits shows as a job without partition.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import typing

import pytest
import yaml

from lesionlocator.core.config import RegisterConfig
from tests.workflow.conftest import REPO, write_config

pytest.importorskip("snakemake_executor_plugin_slurm", reason="the SLURM profile needs lesionlocator[slurm]")
PROFILE = REPO / "profiles" / "slurm"
BACKENDS = typing.get_args(RegisterConfig.model_fields["backend"].annotation)
NETWORKS = {
    "networks_on_gpu": {"segment": {"device": "cuda"}, "train": {"device": "cuda"}},
    "networks_on_cpu": {"train": {"device": "cpu"}},  # the bundled segment model runs on CPU
}
# Runs in a child process: snakemake's dry run, with the dry-run executor's run_job wrapped to build
# the sbatch line the slurm executor would build for the same job; prints the jobs as JSON.
RECORD_SBATCH = """
import json, logging, sys
from types import SimpleNamespace
from snakemake.api import DAGApi
from snakemake.cli import main
from snakemake.executors import dryrun
from snakemake_executor_plugin_slurm import Executor as SlurmExecutor
from snakemake_executor_plugin_slurm.partitions import read_partition_file
from snakemake_executor_plugin_slurm.submit_string import get_submit_command
from snakemake_executor_plugin_slurm.utils import set_gres_string

jobs, slurm_settings = [], []
execute_workflow, dry_run_job = DAGApi.execute_workflow, dryrun.Executor.run_job

def execute(self, executor, *args, **kwargs):  # the dry run keeps the slurm settings for validation only
    assert executor == "slurm", executor
    slurm_settings.append(kwargs["executor_settings"])
    return execute_workflow(self, executor, *args, **kwargs)

def run_job(self, job):
    settings = slurm_settings[0]
    slurm = SimpleNamespace(  # the state SlurmExecutor.get_partition_arg reads
        _partitions=read_partition_file(settings.partition_config) if settings.partition_config else None,
        _fallback_partition="",  # no sinfo: a job no partition fits gets no -p
        logger=logging.getLogger("slurm"),
    )
    params = {"run_uuid": "dry-run", "slurm_logfile": "slurm.log", "comment_str": job.name, "account": "",
              "partition": SlurmExecutor.get_partition_arg(slurm, job), "workdir": self.workflow.workdir_init}
    sbatch = get_submit_command(job, params, settings=settings) + set_gres_string(job)
    jobs.append({"rule": job.name, "gpu": job.resources.get("gpu", 0), "sbatch": sbatch})
    dry_run_job(self, job)

DAGApi.execute_workflow, dryrun.Executor.run_job = execute, run_job
try:
    main(sys.argv[1:])
finally:
    print("JOBS " + json.dumps(jobs))
"""


def slurm_jobs(config) -> list[dict]:
    """The jobs of `all` and `train` with their gpu resource and sbatch line under the SLURM profile."""
    env = {k: v for k, v in os.environ.items() if k != "SNAKEMAKE_SLURM_PARTITIONS"}
    args = ["-n", "--profile", str(PROFILE), "--configfile", str(config), "--", "all", "train"]
    result = subprocess.run(
        [sys.executable, "-c", RECORD_SBATCH, *args],
        check=False, cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    line = next(line for line in result.stdout.splitlines() if line.startswith("JOBS "))
    return json.loads(line.removeprefix("JOBS "))


def gpu_partitions() -> set[str]:
    """Partitions the profile's partition file gives GPUs (max_gpu >= 1)."""
    partitions = yaml.safe_load((PROFILE / "partitions.yaml").read_text())["partitions"]
    return {name for name, limits in partitions.items() if (limits or {}).get("max_gpu", 0) >= 1}


def study(tmp_path, backend: str, networks: dict):
    register = {"backend": backend}
    if backend == "unigradicon":
        register["unigradicon_weights"] = str(tmp_path / "unigradicon.pth")
        (tmp_path / "unigradicon.pth").write_bytes(b"")
    if backend == "lesionlocator_track":
        register["track_checkpoint"] = str(tmp_path / "LesionLocatorTrack")
        (tmp_path / "LesionLocatorTrack").mkdir()
    train = {**networks.get("train", {}), "output_dir": str(tmp_path / "train")}
    return write_config(tmp_path, {"register": register, "segment": networks.get("segment", {}), "train": train})


@pytest.mark.parametrize("networks", NETWORKS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_gpu_jobs_go_to_a_gpu_partition_and_cpu_jobs_to_a_cpu_partition(tmp_path, backend, networks):
    jobs = slurm_jobs(study(tmp_path, backend, NETWORKS[networks]))
    gpu = {job["rule"]: job["gpu"] for job in jobs}
    # the cases cover both sides: the GPU-capable rules request a GPU here exactly when expected
    on_gpu = networks == "networks_on_gpu"
    assert {rule: gpu[rule] >= 1 for rule in ("segment_baseline", "track_followup", "train_model", "register_pair")} == {
        "segment_baseline": on_gpu, "track_followup": on_gpu, "train_model": on_gpu,
        "register_pair": backend != "simpleitk",
    }
    wrong = []
    for job in jobs:
        partition = re.search(r" -p (\S+)", job["sbatch"])
        gpus = re.search(r"--gpus=(\S+)", job["sbatch"])
        if partition is None:
            wrong.append(f"{job['rule']} (gpu={job['gpu']}): no partition")
        elif (partition[1].strip("'") in gpu_partitions()) != (job["gpu"] >= 1):
            wrong.append(f"{job['rule']} (gpu={job['gpu']}): partition {partition[1]}")
        if (gpus is not None) != (job["gpu"] >= 1):
            wrong.append(f"{job['rule']} (gpu={job['gpu']}): {gpus[0] if gpus else 'no --gpus'}")
        if "--gres" in job["sbatch"]:
            wrong.append(f"{job['rule']}: both gres and gpu")
    assert not wrong, "\n".join(wrong)
