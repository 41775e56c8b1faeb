"""Small synthetic cohorts tracked once per test session (phantom source, fast registration)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from lesionlocator.cli import main as cli_main
from lesionlocator.core.config import SyntheticConfig
from synthetic.cohort import generate_cohort

# A 96x80x64 phantom at ~4.5 mm: 3 sessions in a few seconds. Seed 1: a new lesion at ses-02 and a
# complete response at ses-03; seed 0: a baseline lesion leaves the field of view at ses-03.
COHORT = dict(
    n_patients=1, n_sessions=3, sources=["phantom:96x80x64"], lesions_per_patient=(3, 4), p_vanish=0.25,
    p_new=1.0, fov_z_crop=0.2, diameter_mm=(16.0, 30.0), new_lesion_diameter_mm=(12.0, 18.0),
)
FAST_REGISTER = dict(deformable=False, iterations=30, shrink_factors=[2, 1], smoothing_sigmas=[1.0, 0.0], z_search_mm=60.0)


def track_cohort(cohort: Path, results: Path, config_path: Path) -> None:
    """``lesionlocator track`` on the cohort's only patient, as a user would run it."""
    assert cli_main(["track", "--root", str(cohort), "--patient", "P001", "--config", str(config_path), "-o", str(results)]) == 0


@pytest.fixture(scope="session")
def fast_config(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("config") / "study.yaml"
    path.write_text(yaml.safe_dump({"register": FAST_REGISTER}))
    return path


def _tracked(tmp_path_factory, fast_config: Path, seed: int) -> tuple[Path, Path, pd.DataFrame]:
    base = tmp_path_factory.mktemp(f"seed{seed}")
    truth = generate_cohort(SyntheticConfig(seed=seed, **COHORT), base / "cohort")
    track_cohort(base / "cohort", base / "results", fast_config)
    return base / "cohort", base / "results", truth


@pytest.fixture(scope="session")
def tracked_new_vanished(tmp_path_factory, fast_config):
    """(cohort, results, ground truth) of seed 1."""
    return _tracked(tmp_path_factory, fast_config, 1)


@pytest.fixture(scope="session")
def tracked_out_of_fov(tmp_path_factory, fast_config):
    """(cohort, results, ground truth) of seed 0."""
    return _tracked(tmp_path_factory, fast_config, 0)
