"""Splits and merges end to end (issue 24, item 3): on a generated cohort where every baseline lesion may
split and a pair grows into contact, the tracker keeps finding them (never vanished or lost) and says
split / merged where the ground truth does."""

from __future__ import annotations

import pytest

from lesionlocator.core.config import SyntheticConfig
from synthetic.cohort import generate_cohort
from tests.track.conftest import track_cohort
from tests.track.helpers import matched

pytestmark = pytest.mark.slow

FOUND = ("present", "merged", "split")
COHORT = dict(n_patients=1, n_sessions=3, sources=["ct:data/real/example_ct.nii.gz"], lesions_per_patient=(2, 2),
              diameter_mm=(20.0, 30.0), p_split=1.0, p_merge=1.0, p_vanish=0.0, p_new=0.0, growth_sd=0.1)


@pytest.fixture(scope="module")
def tracked(tmp_path_factory, fast_config):
    base = tmp_path_factory.mktemp("split_merge")
    truth = generate_cohort(SyntheticConfig(seed=2, **COHORT), base / "cohort")
    track_cohort(base / "cohort", base / "results", fast_config)
    return matched(base / "results", truth)


def test_split_lesions_are_reported_split(tracked):
    split = tracked[tracked.status_gt == "split"]
    assert len(split) >= 1, "the seed no longer gives a split"
    shown = split[["session", "lesion_id", "status", "volume_ml", "distance_mm"]]
    assert (split.status == "split").any(), shown
    assert (split[split.status.isin(FOUND)].distance_mm <= 25.0).all(), shown


def test_split_lesions_are_never_reported_vanished(tracked):
    split = tracked[tracked.status_gt == "split"]
    assert split.status.isin(FOUND + ("uncertain",)).all(), split[["session", "lesion_id", "status", "volume_ml"]]


def test_merging_lesions_are_followed_and_reported_merged(tracked):
    merged = tracked[tracked.status_gt == "merged"]
    assert len(merged) >= 2, "the seed no longer gives a merge"
    shown = merged[["session", "lesion_id", "status", "volume_ml", "distance_mm"]]
    assert merged.status.isin(FOUND).all(), shown
    assert (merged.status == "merged").any(), shown
    assert (merged.distance_mm <= 25.0).all(), shown
