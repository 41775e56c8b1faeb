"""profiles/default is Snakemake's workflow profile: applied to every run, over profiles/slurm."""

from __future__ import annotations

import yaml

from tests.workflow.conftest import REPO


def test_the_default_profile_overrides_nothing_that_slurm_sets():
    default = yaml.safe_load((REPO / "profiles" / "default" / "config.yaml").read_text())
    slurm = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
    # a local-only limit here would cap every SLURM job (cores caps a job's threads)
    assert not {"cores", "jobs", "latency-wait", "executor", "default-resources", "set-resources"} & set(default)
    assert {key: value for key, value in default.items() if key in slurm and slurm[key] != value} == {}
