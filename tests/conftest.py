"""Shared fixtures (helpers live in tests/helpers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import SimpleITK as sitk

from tests.helpers import make_image, write_prompts_json, write_session


@pytest.fixture
def small_image() -> sitk.Image:
    return make_image()


@pytest.fixture
def tiny_cohort(tmp_path) -> Path:
    """Two patients, three sessions each (labels chosen so natural order matters), prompts at baseline."""
    root = tmp_path / "cohort"
    for p, patient in enumerate(["A1", "B2"]):
        for s, session in enumerate(["2", "10", "1"]):
            write_session(root, patient, session, make_image(seed=10 * p + s))
        centre = make_image().TransformContinuousIndexToPhysicalPoint((10.0, 8.0, 6.0))
        write_prompts_json(
            root / f"sub-{patient}" / "ses-1" / "prompts.json",
            {"frame": "world", "lesions": [{"id": 3, "point": list(centre)}]},
        )
    return root
