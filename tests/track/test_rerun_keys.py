"""Reruns follow the rerun keys: new weights recompute segmentation and tracking, not registration; a
reader's follow-up prompts recompute tracking from that session on."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
import yaml

from lesionlocator.core.config import BUNDLED_MODEL, SyntheticConfig
from synthetic.cohort import generate_cohort
from tests.track.conftest import COHORT, FAST_REGISTER, track_cohort


def _done_times(results) -> dict[str, int]:
    folder = results / "patients" / "sub-P001" / ".done"
    return {p.stem: p.stat().st_mtime_ns for p in sorted(folder.glob("*.json"))}


@pytest.mark.slow
def test_new_weights_rerun_segmentation_and_tracking_only(tmp_path):
    import torch

    model = tmp_path / "model"
    shutil.copytree(BUNDLED_MODEL, model)
    config = tmp_path / "study.yaml"
    config.write_text(yaml.safe_dump({"register": FAST_REGISTER, "segment": {"checkpoint": str(model)}}))
    generate_cohort(SyntheticConfig(seed=3, **{**COHORT, "n_sessions": 2}), tmp_path / "cohort")
    results = tmp_path / "results"

    track_cohort(tmp_path / "cohort", results, config)
    first = _done_times(results)
    assert set(first) == {"segment_baseline", "register_t1", "track_t1", "measure"}
    track_cohort(tmp_path / "cohort", results, config)
    assert _done_times(results) == first  # nothing changed: nothing recomputed

    # other weights in the same folder (a model retrained in place)
    checkpoint = next(model.rglob("checkpoint_final.pth"))
    saved = torch.load(checkpoint, map_location="cpu", weights_only=False)
    name = next(k for k, v in saved["network_weights"].items() if v.dtype.is_floating_point and v.ndim > 1)
    saved["network_weights"][name] = saved["network_weights"][name] * 1.01
    torch.save(saved, checkpoint)
    track_cohort(tmp_path / "cohort", results, config)
    second = _done_times(results)
    assert second["register_t1"] == first["register_t1"]
    assert second["segment_baseline"] != first["segment_baseline"]
    assert second["track_t1"] != first["track_t1"]


@pytest.mark.slow
def test_a_readers_follow_up_prompts_rerun_tracking_from_that_session_only(tmp_path, fast_config):
    """A reader's prompts.json added at the second follow-up reruns tracking there (and measurement), not
    the baseline's segmentation, not any registration, not the first follow-up's tracking."""
    generate_cohort(SyntheticConfig(seed=3, **{**COHORT, "n_sessions": 3}), tmp_path / "cohort")
    results = tmp_path / "results"
    track_cohort(tmp_path / "cohort", results, fast_config)
    first = _done_times(results)
    assert set(first) == {"segment_baseline", "register_t1", "register_t2", "track_t1", "track_t2", "measure"}

    session = sorted((tmp_path / "cohort" / "sub-P001").glob("ses-*"))[2]
    (session / "prompts.json").write_text(json.dumps({"frame": "voxel", "lesions": [{"id": 1, "point": [10, 30, 40]}]}))
    track_cohort(tmp_path / "cohort", results, fast_config)
    second = _done_times(results)
    unchanged = {"segment_baseline", "register_t1", "register_t2", "track_t1"}
    assert {k: second[k] for k in unchanged} == {k: first[k] for k in unchanged}
    assert second["track_t2"] != first["track_t2"] and second["measure"] != first["measure"]
    rows = pd.read_parquet(results / "patients" / "sub-P001" / f"{session.name}" / "tracking.parquet")
    assert rows.set_index("lesion_id").loc[1, "reader"] == "corrected"
