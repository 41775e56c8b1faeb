"""Fixtures of the synthetic generator tests: small phantom cohorts and the real-scan demo cohort."""

from __future__ import annotations

from pathlib import Path

import pytest

from lesionlocator.core.config import SyntheticConfig
from synthetic import generate_cohort
from tests.helpers import EMBEDDED_REAL

PHANTOM = "phantom:88x72x48"


def phantom_config(**overrides) -> SyntheticConfig:
    """A fast config on a small phantom; every follow-up gets a new lesion, half the lesions vanish."""
    values = dict(
        seed=7, n_patients=2, n_sessions=3, sources=[PHANTOM], organ_labels={}, lesions_per_patient=(2, 3),
        diameter_mm=(16.0, 30.0), new_lesion_diameter_mm=(12.0, 18.0), p_new=1.0, p_vanish=0.5,
    )
    values.update(overrides)
    return SyntheticConfig(**values)


@pytest.fixture(scope="session")
def phantom_cohort(tmp_path_factory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("synthetic") / "phantom"
    return out, generate_cohort(phantom_config(), out)


@pytest.fixture(scope="session")
def demo_cohort(tmp_path_factory) -> tuple[Path, object]:
    """The default demo cohort (embedded real CT and MR) with absolute source paths."""
    config = SyntheticConfig(
        sources=[f"ct:{EMBEDDED_REAL / 'example_ct.nii.gz'}", f"mr:{EMBEDDED_REAL / 'example_mr_sm.nii.gz'}"],
        organ_labels={str(EMBEDDED_REAL / "example_ct.nii.gz"): str(EMBEDDED_REAL / "example_seg.nii.gz")},
    )
    out = tmp_path_factory.mktemp("synthetic") / "demo"
    return out, generate_cohort(config, out)
